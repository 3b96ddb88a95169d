"""State-size arithmetic of HLARecurrentStep, without torch (the runtime and the bundle checker use it).

    state_parts(variant, d, dv, normalize=False, ridge=0.0) -> [(name, shape), ...]
    state_size(variant, d, dv, normalize=False, ridge=0.0)  -> N (per-head state length)

The layout (docs/OP_CONTRACT.md, "State layout") is described in hla_deploy/ops/state.py, which
re-exports these functions and adds the torch views (split_state, join_state, ...). This is the
ONE copy of the arithmetic.
"""
from __future__ import annotations

from typing import List, Tuple

VARIANTS = ("hla2", "ahla", "hla3")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown HLA variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def state_parts(variant: str, d: int, dv: int, normalize: bool = False,
                ridge: float = 0.0) -> List[Tuple[str, Tuple[int, ...]]]:
    """Ordered (name, shape) list of the parts of the per-head state vector."""
    _check_variant(variant)
    if d < 1 or dv < 1:
        raise ValueError(f"head dims must be >= 1, got d={d}, dv={dv}")
    if variant == "hla2":
        parts = [("S", (d, d)), ("M", (d, dv))]
        if normalize:
            parts.append(("n", (d,)))
        if ridge != 0.0:
            parts.append(("C", (d, dv)))
            if normalize:
                parts.append(("m", (d,)))
    elif variant == "ahla":
        parts = [("P", (d, dv)), ("E", (d, dv))]
        if normalize:
            parts += [("mK", (d,)), ("n", (d,))]
    else:  # hla3
        parts = [("S", (d, d)), ("P", (d, dv)), ("F", (d, dv))]
        if normalize:
            parts += [("mK", (d,)), ("n", (d,))]
    return parts


def state_size(variant: str, d: int, dv: int, normalize: bool = False, ridge: float = 0.0) -> int:
    """N, the length of the per-head state vector (last dim of the [B, H, N] state)."""
    total = 0
    for _, shape in state_parts(variant, d, dv, normalize, ridge):
        n = 1
        for s in shape:
            n *= s
        total += n
    return total
