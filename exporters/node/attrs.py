"""Validation of HLARecurrentStep attributes (docs/OP_CONTRACT.md, "Attributes" and "Bad input").

Shared by the custom-node exporter, the standard-op lowering and the ONNX schema's shape
inference, so that every exporter rejects the same attribute values with the same message.
The state layout itself comes from `hla_deploy.ops.state` (its single Python implementation).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

VARIANTS = ("hla2", "ahla", "hla3")


def check_hla_attributes(variant: str, decay: Union[float, Sequence[float]], normalize, eps: float,
                         ridge: float, H: int = None) -> List[float]:
    """Raise ValueError naming the bad attribute; return decay as a list of floats (1 or H values)."""
    if variant not in VARIANTS:
        raise ValueError(f"HLARecurrentStep attribute 'variant': unknown HLA variant {variant!r}; "
                         f"expected one of {', '.join(VARIANTS)}")
    decays = [decay] if isinstance(decay, (int, float)) else list(decay)
    if not decays:
        raise ValueError("HLARecurrentStep attribute 'decay' must have 1 or H values, got an empty list")
    for g in decays:
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not 0.0 < g <= 1.0:
            raise ValueError(f"HLARecurrentStep attribute 'decay' values must be finite and in (0, 1], got {decays}")
    if H is not None and len(decays) not in (1, H):
        raise ValueError(f"HLARecurrentStep attribute 'decay' has {len(decays)} values, expected 1 or H={H}")
    if variant == "hla3" and any(g != 1.0 for g in decays):
        raise ValueError(f"HLARecurrentStep: variant 'hla3' requires decay == 1.0, got {decays}")
    if int(normalize) not in (0, 1):
        raise ValueError(f"HLARecurrentStep attribute 'normalize' must be 0 or 1, got {normalize!r}")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"HLARecurrentStep attribute 'eps' must be finite and >= 0, got {eps!r}")
    if not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"HLARecurrentStep attribute 'ridge' must be finite and >= 0, got {ridge!r}")
    if ridge != 0 and variant != "hla2":
        raise ValueError(f"HLARecurrentStep attribute 'ridge' must be 0 for variant {variant!r} (hla2 only), "
                         f"got {ridge}")
    return [float(g) for g in decays]


def hla_state_parts(variant: str, d: int, dv: int, normalize, ridge: float) -> List[Tuple[str, Tuple[int, ...]]]:
    """Ordered (name, shape) parts of the per-head state vector (contract layout)."""
    from hla_deploy.ops.state import state_parts
    return state_parts(variant, d, dv, bool(int(normalize)), float(ridge))


def hla_state_size(variant: str, d: int, dv: int, normalize, ridge: float) -> int:
    """N, the last dim of the [B, H, N] state."""
    from hla_deploy.ops.state import state_size
    return state_size(variant, d, dv, bool(int(normalize)), float(ridge))
