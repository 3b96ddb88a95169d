"""Host-side helpers for the hla2 Triton kernels: input checks, decay vector, state packing.

The kernels see the hla2 state as up to three float32 blocks per (batch row, head):

    S  [B*H, d, d]      S of the contract
    Mx [B*H, d, dvx]    M of the contract, with n appended as column dv when normalize
    Cx [B*H, d, dvx]    C of the contract (ridge != 0), with m appended when normalize

with dvx = dv + 1 when normalize (the normaliser behaves exactly like M and C for a value
column of ones, see function.py) and dvx = dv otherwise. `unpack_state` / `pack_state`
convert between that and the contract's [B, H, N] vector (docs/OP_CONTRACT.md, "State layout").
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from ..state import split_state, state_size

_ACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str, normalize: bool,
                 eps: float, ridge: float, initial_state: Optional[torch.Tensor]) -> None:
    """Reject bad input with an error naming the tensor/attribute (OP_CONTRACT.md "Bad input")."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have rank 4 [B, T, H, D], got shape {tuple(t.shape)}")
    if q.dtype not in _ACT_DTYPES:
        raise TypeError(f"q has dtype {q.dtype}; the Triton backend takes float32, float16 or bfloat16")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, expected q's dtype {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, expected q's device {q.device}")
    B, T, H, d = q.shape
    if T == 0:
        raise ValueError("q has T = 0 tokens; expected T >= 1")
    if k.shape != q.shape:
        raise ValueError(f"k has shape {tuple(k.shape)}, expected q's shape {tuple(q.shape)}")
    if tuple(v.shape[:3]) != (B, T, H):
        raise ValueError(f"v has shape {tuple(v.shape)}, expected [B={B}, T={T}, H={H}, dv]")
    if variant not in ("hla2", "ahla"):
        raise ValueError(f"the Triton backend implements variants 'hla2' and 'ahla', got {variant!r}")
    if variant == "ahla" and ridge != 0:
        raise ValueError(f"ridge must be 0 for variant 'ahla', got {ridge!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite float >= 0, got {eps!r}")
    if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite float >= 0, got {ridge!r}")
    from . import MAX_HEAD_DIM
    if max(d, v.shape[-1] + int(bool(normalize))) > MAX_HEAD_DIM:
        raise ValueError(f"the Triton backend supports head dims up to {MAX_HEAD_DIM} (d <= {MAX_HEAD_DIM}, "
                         f"dv + normalize <= {MAX_HEAD_DIM}), got d={d}, dv={v.shape[-1]}, normalize={normalize}")
    if initial_state is not None:
        N = state_size(variant, d, v.shape[-1], normalize, ridge)
        if not isinstance(initial_state, torch.Tensor) or initial_state.dim() != 3:
            raise ValueError("initial_state must be a rank-3 tensor [B, H, N]")
        if initial_state.dtype != torch.float32:
            raise TypeError(f"initial_state has dtype {initial_state.dtype}, expected float32")
        if tuple(initial_state.shape) != (B, H, N):
            raise ValueError(f"initial_state has shape {tuple(initial_state.shape)}, expected "
                             f"[B={B}, H={H}, N={N}] for {variant} d={d} dv={v.shape[-1]} "
                             f"normalize={normalize} ridge={ridge}")
        if initial_state.device != q.device:
            raise ValueError(f"initial_state is on {initial_state.device}, expected {q.device}")


def decay_vector(decay: Union[float, Sequence[float], torch.Tensor], H: int,
                 device: torch.device) -> torch.Tensor:
    """decay (a float, or 1 or H values in (0, 1]) -> float32 tensor [H]."""
    if isinstance(decay, torch.Tensor):
        vals = [float(x) for x in decay.detach().flatten().tolist()]
    elif isinstance(decay, (int, float)):
        vals = [float(decay)]
    else:
        vals = [float(x) for x in decay]
    if len(vals) not in (1, H):
        raise ValueError(f"decay must have 1 or H={H} values, got {len(vals)}")
    for x in vals:
        if not (math.isfinite(x) and 0.0 < x <= 1.0):
            raise ValueError(f"decay values must lie in (0, 1], got {x}")
    if len(vals) == 1:
        vals = vals * H
    key = (tuple(vals), str(device))
    out = _DECAY_CACHE.get(key)
    if out is None:  # cached: a host-to-device copy per call would cost more than a short prefill
        out = torch.tensor(vals, dtype=torch.float32, device=device)
        if len(_DECAY_CACHE) < 256:
            _DECAY_CACHE[key] = out
    return out


_DECAY_CACHE: dict = {}


def unpack_state(state: Optional[torch.Tensor], B: int, H: int, d: int, dv: int, normalize: bool,
                 ridge: float) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """[B, H, N] float32 -> (S [B*H, d, d], Mx [B*H, d, dvx], Cx [B*H, d, dvx] or None), contiguous."""
    if state is None:
        return None, None, None
    p = split_state(state, "hla2", d, dv, normalize, ridge)
    S = p["S"].reshape(B * H, d, d).contiguous()
    M = p["M"]
    if normalize:
        M = torch.cat([M, p["n"].unsqueeze(-1)], dim=-1)
    M = M.reshape(B * H, d, -1).contiguous()
    C = None
    if ridge != 0.0:
        C = p["C"]
        if normalize:
            C = torch.cat([C, p["m"].unsqueeze(-1)], dim=-1)
        C = C.reshape(B * H, d, -1).contiguous()
    return S, M, C


def pack_state(S: torch.Tensor, M: torch.Tensor, C: Optional[torch.Tensor], B: int, H: int, d: int,
               dv: int, normalize: bool) -> torch.Tensor:
    """Inverse of unpack_state: blocks [B*H, ...] -> [B, H, N] float32 (contract layout)."""
    parts = [S.reshape(B, H, d * d), M[..., :dv].reshape(B, H, d * dv)]
    if normalize:
        parts.append(M[..., dv].reshape(B, H, d))
    if C is not None:
        parts.append(C[..., :dv].reshape(B, H, d * dv))
        if normalize:
            parts.append(C[..., dv].reshape(B, H, d))
    out = torch.cat(parts, dim=-1)
    assert out.shape[-1] == state_size("hla2", d, dv, normalize, 0.0 if C is None else 1.0)
    return out


def next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def unpack_state_ahla(state: Optional[torch.Tensor], B: int, H: int, d: int, dv: int,
                      normalize: bool) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """ahla [B, H, N] -> (Px [B*H, d, dvx], Ex [B*H, d, dvx]): P | mK and E | n when normalize."""
    if state is None:
        return None, None
    p = split_state(state, "ahla", d, dv, normalize, 0.0)
    P, E = p["P"], p["E"]
    if normalize:
        P = torch.cat([P, p["mK"].unsqueeze(-1)], dim=-1)
        E = torch.cat([E, p["n"].unsqueeze(-1)], dim=-1)
    return P.reshape(B * H, d, -1).contiguous(), E.reshape(B * H, d, -1).contiguous()


def pack_state_ahla(P: torch.Tensor, E: torch.Tensor, B: int, H: int, d: int, dv: int,
                    normalize: bool) -> torch.Tensor:
    """Inverse of unpack_state_ahla: -> [B, H, N] float32 (P, E, [mK, n])."""
    parts = [P[..., :dv].reshape(B, H, d * dv), E[..., :dv].reshape(B, H, d * dv)]
    if normalize:
        parts += [P[..., dv].reshape(B, H, d), E[..., dv].reshape(B, H, d)]
    return torch.cat(parts, dim=-1)
