"""Chunk-parallel form of HLA: matmuls only, any T, any chunk size, carried state in and out.

The sequence is cut into chunks of C tokens (the last one may be shorter). Within a chunk every
term is a masked [C, C] matmul, computed for all chunks at once; only the small carried state
(S, M, ... per head) is passed from chunk to chunk in a loop over chunks. Differentiable by
autograd; this is the CPU training path and the reference the Triton kernels are checked against.

Decay (HLA_MATH.md §2-3, per head γ). Inside a chunk, local positions i, j = 0..C-1:
    D[i, j]  = γ^(i-j) for j <= i, else 0          (decayed causal mask, [H, C, C])
    pre[i]   = γ^(i+1)    (state before the chunk -> position i)
    post[j]  = γ^(C-1-j)  (position j -> end of chunk),   ρ = γ^C
with Qp = pre ⊙ Q, Kp = post ⊙ K, Vp = post ⊙ V, L the 0/1 causal mask, U = L^T:

hla2 (carry S, M and, with ridge, C; M = S C - G, HLA_MATH.md §1-2):
    o   = pre² ⊙ (Q M) + (D ⊙ (Qp S Qᵀ + (D ⊙ Q Kᵀ)(L ⊙ Q Kᵀ)ᵀ)) V
          [+ λ (Qp C + (D ⊙ Q Qᵀ) V)]
    S  <- ρ S + Kpᵀ K
    M  <- ρ² M + ρ S Qᵀ Vp + Kpᵀ ((U ⊙ K Qᵀ) Vp)
    C  <- ρ C + Qᵀ Vp
  (o_i = Σ_{j<=i} Σ_{a<=j} γ^{(i-a)+(i-j)} (q_i·k_a)(k_a·q_j) v_j + the carried-state terms.)

ahla (carry P, E; "rows" r_b = q_bᵀ P_b):
    A = D ⊙ Q Kᵀ;  R = Qp P + A V;  o = Qp E + A R
    E <- ρ E + Kpᵀ R;   P <- ρ P + Kpᵀ V

hla3 (γ = 1; HLA_MATH.md §4 verbatim; S, P, F at chunk starts are exclusive prefix sums):
    R = Q P + (L ⊙ Q Kᵀ) V;  o = Q F + (L ⊙ (Q S Qᵀ + (Q Kᵀ)(U ⊙ K Qᵀ))) R
    F <- F + S Qᵀ R + Kᵀ ((U ⊙ K Qᵀ) R);  S <- S + Kᵀ K;  P <- P + Kᵀ V

normalize: all forms run on V augmented with a ones column (the normaliser parts are the value
parts of that column; see state.augmented_parts), then o = o[:dv] / (o[dv] + eps).

Inputs (validated by the API, compute dtype float32 or float64):
    q, k [B, T, H, d], v [B, T, H, dv], gamma [H], initial_state [B, H, N] or None.
Returns o [B, T, H, dv] and the final state [B, H, N] (contract layout).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from .state import augmented_parts, state_from_augmented, state_size


def _decay_factors(gamma: torch.Tensor, C: int):
    """D [H, C, C], pre [H, C, 1], post [H, C, 1], rho [H, 1, 1] in gamma's dtype."""
    lg = torch.log(gamma.to(torch.float64))[:, None]                 # [H, 1]
    i = torch.arange(C, device=gamma.device, dtype=torch.float64)
    dist = i[:, None] - i[None, :]                                   # [C, C]
    D = torch.where(dist >= 0, torch.exp(lg[:, :, None] * dist.clamp(min=0)), 0.0)
    pre = torch.exp(lg * (i + 1))[..., None]
    post = torch.exp(lg * (C - 1 - i))[..., None]
    rho = torch.exp(lg * C)[..., None]
    dt = gamma.dtype
    return D.to(dt), pre.to(dt), post.to(dt), rho.to(dt)


def _scan(x0: torch.Tensor, decay: torch.Tensor, incs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """States at chunk starts: x_{c+1} = decay * x_c + incs[:, :, c].

    x0 [B, H, ...], incs [B, H, n, ...] -> (starts [B, H, n, ...], x_n [B, H, ...]).
    """
    starts, x = [], x0
    for c in range(incs.shape[2]):
        starts.append(x)
        x = decay * x + incs[:, :, c]
    return torch.stack(starts, dim=2), x


def _hla2_pass(q, k, v, aug, gamma, ridge, C):
    """q, k [B, H, n, C, d], v [B, H, n, C, e]; aug: S [B, H, d, d], M, (C) [B, H, d, e]."""
    D, pre, post, rho = (x[:, None] for x in _decay_factors(gamma, C))  # [H, 1, C, C] ...
    rho_m = rho.squeeze(1)                                              # [H, 1, 1] for [B, H, d, *]
    L = torch.ones(C, C, dtype=q.dtype, device=q.device).tril()
    QK = q @ k.transpose(-1, -2)                                        # [B, H, n, C, C]
    intra = D * ((D * QK) @ (L * QK).transpose(-1, -2))                 # [B, H, n, C, C]
    kp, vp, qp = k * post, v * post, q * pre
    dS = kp.transpose(-1, -2) @ k                                       # [B, H, n, d, d]
    dM = kp.transpose(-1, -2) @ ((L.T * QK.transpose(-1, -2)) @ vp)    # [B, H, n, d, e]
    QtVp = q.transpose(-1, -2) @ vp                                     # [B, H, n, d, e]
    S_st, S_new = _scan(aug["S"], rho_m, dS)
    # M_{c+1} = rho^2 M_c + rho S_c Qc^T Vp_c + dM_c  (S_c: S at the start of chunk c)
    SQV = rho_m[:, None] * (S_st @ QtVp) + dM
    M_st, M_new = _scan(aug["M"], rho_m * rho_m, SQV)
    o = (qp * pre) @ M_st + (D * (qp @ S_st @ q.transpose(-1, -2)) + intra) @ v
    out = {"S": S_new, "M": M_new}
    if "C" in aug:
        C_st, out["C"] = _scan(aug["C"], rho_m, QtVp)
        o = o + ridge * (qp @ C_st + (D * (q @ q.transpose(-1, -2))) @ v)
    return o, out


def _ahla_pass(q, k, v, aug, gamma, C):
    D, pre, post, rho = (x[:, None] for x in _decay_factors(gamma, C))
    rho_m = rho.squeeze(1)
    A = D * (q @ k.transpose(-1, -2))                                   # [B, H, n, C, C]
    kp, qp = k * post, q * pre
    AV = A @ v                                                          # [B, H, n, C, e]
    dP = kp.transpose(-1, -2) @ v                                       # [B, H, n, d, e]
    P_st, P_new = _scan(aug["P"], rho_m, dP)
    R = qp @ P_st + AV                                                  # rows q_b^T P_b
    E_st, E_new = _scan(aug["E"], rho_m, kp.transpose(-1, -2) @ R)
    o = qp @ E_st + A @ R
    return o, {"P": P_new, "E": E_new}


def _excl_cumsum(x0: torch.Tensor, inc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """x0 [B, H, ...], inc [B, H, n, ...] -> (x at chunk starts [B, H, n, ...], x at the end)."""
    cs = torch.cumsum(inc, dim=2)
    starts = torch.cat([torch.zeros_like(inc[:, :, :1]), cs[:, :, :-1]], dim=2) + x0.unsqueeze(2)
    return starts, x0 + cs[:, :, -1]


def _hla3_pass(q, k, v, aug, C):
    L = torch.ones(C, C, dtype=q.dtype, device=q.device).tril()
    QK = q @ k.transpose(-1, -2)                                        # [B, H, n, C, C]
    KQu = L.T * QK.transpose(-1, -2)                                    # U ⊙ K Q^T
    kt = k.transpose(-1, -2)                                            # [B, H, n, d, C]
    S_st, S_new = _excl_cumsum(aug["S"], kt @ k)
    P_st, P_new = _excl_cumsum(aug["P"], kt @ v)
    R = q @ P_st + (L * QK) @ v                                         # [B, H, n, C, e]
    F_st, F_new = _excl_cumsum(aug["F"], S_st @ (q.transpose(-1, -2) @ R) + kt @ (KQu @ R))
    o = q @ F_st + (L * (q @ S_st @ q.transpose(-1, -2) + QK @ KQu)) @ R
    return o, {"S": S_new, "P": P_new, "F": F_new}


def _pass(q, k, v, aug, variant, gamma, ridge, C):
    """One batched pass over n full chunks of C tokens. q, k, v [B, H, n*C, *]."""
    B, H, Tn, _ = q.shape
    n = Tn // C
    q, k, v = (x.reshape(B, H, n, C, x.shape[-1]) for x in (q, k, v))
    if variant == "hla2":
        o, aug = _hla2_pass(q, k, v, aug, gamma, ridge, C)
    elif variant == "ahla":
        o, aug = _ahla_pass(q, k, v, aug, gamma, C)
    else:
        o, aug = _hla3_pass(q, k, v, aug, C)
    return o.reshape(B, H, Tn, -1), aug


def chunk_hla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str, gamma: torch.Tensor,
              normalize: bool, eps: float, ridge: float, initial_state: Optional[torch.Tensor] = None,
              chunk_size: int = 64) -> Tuple[torch.Tensor, torch.Tensor]:
    B, T, H, d = q.shape
    dv = v.shape[-1]
    if initial_state is None:
        initial_state = q.new_zeros(B, H, state_size(variant, d, dv, normalize, ridge))
    aug: Dict[str, torch.Tensor] = augmented_parts(initial_state, variant, d, dv, normalize, ridge)
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))                    # [B, H, T, *]
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)         # [B, H, T, dv + 1]
    C = min(chunk_size, T)
    T_full = (T // C) * C
    outs = []
    o, aug = _pass(q[:, :, :T_full], k[:, :, :T_full], v[:, :, :T_full], aug, variant, gamma, ridge, C)
    outs.append(o)
    if T_full < T:  # the last, shorter chunk
        o, aug = _pass(q[:, :, T_full:], k[:, :, T_full:], v[:, :, T_full:], aug, variant, gamma, ridge,
                       T - T_full)
        outs.append(o)
    o = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]            # [B, H, T, e]
    if normalize:
        o = o[..., :dv] / (o[..., dv:] + eps)
    return o.transpose(1, 2), state_from_augmented(aug, variant, d, dv, normalize, ridge)
