"""Gather sequences (rows of the batch dim) of a session's state buffers into one new batch.

    states = gather_rows(session, sources, batch)   # two new buffers [L, batch, H, N] float32
        sources[i] = (buf, row): row `row` of buffer `buf` goes to row i of states[0]; None: zeros

`session` is an hla-deploy runtime session; its buffers are what its ``_new_states`` returns
(hla_deploy.runtime.session_base). The state is [L, B, H, N]: a sequence is a row of dim 1, so a
batch of distinct sequences cannot be a view of their buffers and is copied together here, once,
when the set of sequences batched together changes (hla_deploy.serving.sequences). By buffer kind:

- numpy arrays, and ONNX Runtime OrtValues in host memory (CPU EP; ``OrtValue.numpy()`` is then a
  writable view of the buffer): numpy row copies, nothing else;
- OrtValues on a GPU (CUDA EP): each source buffer copied to the host once, the rows assembled
  there, the result written to the new device buffer (``OrtValue.update_inplace``); not run here;
- torch tensors (TrtHLASession): device-to-device row copies, then a stream synchronize; not run here.
The state stays float32 in every case.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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


def gather_rows(session, sources: Sequence[Source], batch: int) -> List[object]:
    """Two new zeroed state buffers [L, batch, H, N]; row i of the first holds sources[i]."""
    if len(sources) != batch:
        raise ValueError(f"gather_rows: {len(sources)} sources for a batch of {batch}")
    states = session._new_states(int(batch))
    dst = states[0]
    picks = [(i, s) for i, s in enumerate(sources) if s is not None]
    if not picks:
        return states
    if _is_torch(dst):
        import torch
        for i, (buf, row) in picks:
            dst[:, i].copy_(buf[:, row])
        torch.cuda.current_stream(dst.device).synchronize()
        return states
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
    if staged:
        dst.update_inplace(np.ascontiguousarray(view, dtype=np.float32))
    return states
