"""Parity metrics: how far a backend's logits and final state are from the reference's.

Every metric is computed in float64 from float32 arrays, over all positions of a run:
the prefill positions ``0 .. T-1`` followed by the teacher-forced decode positions
``T .. T+N-1`` (see ``docs/PARITY.md``).

- ``max_abs_err``: max |logits - ref| over batch, positions and vocab.
- ``rel_rms_err``: sqrt(sum (logits - ref)^2) / sqrt(sum ref^2)  (relative RMS error).
- ``min_cosine``: the worst (smallest) cosine similarity between a position's logits vector
  [V] and the reference's, over batch rows and positions.
- ``token_agreement``: fraction of positions whose argmax (greedy token) equals the reference's.
- ``first_divergence``: the first position (over all batch rows) whose argmax differs from
  the reference's, or ``None`` when every position agrees.
- ``state_rel_err``: max over layers of ||state_l - ref_l|| / ||ref_l|| for the final state
  [L, B, H, N] (``state_rel_err_per_layer`` lists each layer).

Runs of prompts of different lengths are accumulated with :class:`ParityAccumulator`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

METRIC_KEYS = ("max_abs_err", "rel_rms_err", "min_cosine", "token_agreement", "first_divergence",
               "state_rel_err")


def _as_f64(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def max_abs_err(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| (inf/nan propagate as nan)."""
    d = np.abs(_as_f64(out, "out") - _as_f64(ref, "ref"))
    return float(np.max(d)) if d.size else 0.0


def rel_rms_err(out: np.ndarray, ref: np.ndarray) -> float:
    """||out - ref||_2 / ||ref||_2 over all elements (0 when both are all zero)."""
    o, r = _as_f64(out, "out"), _as_f64(ref, "ref")
    num = float(np.sum((o - r) ** 2))
    den = float(np.sum(r ** 2))
    return _ratio(num, den)


def _ratio(num_sq: float, den_sq: float) -> float:
    if den_sq == 0.0:
        return 0.0 if num_sq == 0.0 else math.inf
    return math.sqrt(num_sq / den_sq)


def cosine_per_position(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cosine similarity over the last axis: [..., V] x [..., V] -> [...].

    Two all-zero vectors count as identical (1.0); one all-zero vector against a non-zero one as 0.
    """
    o, r = _as_f64(out, "out"), _as_f64(ref, "ref")
    dot = np.sum(o * r, axis=-1)
    no = np.sqrt(np.sum(o * o, axis=-1))
    nr = np.sqrt(np.sum(r * r, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (no * nr)
    both_zero = (no == 0) & (nr == 0)
    one_zero = (no == 0) ^ (nr == 0)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))
    return cos


def first_divergence(out_tokens: np.ndarray, ref_tokens: np.ndarray) -> Optional[int]:
    """First position p (any batch row) with out_tokens[:, p] != ref_tokens[:, p]; None if none.

    out_tokens, ref_tokens: [B, P] integer arrays.
    """
    diff = np.asarray(out_tokens) != np.asarray(ref_tokens)
    cols = np.nonzero(diff.any(axis=0))[0]
    return int(cols[0]) if cols.size else None


@dataclass
class ParityAccumulator:
    """Accumulates metrics over several runs (one per group of equal-length prompts).

    ``add`` takes the reference's and the backend's logits [B, P, V] (P = prefill + decode
    positions) and final states [L, B, H, N]; ``result`` gives the metric dict.
    """

    max_abs: float = 0.0
    err_sq: float = 0.0
    ref_sq: float = 0.0
    min_cos: float = 1.0
    agree: int = 0
    positions: int = 0
    first_div: Optional[int] = None
    finite: bool = True
    state_err_sq: List[float] = field(default_factory=list)
    state_ref_sq: List[float] = field(default_factory=list)
    # per sequence position: max |logits - ref| over batch rows and vocab, and whether the
    # position is a decode step; positions of different groups are aligned at 0.
    pos_max_abs: List[float] = field(default_factory=list)

    def add(self, ref_logits: np.ndarray, out_logits: np.ndarray, ref_state: np.ndarray,
            out_state: np.ndarray) -> None:
        if out_logits.shape != ref_logits.shape:
            raise ValueError(f"logits have shape {tuple(out_logits.shape)}, expected the reference's "
                             f"{tuple(ref_logits.shape)} [B, P, V]")
        if out_state.shape != ref_state.shape:
            raise ValueError(f"final state has shape {tuple(out_state.shape)}, expected the "
                             f"reference's {tuple(ref_state.shape)} [L, B, H, N]")
        o, r = _as_f64(out_logits, "logits"), _as_f64(ref_logits, "reference logits")
        if not (np.all(np.isfinite(o)) and np.all(np.isfinite(_as_f64(out_state, "state")))):
            self.finite = False
        d = np.abs(o - r)
        with np.errstate(invalid="ignore"):
            self.max_abs = _nanmax(self.max_abs, float(np.max(d)) if d.size else 0.0)
            self.err_sq += float(np.sum(d * d))
            self.ref_sq += float(np.sum(r * r))
            cos = cosine_per_position(o, r)
            self.min_cos = _nanmin(self.min_cos, float(np.min(cos)) if cos.size else 1.0)
        ot, rt = np.argmax(np.nan_to_num(o, nan=-np.inf), axis=-1), np.argmax(r, axis=-1)
        self.agree += int(np.sum(ot == rt))
        self.positions += int(ot.size)
        fd = first_divergence(ot, rt)
        if fd is not None and (self.first_div is None or fd < self.first_div):
            self.first_div = fd
        per_pos = np.max(d, axis=(0, 2)) if d.size else np.zeros(0)
        for p, v in enumerate(per_pos.tolist()):
            if p < len(self.pos_max_abs):
                self.pos_max_abs[p] = _nanmax(self.pos_max_abs[p], v)
            else:
                self.pos_max_abs.append(v)
        so, sr = _as_f64(out_state, "state"), _as_f64(ref_state, "reference state")
        L = sr.shape[0]
        if not self.state_err_sq:
            self.state_err_sq = [0.0] * L
            self.state_ref_sq = [0.0] * L
        for layer in range(L):
            self.state_err_sq[layer] += float(np.sum((so[layer] - sr[layer]) ** 2))
            self.state_ref_sq[layer] += float(np.sum(sr[layer] ** 2))

    def result(self) -> dict:
        per_layer = [_ratio(e, r) for e, r in zip(self.state_err_sq, self.state_ref_sq)]
        return {
            "max_abs_err": self.max_abs,
            "rel_rms_err": _ratio(self.err_sq, self.ref_sq),
            "min_cosine": self.min_cos,
            "token_agreement": (self.agree / self.positions) if self.positions else 1.0,
            "first_divergence": self.first_div,
            "state_rel_err": _nanmax_list(per_layer),
            "state_rel_err_per_layer": per_layer,
            "positions": self.positions,
            "finite": self.finite,
        }


def _nanmax(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


def _nanmin(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return min(a, b)


def _nanmax_list(xs: List[float]) -> float:
    out = 0.0
    for x in xs:
        out = _nanmax(out, x)
    return out
