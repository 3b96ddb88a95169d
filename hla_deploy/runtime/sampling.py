"""Next-token sampling shared by the runtimes (ONNX Runtime, TensorRT): numpy only, no framework.

    make_rng(seed)                                        -> numpy Generator (seeded, reproducible)
    sample_next(logits, temperature=0.0, top_k=None, rng) -> int for logits [V], int64 [B] for [B, V]

temperature == 0: greedy argmax (ties -> lowest id, like torch.argmax). Otherwise
softmax(logits / temperature) in float64, restricted to the top_k largest logits when top_k is
given (logits equal to the k-th largest are kept), sampled by inverse CDF with one uniform draw
from ``rng`` per row. The same seed gives the same tokens on every backend that uses this module;
it does NOT reproduce torch.multinomial's stream (the torch reference generate), so compare
sampled text across backends with this sampler, and greedy text with anything.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np


def make_rng(seed: Optional[int] = None) -> np.random.Generator:
    """A numpy Generator; seed None draws fresh entropy."""
    return np.random.default_rng(seed)


def check_sampling_args(temperature: float, top_k: Optional[int]) -> None:
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite value >= 0, got {temperature}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k}")


def sample_next(logits: np.ndarray, temperature: float = 0.0, top_k: Optional[int] = None,
                rng: Optional[np.random.Generator] = None) -> Union[int, np.ndarray]:
    """Pick the next token from logits [V] (returns int) or [B, V] (returns int64 [B])."""
    check_sampling_args(temperature, top_k)
    x = np.asarray(logits)
    if x.ndim not in (1, 2) or x.shape[-1] < 1:
        raise ValueError(f"logits must be [V] or [B, V] with V >= 1, got shape {x.shape}")
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    if temperature == 0.0:
        out = np.argmax(rows, axis=-1).astype(np.int64)
    else:
        if rng is None:
            rng = make_rng()
        z = rows / temperature
        if top_k is not None and top_k < z.shape[-1]:
            kth = np.sort(z, axis=-1)[:, -int(top_k)][:, None]   # k-th largest per row
            z = np.where(z < kth, -np.inf, z)
        z = z - z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        cdf = np.cumsum(p, axis=-1)
        u = rng.random(rows.shape[0]) * cdf[:, -1]
        out = np.array([min(int(np.searchsorted(c, ui, side="right")), c.size - 1)
                        for c, ui in zip(cdf, u)], dtype=np.int64)
    return int(out[0]) if x.ndim == 1 else out
