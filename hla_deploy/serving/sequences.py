"""Per-sequence recurrent state for a server: one device state per live correlation id.

    table = SequenceTable(session, max_sequences=64, idle_timeout_s=60.0)
    logits = table.run(corrid, ids, start=True, end=False)   # ids [T] int64 -> logits [T, V] float32

`session` is an OrtHLASession or TrtHLASession (hla_deploy.runtime). The table keeps, for every
live correlation id, that sequence's own pair of device state buffers (the session's
``_new_states(1)`` / ``_forward`` hooks, documented in hla_deploy.runtime.session_base), so a
state never leaves the device between requests and never mixes with another sequence's:

- ``start``: a fresh zero state (a live id restarted with start is reset, as Triton's START means);
- no ``start`` and the id unknown (never started, ended, or reclaimed idle): UnknownSequenceError
  naming the id; nothing runs;
- a new id while ``max_sequences`` are live: SequenceLimitError naming the id and the limit
  (after first reclaiming sequences idle for longer than ``idle_timeout_s``);
- ``end``: the state is dropped after this request (also when the request itself fails);
- a request whose ids are bad (rank, range) fails before it runs: that sequence's state is unchanged.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import numpy as np


class SequenceError(ValueError):
    """A request that names a sequence the table cannot serve; the message names the id."""


class UnknownSequenceError(SequenceError):
    """No live sequence has this correlation id (no START seen, ended, or reclaimed idle)."""


class SequenceLimitError(SequenceError):
    """A new sequence while max_sequences are live."""


class _Live:
    __slots__ = ("states", "cur", "last_used", "tokens")

    def __init__(self, states: list, now: float):
        self.states = states  # two device buffers [L, 1, H, N] float32, taking turns (session_base)
        self.cur = 0
        self.last_used = now
        self.tokens = 0


class SequenceTable:
    """Live sequences of one model instance, keyed by correlation id (see module docstring)."""

    def __init__(self, session, max_sequences: int, idle_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic):
        if int(max_sequences) < 1:
            raise ValueError(f"max_sequences must be >= 1, got {max_sequences}")
        if not float(idle_timeout_s) > 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
        self.session = session
        self.max_sequences = int(max_sequences)
        self.idle_timeout_s = float(idle_timeout_s)
        self._clock = clock
        self._live: Dict[object, _Live] = {}
        self.reclaimed = 0  # sequences dropped for being idle (for logs / tests)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, corrid) -> bool:
        return corrid in self._live

    def live_ids(self) -> List[object]:
        return list(self._live)

    def reclaim_idle(self, now: Optional[float] = None) -> List[object]:
        """Drop sequences idle for longer than idle_timeout_s; returns their ids."""
        now = self._clock() if now is None else now
        gone = [c for c, s in self._live.items() if now - s.last_used > self.idle_timeout_s]
        for c in gone:
            del self._live[c]
        self.reclaimed += len(gone)
        return gone

    def drop(self, corrid) -> bool:
        """Forget one sequence (e.g. the server cancelled it); True if it was live."""
        return self._live.pop(corrid, None) is not None

    def run(self, corrid, ids, start: bool, end: bool) -> np.ndarray:
        """Run ids [T] of sequence `corrid` from its state; returns logits [T, V] float32."""
        now = self._clock()
        self.reclaim_idle(now)
        try:
            ids = self.session._check_ids(np.asarray(ids).reshape(1, -1), name=f"input_ids of sequence {corrid}")
            seq = self._live.get(corrid)
            if start:
                if seq is None and len(self._live) >= self.max_sequences:
                    raise SequenceLimitError(
                        f"correlation id {corrid}: cannot start a new sequence, {len(self._live)} "
                        f"sequences are live on this model instance (max_sequences={self.max_sequences}); "
                        f"end one (END flag) or wait {self.idle_timeout_s:g} s for idle ones to be reclaimed")
                seq = _Live(self.session._new_states(1), now)  # zero state [L, 1, H, N] on the device
                self._live[corrid] = seq
            elif seq is None:
                raise UnknownSequenceError(
                    f"correlation id {corrid}: no live sequence (never started with the START flag, "
                    f"already ended, or reclaimed after {self.idle_timeout_s:g} s idle)")
            logits, seq.cur = self.session._forward(ids, seq.states, seq.cur)  # [1, T, V]
            seq.last_used = self._clock()
            seq.tokens += ids.shape[1]
            return np.ascontiguousarray(logits[0], dtype=np.float32)
        finally:
            if end:
                self._live.pop(corrid, None)
