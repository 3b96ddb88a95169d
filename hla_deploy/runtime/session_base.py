"""The framework-independent half of the runtime sessions (OrtHLASession, TrtHLASession).

    run(input_ids [B, T], state=None)  -> (logits [B, T, V] float32, state_out [L, B, H, N] float32)
    reset(batch_size)                     zero device state for B rows
    prefill(input_ids [B, T])          -> logits [B, T, V]   (state kept on the device)
    step(token_ids [B])                -> logits [B, V]
    generate(prompt_ids, max_new_tokens, temperature, top_k, seed) -> new token ids (batch 1)
    generate_stream(...)               -> iterator: the same ids, each yielded as soon as it is sampled

This class checks the inputs (token ids, state shape and dtype), keeps the two device state
buffers that take turns as `state` (input) and `state_out` (output), and runs the generation loop
with hla_deploy.runtime.sampling. A backend subclass describes the model (sets ``n_layers``,
``n_heads``, ``state_size``, ``vocab_size``, then calls ``HLASessionBase.__init__``) and moves
the data:

    _run_stateless(ids [B, T] int64, state [L, B, H, N] float32) -> (logits, state_out)  numpy
    _new_states(batch_size)            -> [buf0, buf1]  two zeroed device states [L, B, H, N]
    _forward(ids [B, T], states, cur)  -> (logits [B, T, V] numpy, new cur): runs ids from
                                          states[cur]; the final state is in states[new cur]
    _state_to_host(buf)                -> numpy copy of one device state
    _check_batch_size(name, B)            optional: reject batches the backend cannot take
    _check_reset_batch_size(batch_size)   optional: the same for reset()
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .sampling import check_sampling_args, make_rng, sample_next

#: Graph / engine I/O names of an hla-deploy export (exporters).
INPUTS = ("input_ids", "state")
OUTPUTS = ("logits", "state_out")


class HLASessionBase:
    """Shared input checks, state bookkeeping and generation of the hla-deploy sessions."""

    n_layers: int
    n_heads: int
    state_size: int
    vocab_size: int

    def __init__(self) -> None:
        self._states: Optional[list] = None
        self._cur = 0
        self.batch_size: Optional[int] = None

    def state_shape(self, batch_size: int) -> Tuple[int, int, int, int]:
        """[L, B, H, N]."""
        return (self.n_layers, int(batch_size), self.n_heads, self.state_size)

    # ---- backend hooks -------------------------------------------------------------------------

    def _run_stateless(self, ids: np.ndarray, state: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _new_states(self, batch_size: int) -> list:
        raise NotImplementedError

    def _forward(self, ids: np.ndarray, states: list, cur: int) -> Tuple[np.ndarray, int]:
        raise NotImplementedError

    def _state_to_host(self, buf) -> np.ndarray:
        raise NotImplementedError

    def _check_batch_size(self, name: str, batch_size: int) -> None:
        """Called by _check_ids after the generic checks; no limit by default."""

    def _check_reset_batch_size(self, batch_size: int) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    # ---- input checks --------------------------------------------------------------------------

    def _check_ids(self, input_ids, name: str = "input_ids", rank: int = 2) -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
        if ids.ndim != rank:
            want = "[B, T]" if rank == 2 else "[B]"
            raise ValueError(f"{name} must have rank {rank} {want}, got shape {ids.shape}")
        if ids.size == 0:
            raise ValueError(f"{name} is empty (shape {ids.shape}); need B >= 1 and T >= 1")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"{name} has ids outside [0, {self.vocab_size}): min {ids.min()}, max {ids.max()}")
        self._check_batch_size(name, ids.shape[0])
        return np.ascontiguousarray(ids, dtype=np.int64)

    def _check_state(self, state, batch_size: int) -> np.ndarray:
        st = np.asarray(state)
        want = self.state_shape(batch_size)
        if st.dtype != np.float32:
            raise TypeError(f"state must be float32 (the recurrent state is float32 always), got {st.dtype}")
        if st.shape != want:
            raise ValueError(f"state has shape {st.shape}, expected [L, B, H, N] = {list(want)}")
        return np.ascontiguousarray(st)

    # ---- stateless -------------------------------------------------------------------------------

    def init_state(self, batch_size: int = 1) -> np.ndarray:
        """Zero state [L, B, H, N] float32 (numpy, host)."""
        return np.zeros(self.state_shape(batch_size), dtype=np.float32)

    def run(self, input_ids, state=None) -> Tuple[np.ndarray, np.ndarray]:
        """Stateless call: input_ids [B, T] int, state [L, B, H, N] float32 (None: zeros)
        -> (logits [B, T, V] float32, state_out [L, B, H, N] float32)."""
        ids = self._check_ids(input_ids)
        st = self.init_state(ids.shape[0]) if state is None else self._check_state(state, ids.shape[0])
        return self._run_stateless(ids, st)

    # ---- stateful, state kept on the device --------------------------------------------------------

    def reset(self, batch_size: int = 1) -> None:
        """Start fresh sequences: zero state for `batch_size` rows, allocated on the device."""
        self._check_reset_batch_size(batch_size)
        # Two buffers: one is the state read by the next call, the other receives state_out.
        self._states = self._new_states(int(batch_size))
        self._cur = 0
        self.batch_size = int(batch_size)

    def get_state(self) -> np.ndarray:
        """Copy of the current device state [L, B, H, N] to the host (for inspection/tests)."""
        if self._states is None:
            raise RuntimeError("no state yet: call reset(batch_size) or prefill() first")
        return self._state_to_host(self._states[self._cur])

    def _bound_call(self, ids: np.ndarray) -> np.ndarray:
        if self._states is None:
            self.reset(ids.shape[0])
        elif ids.shape[0] != self.batch_size:
            raise ValueError(f"input has batch size {ids.shape[0]} but the session state holds "
                             f"{self.batch_size} rows; call reset({ids.shape[0]}) first")
        logits, self._cur = self._forward(ids, self._states, self._cur)  # state_out becomes the next state
        return logits

    def prefill(self, input_ids) -> np.ndarray:
        """Run [B, T] tokens from the current state (fresh after reset); returns logits [B, T, V]."""
        return self._bound_call(self._check_ids(input_ids))

    def step(self, token_ids) -> np.ndarray:
        """Run one token per row [B]; returns logits [B, V]."""
        ids = self._check_ids(token_ids, name="token_ids", rank=1)
        return self._bound_call(ids[:, None])[:, 0, :]

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: Optional[int] = None, seed: Optional[int] = None) -> List[int]:
        """Batch-1 generation: one prefill of the prompt, then one step per new token.
        Returns ONLY the new token ids (like hla_deploy.models.generate)."""
        return list(self.generate_stream(prompt_ids, max_new_tokens, temperature, top_k, seed))

    def generate_stream(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                        top_k: Optional[int] = None, seed: Optional[int] = None) -> Iterator[int]:
        """generate, one token at a time: yields each new token id as soon as it is sampled, before
        the step that consumes it runs. The arguments are checked here, before the first token."""
        prompt = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
        if not prompt:
            raise ValueError("generate: prompt_ids must hold at least one token")
        if max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
        check_sampling_args(temperature, top_k)
        return self._stream(prompt, int(max_new_tokens), temperature, top_k, make_rng(seed))

    def _stream(self, prompt: List[int], max_new_tokens: int, temperature: float, top_k: Optional[int],
                rng) -> Iterator[int]:
        if max_new_tokens == 0:
            return
        self.reset(1)
        logits = self.prefill(np.asarray([prompt], dtype=np.int64))[:, -1, :]  # [1, V]
        for i in range(max_new_tokens):
            nxt = int(sample_next(logits[0], temperature, top_k, rng))
            yield nxt
            if i + 1 == max_new_tokens:
                break
            logits = self.step(np.asarray([nxt], dtype=np.int64))
