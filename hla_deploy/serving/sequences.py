"""Per-sequence recurrent state for a server, with the steps of many sequences run as one batch.

    table = SequenceTable(session, max_sequences=64, idle_timeout_s=60.0)
    results = table.run_batch([Step(corrid, ids, start, end), ...])  # ids [T] int -> logits [T, V]
                                                                     # float32, or the Exception
    logits = table.run(corrid, ids, start=True, end=False)           # one step; raises its error

`session` is an OrtHLASession or TrtHLASession (hla_deploy.runtime). Every live correlation id
owns one row of a *pack*: two device state buffers [L, n, H, N] taking turns as the graph's
`state` / `state_out` (the ``_new_states`` / ``_forward`` hooks of hla_deploy.runtime.session_base).
The steps of one ``run_batch`` with the same length T run in ONE runtime call at batch k:

- when they are exactly the live rows of one pack (the steady state of decoding), that pack runs
  as it is: no state is copied (rows of ended sequences get token 0 and are ignored);
- otherwise their states are gathered into a new pack of k rows (hla_deploy.serving.state_rows),
  which they then own (the memory of emptied packs is reused: state_rows.StatePool); a pack left
  with more than a quarter of dead rows is compacted.

A state never leaves the device except where state_rows says so, and never mixes with another
sequence's. Rules, for each step on its own:

- ``start``: a fresh zero state (a live id restarted with start is reset, as Triton's START means);
- no ``start`` and the id unknown (never started, ended, or reclaimed idle): UnknownSequenceError
  naming the id; nothing runs;
- a new id while ``max_sequences`` are live: SequenceLimitError naming the id and the limit
  (after first reclaiming sequences idle for longer than ``idle_timeout_s``);
- a step whose ids are bad (shape, dtype, range) fails before anything runs;
- a step that fails (also inside the runtime call: the batch is then rerun one step at a time, so
  only the failing step fails) leaves its sequence's state as it was; the others get their logits;
- ``end``: the state is dropped after that step (also when the step failed: the sequence is over).
A correlation id named twice in one batch runs its steps in order (Triton's oldest strategy never
does that: one request per sequence in flight).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, NamedTuple, Optional, Union

import numpy as np

from .state_rows import StatePool, gather_rows


class SequenceError(ValueError):
    """A request that names a sequence the table cannot serve; the message names the id."""


class UnknownSequenceError(SequenceError):
    """No live sequence has this correlation id (no START seen, ended, or reclaimed idle)."""


class SequenceLimitError(SequenceError):
    """A new sequence while max_sequences are live."""


class Step(NamedTuple):
    """One request: the next tokens ids [T] of sequence `corrid`, with Triton's START / END flags."""
    corrid: object
    ids: object
    start: bool = False
    end: bool = False


Result = Union[np.ndarray, Exception]


class _Pack:
    """Two state buffers [L, n, H, N] (states[cur] is current); row i is sequence rows[i] or None;
    token: the StatePool's, to give the memory back when the pack empties."""
    __slots__ = ("states", "cur", "rows", "n_live", "token")

    def __init__(self, states: list, cur: int, rows: List[object], token=None):
        self.states, self.cur, self.rows, self.n_live, self.token = states, cur, rows, len(rows), token


class _Live:
    __slots__ = ("pack", "row", "last_used", "tokens")

    def __init__(self, pack: _Pack, row: int, now: float, tokens: int):
        self.pack, self.row, self.last_used, self.tokens = pack, row, now, tokens


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
        self._sparse: List[_Pack] = []  # packs that lost rows during the current call
        self.reclaimed = 0  # sequences dropped for being idle (for logs / tests)
        self.runtime_calls = 0  # session._forward calls (for logs / tests)
        self.gathers = 0  # packs built by copying states together (for logs / tests)
        self._pool = StatePool(session, keep_rows=4 * self.max_sequences)  # reuses emptied packs' memory

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
            self._forget(c)
        self.reclaimed += len(gone)
        self._compact()
        return gone

    def drop(self, corrid) -> bool:
        """Forget one sequence (e.g. the server cancelled it); True if it was live."""
        was = self._forget(corrid)
        self._compact()
        return was

    def run(self, corrid, ids, start: bool, end: bool) -> np.ndarray:
        """Run ids [T] of sequence `corrid` from its state; returns logits [T, V] float32."""
        (res,) = self.run_batch([Step(corrid, ids, start, end)])
        if isinstance(res, Exception):
            raise res
        return res

    def run_batch(self, steps) -> List[Result]:
        """Run many sequences' steps, batched (see module docstring); one result per step, in order."""
        steps = [Step(*s) for s in steps]
        results: List[Optional[Result]] = [None] * len(steps)
        self.reclaim_idle()
        wave: List[int] = []
        named = set()
        for i, s in enumerate(steps):  # a wave names each correlation id at most once
            if s.corrid in named:
                self._run_wave(steps, wave, results)
                wave, named = [], set()
            wave.append(i)
            named.add(s.corrid)
        if wave:
            self._run_wave(steps, wave, results)
        return results

    # ---- internals -------------------------------------------------------------------------------

    def _checked_ids(self, step: Step) -> np.ndarray:
        ids = np.asarray(step.ids)
        if ids.ndim != 1:
            raise ValueError(f"correlation id {step.corrid}: input_ids must be one sequence [1, T], "
                             f"got shape {list(ids.shape)}")
        return self.session._check_ids(ids.reshape(1, -1), name=f"input_ids of sequence {step.corrid}")

    def _run_wave(self, steps: List[Step], wave: List[int], results: list) -> None:
        groups: Dict[int, list] = {}  # T -> [(index, ids [1, T])], in order of first appearance
        starting = 0
        for i in wave:
            s = steps[i]
            try:
                ids = self._checked_ids(s)
                live = s.corrid in self._live
                if s.start and not live:
                    if len(self._live) + starting >= self.max_sequences:
                        raise SequenceLimitError(
                            f"correlation id {s.corrid}: cannot start a new sequence, {len(self._live) + starting} "
                            f"sequences are live on this model instance (max_sequences={self.max_sequences}); "
                            f"end one (END flag) or wait {self.idle_timeout_s:g} s for idle ones to be reclaimed")
                    starting += 1
                elif not s.start and not live:
                    raise UnknownSequenceError(
                        f"correlation id {s.corrid}: no live sequence (never started with the START flag, "
                        f"already ended, or reclaimed after {self.idle_timeout_s:g} s idle)")
                groups.setdefault(ids.shape[1], []).append((i, ids))
            except Exception as e:  # this step fails alone, before anything runs
                results[i] = e
        for members in groups.values():
            self._run_group(steps, members, results)
        for i in wave:
            if steps[i].end:
                self._forget(steps[i].corrid)
        self._compact()

    def _run_group(self, steps: List[Step], members: list, results: list) -> None:
        """Steps of equal T, distinct ids: one runtime call; if it fails, each step alone."""
        try:
            logits = self._forward_group([steps[i] for i, _ in members], np.concatenate([x for _, x in members]))
        except Exception as e:
            if len(members) == 1:
                results[members[0][0]] = e
            else:
                for m in members:
                    self._run_group(steps, [m], results)
            return
        for j, (i, _) in enumerate(members):
            results[i] = np.ascontiguousarray(logits[j], dtype=np.float32)

    def _forward_group(self, group: List[Step], ids: np.ndarray) -> np.ndarray:
        """ids [k, T] of the k steps -> logits [k, T, V]; the states move only on success."""
        k = ids.shape[0]
        seqs = [None if s.start else self._live[s.corrid] for s in group]
        pack = seqs[0].pack if seqs[0] is not None else None
        if pack is not None and pack.n_live == k and all(q is not None and q.pack is pack for q in seqs):
            # exactly the live rows of one pack: it runs in place (rows of ended sequences: token 0)
            rows = [q.row for q in seqs]
            full = np.zeros((len(pack.rows), ids.shape[1]), np.int64)
            full[rows] = ids
            logits, cur = self.session._forward(full, pack.states, pack.cur)  # [n, T, V]
            self.runtime_calls += 1
            pack.cur = cur
            out = logits[rows]
        else:
            sources = [None if q is None else (q.pack.states[q.pack.cur], q.row) for q in seqs]
            states, token = self._pool.pair(k)
            try:
                gather_rows(self.session, sources, states[0])
                self.gathers += 1
                out, cur = self.session._forward(ids, states, 0)  # [k, T, V]
            except BaseException:
                self._pool.give_back(token)
                raise
            self.runtime_calls += 1
            new = _Pack(states, cur, [s.corrid for s in group], token)
            for r, s in enumerate(group):
                old = self._live.get(s.corrid)
                tokens = 0 if s.start or old is None else old.tokens
                if old is not None:
                    self._vacate(old)
                self._live[s.corrid] = _Live(new, r, 0.0, tokens)
        now = self._clock()
        for s in group:
            q = self._live[s.corrid]
            q.last_used = now
            q.tokens += ids.shape[1]
        return out

    def _release(self, pack: _Pack) -> None:
        """An emptied pack: its memory goes back to the pool (state_rows.StatePool)."""
        self._pool.give_back(pack.token)
        pack.states = pack.token = None

    def _vacate(self, seq: _Live) -> None:
        pack = seq.pack
        pack.rows[seq.row] = None
        pack.n_live -= 1
        if pack.n_live == 0:
            self._release(pack)
        elif all(p is not pack for p in self._sparse):
            self._sparse.append(pack)

    def _forget(self, corrid) -> bool:
        seq = self._live.pop(corrid, None)
        if seq is None:
            return False
        self._vacate(seq)
        return True

    def _compact(self) -> None:
        """Packs with more than a quarter of dead rows: their live rows move to a pack of their own
        (a dead row costs a row's compute in every call, moving a live row costs one copy)."""
        sparse, self._sparse = self._sparse, []
        for pack in sparse:
            if pack.n_live == 0 or 4 * (len(pack.rows) - pack.n_live) <= len(pack.rows):
                continue
            live = [(r, c) for r, c in enumerate(pack.rows) if c is not None]
            states, token = self._pool.pair(len(live))
            try:
                gather_rows(self.session, [(pack.states[pack.cur], r) for r, _ in live], states[0])
            except Exception:  # e.g. out of memory: the sparse pack stays, still correct
                self._pool.give_back(token)
                continue
            self.gathers += 1
            new = _Pack(states, 0, [c for _, c in live], token)
            for r, (_, c) in enumerate(live):
                seq = self._live[c]
                seq.pack, seq.row = new, r
            pack.rows, pack.n_live = [None] * len(pack.rows), 0
            self._release(pack)
