"""The one-chunk form of HLARecurrentStep in numpy: the exact maths the standard-op lowering builds.

`exporters/standard/lowering.py` lowers one HLARecurrentStep node to standard ONNX ops by computing
the whole sequence of T tokens as ONE chunk (T x T masked matrices) with the carried state
folded in. This module is the same computation written in numpy, line for line, so that it can
be checked in float64 against a serial token loop (tests/test_export_standard.py) independently
of ONNX. Derivation (per head, gamma = decay of the head, rows t, i, j = 0..T-1 of the chunk,
carried state S0, M0, ... from before the chunk; see docs/OP_CONTRACT.md and HLA_MATH.md):

    Dg[t, j] = gamma^(t-j) if j <= t else 0            L = (j <= t) as 0/1
    a[t] = gamma^(t+1)   b[i] = gamma^(T-1-i)   gT = gamma^T
    QK = Q K^T,  Wd = Dg * QK (decayed),  Wu = L * QK (undecayed)

The value column is augmented with a column of ones when normalize=1 (V' = [V, 1]); the
normalizer states (n, m, mK) are then the last column of the matrix states (M' = [M | n],
C' = [C | m], P' = [P | mK], E' = [E | n], F' = [F | n]) and the normalizer of each output row
is the last column of the augmented output.

hla2 (S_t = gamma S_{t-1} + k k^T, M_t = gamma^2 M_{t-1} + S_t q v^T):
    o'  = a^2 * (Q M0') + (Dg * (a * (Q S0 Q^T) + Wd Wu^T)) V'
          [+ lambda (a * (Q C0') + (Dg * Q Q^T) V')]                           (ridge)
    S   = gT S0 + K^T (b * K)
    M'  = gT^2 M0' + S0 Q^T (gT b * V') + K^T ((b b^T * (L^T * K Q^T)) V')
    C'  = gT C0' + Q^T (b * V')
ahla (P_t = gamma P_{t-1} + k v^T, E_t = gamma E_{t-1} + k q^T P_t):
    R   = a * (Q P0') + Wd V'                    (row i = q_i^T P_i)
    o'  = a * (Q E0') + Wd R
    P'  = gT P0' + K^T (b * V');  E' = gT E0' + K^T (b * R)
hla3 (gamma = 1):
    R   = Q P0' + Wu V'                          (row b = q_b^T P_b)
    o'  = Q F0' + (L * (Q S0 Q^T + Wu Wu^T)) R
    F'  = F0' + S0 Q^T R + K^T ((L^T * K Q^T) R);  S = S0 + K^T K;  P' = P0' + K^T V'

o = o'[:dv] / (o'[dv] + eps) when normalize else o'. All of these are exact in arithmetic for
any T; the cost is O(T^2 (d + dv)) per head, fine for prefills of a few thousand tokens.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from ..node.attrs import hla_state_parts


def decay_factors(decay: Union[float, Sequence[float]], H: int, T: int, dtype=np.float64):
    """Per-head decay matrices. Returns (Dg [H,T,T], L [T,T], a [H,T], b [H,T], gT [H])."""
    g = np.asarray(decay, dtype=dtype).reshape(-1)
    if g.size == 1:
        g = np.repeat(g, H)
    t = np.arange(T)
    diff = t[:, None] - t[None, :]                                        # [T, T]
    L = (diff >= 0).astype(dtype)
    Dg = np.where(diff >= 0, g[:, None, None] ** np.maximum(diff, 0), 0.0).astype(dtype)  # [H, T, T]
    a = g[:, None] ** (t[None, :] + 1)                                    # [H, T]
    b = g[:, None] ** (T - 1 - t[None, :])                                # [H, T]
    gT = g ** T                                                           # [H]
    return Dg, L, a, b, gT


def _split(state, variant, d, dv, normalize, ridge):
    """state [B,H,N] -> dict of parts in the contract layout (views; layout from hla_deploy.ops.state)."""
    parts = hla_state_parts(variant, d, dv, normalize, ridge)
    out, off = {}, 0
    B, H = state.shape[:2]
    for name, shape in parts:
        size = int(np.prod(shape))
        out[name] = state[..., off:off + size].reshape(B, H, *shape)
        off += size
    if off != state.shape[-1]:
        raise ValueError(f"state has last dim {state.shape[-1]}, expected N={off}")
    return out, [name for name, _ in parts]


def _aug(mat, vec, normalize):
    """[B,H,d,dv] (+ [B,H,d]) -> [B,H,d,dv(+1)]."""
    return np.concatenate([mat, vec[..., None]], -1) if normalize else mat


def _unaug(mat, normalize):
    return (mat[..., :-1], mat[..., -1]) if normalize else (mat, None)


def hla_one_chunk(q, k, v, state, variant="hla2", decay=1.0, normalize=False, eps=1e-6,
                  ridge=0.0) -> Tuple[np.ndarray, np.ndarray]:
    """One HLARecurrentStep over T tokens as one chunk.

    q, k: [B,T,H,d]; v: [B,T,H,dv]; state: [B,H,N] (contract layout). Returns (o [B,T,H,dv],
    state_out [B,H,N]) in the dtype of q (use float64 for checks).
    """
    B, T, H, d = q.shape
    dv = v.shape[-1]
    dt = q.dtype
    Q, K, V = (x.transpose(0, 2, 1, 3) for x in (q, k, v))               # [B, H, T, *]
    if normalize:
        V = np.concatenate([V, np.ones(V.shape[:-1] + (1,), dt)], -1)     # [B, H, T, dv+1]
    Dg, L, a, b, gT = decay_factors(decay, H, T, dt)
    a_ = a[None, :, :, None]                                               # [1, H, T, 1]
    b_ = b[None, :, :, None]
    gT_ = gT[None, :, None, None]
    QK = Q @ K.swapaxes(-1, -2)                                            # [B, H, T, T]
    Wd = Dg * QK
    Wu = L * QK
    st, names = _split(state, variant, d, dv, normalize, ridge)
    new = {}
    if variant == "hla2":
        S0 = st["S"]
        M0 = _aug(st["M"], st.get("n"), normalize)
        QSQ = Q @ S0 @ Q.swapaxes(-1, -2)
        out = a_ ** 2 * (Q @ M0) + (Dg * (a_ * QSQ + Wd @ Wu.swapaxes(-1, -2))) @ V
        KQb = (b_ * b[None, :, None, :]) * (L.T * (K @ Q.swapaxes(-1, -2)))
        M1 = gT_ ** 2 * M0 + S0 @ Q.swapaxes(-1, -2) @ (gT_ * b_ * V) + K.swapaxes(-1, -2) @ (KQb @ V)
        new["S"] = gT_ * S0 + K.swapaxes(-1, -2) @ (b_ * K)
        new["M"], new["n"] = _unaug(M1, normalize)
        if ridge != 0.0:
            C0 = _aug(st["C"], st.get("m"), normalize)
            out = out + ridge * (a_ * (Q @ C0) + (Dg * (Q @ Q.swapaxes(-1, -2))) @ V)
            new["C"], new["m"] = _unaug(gT_ * C0 + Q.swapaxes(-1, -2) @ (b_ * V), normalize)
    elif variant == "ahla":
        P0 = _aug(st["P"], st.get("mK"), normalize)
        E0 = _aug(st["E"], st.get("n"), normalize)
        R = a_ * (Q @ P0) + Wd @ V
        out = a_ * (Q @ E0) + Wd @ R
        new["P"], new["mK"] = _unaug(gT_ * P0 + K.swapaxes(-1, -2) @ (b_ * V), normalize)
        new["E"], new["n"] = _unaug(gT_ * E0 + K.swapaxes(-1, -2) @ (b_ * R), normalize)
    else:  # hla3, gamma = 1
        g = np.asarray(decay, dtype=np.float64).reshape(-1)
        if np.any(g != 1.0):
            raise ValueError("hla3 requires decay == 1")
        S0 = st["S"]
        P0 = _aug(st["P"], st.get("mK"), normalize)
        F0 = _aug(st["F"], st.get("n"), normalize)
        R = Q @ P0 + Wu @ V
        out = Q @ F0 + (L * (Q @ S0 @ Q.swapaxes(-1, -2) + Wu @ Wu.swapaxes(-1, -2))) @ R
        F1 = F0 + S0 @ Q.swapaxes(-1, -2) @ R + K.swapaxes(-1, -2) @ ((L.T * (K @ Q.swapaxes(-1, -2))) @ R)
        new["S"] = S0 + K.swapaxes(-1, -2) @ K
        new["P"], new["mK"] = _unaug(P0 + K.swapaxes(-1, -2) @ V, normalize)
        new["F"], new["n"] = _unaug(F1, normalize)
    if normalize:
        o = out[..., :dv] / (out[..., dv:] + eps)
    else:
        o = out
    state_out = np.concatenate([new[nm].reshape(B, H, -1) for nm in names], -1)
    return o.transpose(0, 2, 1, 3), state_out
