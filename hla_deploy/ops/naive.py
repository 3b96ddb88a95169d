"""Naive (quadratic) form of HLA: materialises the [T, T] weights, zero initial state only.

The definitions of HLA_MATH.md written as masked matrix products, per (batch row, head), with
D[t, j] = gamma^(t - j) for j <= t (0 above the diagonal), L = the 0/1 lower mask:

    hla2: O = (D ⊙ (Wd Wl^T)) V + ridge (D ⊙ Q Q^T) V,  Wd = D ⊙ Q K^T, Wl = L ⊙ Q K^T
          (weight gamma^((t-i)+(t-j)) on (q_t.k_i)(k_i.q_j) v_j)
    ahla: O = A A V,  A = D ⊙ Q K^T       (weight gamma^(t-j))
    hla3: O = (L ⊙ (W W^T)) W V,  W = L ⊙ Q K^T
    normalize: the same with V replaced by a column of ones, O /= that + eps.

Inputs (validated by the API, compute dtype): q, k [B, T, H, d], v [B, T, H, dv], gamma [H].
Returns o [B, T, H, dv]. Memory O(B H T^2): for tests and small T only.
"""
from __future__ import annotations

import torch


def naive_hla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str, gamma: torch.Tensor,
              normalize: bool, eps: float, ridge: float) -> torch.Tensor:
    B, T, H, d = q.shape
    dv = v.shape[-1]
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, *]
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # [B, H, T, dv + 1]
    t = torch.arange(T, device=q.device)
    lower = t[:, None] >= t[None, :]                          # [T, T]
    dist = (t[:, None] - t[None, :]).clamp(min=0).to(torch.float64)
    D = torch.where(lower, gamma.to(torch.float64)[:, None, None] ** dist, 0.0).to(q.dtype)  # [H, T, T]
    L = lower.to(q.dtype)
    QK = q @ k.transpose(-1, -2)                              # [B, H, T, T]
    if variant == "hla2":
        A = D * ((D * QK) @ (L * QK).transpose(-1, -2))
        if ridge != 0.0:
            A = A + ridge * (D * (q @ q.transpose(-1, -2)))
        o = A @ v
    elif variant == "ahla":
        A = D * QK
        o = A @ (A @ v)
    else:  # hla3
        W = L * QK
        o = (L * (W @ W.transpose(-1, -2))) @ (W @ v)
    if normalize:
        o = o[..., :dv] / (o[..., dv:] + eps)
    return o.transpose(1, 2)  # [B, T, H, dv]
