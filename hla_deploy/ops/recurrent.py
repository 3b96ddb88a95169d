"""Recurrent form of HLA: a token-by-token loop over the compact state.

This is literally the recurrent step of docs/OP_CONTRACT.md ("Semantics"), batched over
(batch row, head). It is the decode path (T = 1) and the form the native kernels mirror.
Differentiable by autograd (every update is out of place).

Inputs are already validated by ``hla_deploy.ops.api`` and in the compute dtype
(float32, or float64):
    q, k: [B, T, H, d], v: [B, T, H, dv], gamma: [H], initial_state: [B, H, N] or None.
Returns o [B, T, H, dv] and the state after the T tokens [B, H, N] (contract layout).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .state import join_state, split_state, state_size


def _mv(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [B, H, r, c] times x [B, H, c] -> [B, H, r]."""
    return (A @ x.unsqueeze(-1)).squeeze(-1)


def _vm(x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """x^T A: x [B, H, r], A [B, H, r, c] -> [B, H, c]."""
    return (x.unsqueeze(-2) @ A).squeeze(-2)


def _outer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x [B, H, r], y [B, H, c] -> [B, H, r, c]."""
    return x.unsqueeze(-1) * y.unsqueeze(-2)


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, H, r] . [B, H, r] -> [B, H]."""
    return (x * y).sum(-1)


def recurrent_hla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str, gamma: torch.Tensor,
                  normalize: bool, eps: float, ridge: float,
                  initial_state: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    B, T, H, d = q.shape
    dv = v.shape[-1]
    if initial_state is None:
        initial_state = q.new_zeros(B, H, state_size(variant, d, dv, normalize, ridge))
    st = dict(split_state(initial_state, variant, d, dv, normalize, ridge))  # each [B, H, *shape]
    gv = gamma.to(q.dtype).view(1, H, 1)  # decay for vector parts [B, H, r]
    gm = gv.unsqueeze(-1)                 # decay for matrix parts [B, H, r, c]
    outs = []
    for t in range(T):
        qt, kt, vt = q[:, t], k[:, t], v[:, t]  # [B, H, d], [B, H, d], [B, H, dv]
        if variant == "hla2":
            st["S"] = gm * st["S"] + _outer(kt, kt)
            u = _mv(st["S"], qt)  # S q (S symmetric)
            st["M"] = gm * gm * st["M"] + _outer(u, vt)
            num = _vm(qt, st["M"])
            if normalize:
                st["n"] = gv * gv * st["n"] + u
                den = _dot(qt, st["n"]) + eps
            if ridge != 0.0:
                st["C"] = gm * st["C"] + _outer(qt, vt)
                num = num + ridge * _vm(qt, st["C"])
                if normalize:
                    st["m"] = gv * st["m"] + qt
                    den = den + ridge * _dot(qt, st["m"])
        elif variant == "ahla":
            st["P"] = gm * st["P"] + _outer(kt, vt)
            st["E"] = gm * st["E"] + _outer(kt, _vm(qt, st["P"]))
            num = _vm(qt, st["E"])
            if normalize:
                st["mK"] = gv * st["mK"] + kt
                st["n"] = gv * st["n"] + kt * _dot(qt, st["mK"]).unsqueeze(-1)
                den = _dot(qt, st["n"]) + eps
        else:  # hla3 (gamma == 1, checked by the API)
            st["S"] = st["S"] + _outer(kt, kt)
            st["P"] = st["P"] + _outer(kt, vt)
            u = _mv(st["S"], qt)
            st["F"] = st["F"] + _outer(u, _vm(qt, st["P"]))
            num = _vm(qt, st["F"])
            if normalize:
                st["mK"] = st["mK"] + kt
                st["n"] = st["n"] + u * _dot(qt, st["mK"]).unsqueeze(-1)
                den = _dot(qt, st["n"]) + eps
        outs.append(num / den.unsqueeze(-1) if normalize else num)  # [B, H, dv]
    o = torch.stack(outs, dim=1)  # [B, T, H, dv]
    return o, join_state(st, variant, d, dv, normalize, ridge)
