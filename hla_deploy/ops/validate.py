"""Input validation of the HLA operator: the op contract's rules on q, k, v, the attributes and the
state (docs/OP_CONTRACT.md "Bad input"), shared by hla_attention, the layer and the Triton kernels.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence, Tuple, Union

import torch

from .state import VARIANTS, state_size

BACKENDS = ("auto", "naive", "recurrent", "chunk", "triton")
_ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

DecayArg = Union[float, Sequence[float], torch.Tensor]


def decay_values(decay: DecayArg, H: int, variant: str) -> Tuple[float, ...]:
    """Validate ``decay`` and return exactly H python floats."""
    if isinstance(decay, torch.Tensor):
        if decay.dim() > 1:
            raise ValueError(f"decay must be a float or a 1-D sequence of 1 or H={H} floats, "
                             f"got a tensor of shape {tuple(decay.shape)}")
        if not decay.is_floating_point():
            raise TypeError(f"decay tensor must be floating point, got dtype {decay.dtype}")
        values = [float(x) for x in decay.detach().reshape(-1).cpu().tolist()]
    elif isinstance(decay, numbers.Real) and not isinstance(decay, bool):
        values = [float(decay)]
    elif isinstance(decay, (list, tuple)):
        values = []
        for x in decay:
            if not isinstance(x, numbers.Real) or isinstance(x, bool):
                raise TypeError(f"decay values must be real numbers, got {type(x).__name__} ({x!r})")
            values.append(float(x))
    else:
        raise TypeError(f"decay must be a float, a sequence of floats or a 1-D tensor, "
                        f"got {type(decay).__name__}")
    if len(values) not in (1, H):
        raise ValueError(f"decay has {len(values)} values, expected 1 or H={H} (one per head)")
    for x in values:
        if not math.isfinite(x) or not (0.0 < x <= 1.0):
            raise ValueError(f"decay values must be finite and in (0, 1], got {x!r}")
    if variant == "hla3" and any(x != 1.0 for x in values):
        raise ValueError(f"variant 'hla3' requires decay == 1 for every head (decay for third order "
                         f"is not defined in op contract v1), got decay={values}")
    return tuple(values) * H if len(values) == 1 else tuple(values)


def check_scalar(name: str, value) -> float:
    """A finite real number >= 0 (eps, ridge)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return value


def validate_inputs(q, k, v, variant, decay, normalize, eps, ridge, initial_state, backend, chunk_size):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must have rank 4 [B, T, H, {'dv' if name == 'v' else 'd'}], "
                             f"got shape {tuple(x.shape)}")
    if q.dtype not in _ACTIVATION_DTYPES:
        raise TypeError(f"q has dtype {q.dtype}, expected float32, float16, bfloat16 or float64")
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {x.dtype}, expected q's dtype {q.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device}, expected q's device {q.device}")
    B, T, H, d = q.shape
    for name, x in (("k", k), ("v", v)):
        if tuple(x.shape[:3]) != (B, T, H):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected [B, T, H, *] = "
                             f"[{B}, {T}, {H}, *] to match q {tuple(q.shape)}")
    if k.shape[3] != d:
        raise ValueError(f"k has head dim {k.shape[3]}, expected q's head dim d={d}")
    if T == 0:
        raise ValueError("q, k, v have T = 0 tokens; expected T >= 1")
    if B == 0 or H == 0 or d == 0 or v.shape[3] == 0:
        raise ValueError(f"q {tuple(q.shape)} / v {tuple(v.shape)}: B, H, d and dv must be >= 1")
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"unknown HLA variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if not isinstance(normalize, (bool, int)) or normalize not in (0, 1):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    eps = check_scalar("eps", eps)
    ridge = check_scalar("ridge", ridge)
    if ridge != 0.0 and variant != "hla2":
        raise ValueError(f"ridge={ridge} is only defined for variant 'hla2', got variant {variant!r} "
                         f"(expected ridge=0)")
    decays = decay_values(decay, H, variant)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if initial_state is not None:
        N = state_size(variant, d, v.shape[3], bool(normalize), ridge)
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError(f"initial_state must be a torch.Tensor or None, got {type(initial_state).__name__}")
        if initial_state.dim() != 3:
            raise ValueError(f"initial_state must have rank 3 [B, H, N], got shape {tuple(initial_state.shape)}")
        if tuple(initial_state.shape) != (B, H, N):
            raise ValueError(f"initial_state has shape {tuple(initial_state.shape)}, expected [B, H, N] = "
                             f"[{B}, {H}, {N}] (N = state_size({variant!r}, d={d}, dv={v.shape[3]}, "
                             f"normalize={bool(normalize)}, ridge={ridge}))")
        if initial_state.dtype == torch.float64:
            if q.dtype != torch.float64:
                raise TypeError(f"initial_state is float64 but q is {q.dtype}; expected a float32 state "
                                f"(float64 only with float64 q)")
        elif initial_state.dtype != torch.float32:
            raise TypeError(f"initial_state has dtype {initial_state.dtype}, expected float32 "
                            f"(the state is float32 whatever the activation dtype)")
        if initial_state.device != q.device:
            raise ValueError(f"initial_state is on {initial_state.device}, expected q's device {q.device}")
    if backend == "naive" and initial_state is not None:
        raise ValueError("backend 'naive' supports only a zero initial state; got initial_state "
                         "(use backend 'chunk' or 'recurrent')")
    return decays, bool(normalize), eps, ridge
