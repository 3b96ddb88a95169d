"""State buffers for batches of sequences: where they come from, and gathering rows into them.

    pool = StatePool(session)
    states, token = pool.pair(n)       # two buffers [L, n, H, N] float32, contents undefined
    gather_rows(session, sources, states[0])   # row i <- sources[i] = (buf, row); None: zeros
    pool.give_back(token)              # the memory of a pair no longer used, for later pairs
                                       # (at most keep_rows sequences' worth is kept free)

`session` is an hla-deploy runtime session (hla_deploy.runtime.session_base). The state is
[L, B, H, N]: a sequence is a row of dim 1, so a batch of distinct sequences cannot be a view of
their buffers and is copied together, once, when the set of sequences batched together changes
(hla_deploy.serving.sequences).

StatePool, host memory (ONNX Runtime CPU EP, whose ``OrtValue.numpy()`` is a writable view): each
buffer is a prefix view of a flat float32 array, wrapped as an OrtValue sharing that memory;
arrays given back are reused for later pairs of at most their capacity (rounded up to a power of
two rows). Fresh memory costs a page fault per 4 KiB on first touch, and on this project's VM
those faults cost more than the row copies themselves (a pair for 64 demo-model rows is 50 MB:
~50 ms of faults against ~5 ms of copying). The two buffers of a pair are separate memories, so
a runtime call that fails leaves the current buffer as it was (OrtHLASession's own CPU
``_new_states`` wraps one array twice: the op then updates in place). Other sessions: pairs from
``session._new_states`` (torch's and ORT's CUDA allocators cache device memory themselves).

gather_rows by buffer kind: host memory, numpy row copies; OrtValues on a GPU (CUDA EP), each
source buffer copied to the host once, the rows assembled there and written to the destination
(``OrtValue.update_inplace``), not run here; torch tensors (TrtHLASession), device-to-device row
copies then a stream synchronize, not run here. The state stays float32 in every case.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Source = Optional[Tuple[object, int]]


def host_view(buf) -> Optional[np.ndarray]:
    """A writable numpy view of `buf`'s memory, or None when `buf` is not in host memory."""
    if isinstance(buf, np.ndarray):
        return buf
    if hasattr(buf, "device_name") and hasattr(buf, "data_ptr") and buf.device_name().lower() == "cpu":
        view = buf.numpy()
        if view.flags.writeable and view.ctypes.data == buf.data_ptr():
            return view
    return None


def _is_torch(buf) -> bool:
    return type(buf).__module__.split(".")[0] == "torch"


class StatePool:
    """Pairs of state buffers [L, n, H, N] for one session (see module docstring)."""

    def __init__(self, session, keep_rows: int = 256):
        self.session, self.keep_rows = session, int(keep_rows)  # free memory kept, in sequences
        probe = session._new_states(1)[0]
        self._host = host_view(probe) is not None and not isinstance(probe, np.ndarray)
        self._wrap = type(probe).ortvalue_from_numpy if self._host else None
        self._row = int(np.prod(session.state_shape(1))) if self._host else 0  # floats per sequence
        self._free: Dict[int, List[np.ndarray]] = {}  # capacity in rows -> flat arrays
        self.allocated = 0  # flat arrays made (for logs / tests)

    def pair(self, n: int):
        """(two buffers [L, n, H, N], token for give_back)."""
        if not self._host:
            return self.session._new_states(int(n)), None
        flats = [self._flat(n), self._flat(n)]
        shape = self.session.state_shape(n)
        size = int(np.prod(shape))
        return [self._wrap(f[:size].reshape(shape), "cpu", 0) for f in flats], flats

    def give_back(self, token) -> None:
        if token is None:
            return
        for flat in token:
            cap = flat.size // self._row
            if sum(c * len(v) for c, v in self._free.items()) + cap <= self.keep_rows:
                self._free.setdefault(cap, []).append(flat)

    def _flat(self, n: int) -> np.ndarray:
        fits = sorted(c for c, v in self._free.items() if v and c >= n)
        if fits:
            return self._free[fits[0]].pop()
        cap = 1 << max(0, int(n) - 1).bit_length()  # n rounded up to a power of two
        self.allocated += 1
        return np.empty(cap * self._row, dtype=np.float32)


def gather_rows(session, sources: Sequence[Source], dst) -> None:
    """Row i of dst [L, len(sources), H, N] <- sources[i] = (buf, row), zeros where None."""
    picks = [(i, s) for i, s in enumerate(sources) if s is not None]
    zeros = [i for i, s in enumerate(sources) if s is None]
    if _is_torch(dst):
        import torch
        for i, (buf, row) in picks:
            dst[:, i].copy_(buf[:, row])
        for i in zeros:
            dst[:, i].zero_()
        torch.cuda.current_stream(dst.device).synchronize()
        return
    view = host_view(dst)
    staged = view is None
    if staged:  # a device buffer: assemble on the host, write once
        view = session._state_to_host(dst)
    hosts = {}  # id(buf) -> host array of that buffer (a view, or one copy for a device buffer)
    for i, (buf, row) in picks:
        src = hosts.get(id(buf))
        if src is None:
            src = host_view(buf)
            if src is None:
                src = session._state_to_host(buf)
            hosts[id(buf)] = src
        view[:, i] = src[:, row]
    for i in zeros:
        view[:, i] = 0.0
    if staged:
        dst.update_inplace(np.ascontiguousarray(view, dtype=np.float32))
