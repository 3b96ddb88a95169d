"""Host-side helpers for the hla2 Triton kernels: input checks, decay vector, state packing.

The forward kernels read and write the contract layout directly (launch_plan.py). The backward
kernels see the hla2 state (its gradient) as up to three float32 blocks per (batch row, head):

    S  [B*H, d, d]      S of the contract
    Mx [B*H, d, dvx]    M of the contract, with n appended as column dv when normalize
    Cx [B*H, d, dvx]    C of the contract (ridge != 0), with m appended when normalize

with dvx = dv + 1 when normalize (the normaliser behaves exactly like M and C for a value
column of ones, see function.py) and dvx = dv otherwise. `unpack_state` / `pack_state`
convert between that and the contract's [B, H, N] vector (docs/OP_CONTRACT.md, "State layout").
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from ..state import split_state, state_size

_ACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Largest head dims the kernels take: d <= MAX_HEAD_DIM and dv (+ 1 with normalize) <= MAX_HEAD_DIM
#: (one tile per head; the normaliser is carried as an extra value column, see utils.py).
MAX_HEAD_DIM = 128


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str,
                 decay: Union[float, Sequence[float], torch.Tensor], normalize: bool, eps: float, ridge: float,
                 initial_state: Optional[torch.Tensor]) -> Tuple[float, ...]:
    """Reject bad input with an error naming the tensor/attribute: the op contract's rules
    (OP_CONTRACT.md "Bad input", checked by hla_deploy.ops.api) plus the kernels' own limits
    (float32/float16/bfloat16 activations, variants hla2/ahla, head dims <= MAX_HEAD_DIM).
    Returns decay as H python floats."""
    from ..validate import validate_inputs

    decays, _, _, _ = validate_inputs(q, k, v, variant, decay, normalize, eps, ridge, initial_state, "triton", 64)
    if q.dtype not in _ACT_DTYPES:
        raise TypeError(f"q has dtype {q.dtype}; the Triton backend takes float32, float16 or bfloat16")
    if variant not in ("hla2", "ahla"):
        raise ValueError(f"the Triton backend implements variants 'hla2' and 'ahla', got {variant!r}")
    d, dv = q.shape[-1], v.shape[-1]
    if max(d, dv + int(bool(normalize))) > MAX_HEAD_DIM:
        raise ValueError(f"the Triton backend supports head dims up to {MAX_HEAD_DIM} (d <= {MAX_HEAD_DIM}, "
                         f"dv + normalize <= {MAX_HEAD_DIM}), got d={d}, dv={dv}, normalize={normalize}")
    return decays


def decay_vector(decays: Sequence[float], device: torch.device) -> torch.Tensor:
    """H checked decay values (check_inputs) -> float32 tensor [H] on ``device``."""
    key = (tuple(decays), str(device))
    out = _DECAY_CACHE.get(key)
    if out is None:  # cached: a host-to-device copy per call would cost more than a short prefill
        out = torch.tensor(key[0], dtype=torch.float32, device=device)
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
