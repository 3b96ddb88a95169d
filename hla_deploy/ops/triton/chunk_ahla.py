"""Chunk-parallel forward and backward of ahla (asymmetric second order) in Triton.

Recurrent step (docs/OP_CONTRACT.md): P = gP + k vᵀ, E = gE + k (qᵀP), o = qᵀE. Per chunk of c
tokens with carry (P, E) and the notation of chunk_fwd.py (D1, a1, b, Wg = D1 ⊙ Q Kᵀ, Kd = diag(b) K):

    R  = diag(a1) Q P + Wg V             (row i is q_iᵀ P_i: first-order linear attention)
    o  = diag(a1) Q E + Wg R
    P' = g^c P + Kdᵀ V                   E' = g^c E + Kdᵀ R

Backward, (dP', dE') = gradient of the state after the chunk:

    dR  = Wgᵀ dO + Kd dE'                dWg = dO Rᵀ + dR Vᵀ,  dWgm = D1 ⊙ dWg
    dQ  = diag(a1) (dO Eᵀ + dR Pᵀ) + dWgm K
    dK  = dWgmᵀ Q + diag(b) (V dP'ᵀ + R dE'ᵀ)
    dV  = Wgᵀ dR + Kd dP'
    dP  = g^c dP' + (diag(a1) Q)ᵀ dR     dE = g^c dE' + (diag(a1) Q)ᵀ dO    (reverse scan)

Every term is separable over value columns, so all kernels split the value dim into blocks;
dq, dk are partial sums over value blocks (summed on the host when there are several).
normalize: a value column of ones (mK, n are P, E for v ≡ 1), as for hla2.
float16 inputs: P ~ t and E ~ t^2 outgrow float16 (65504) on long sequences, and nearly every
product here involves them, so the kernels upcast q, k, v, dO to float32 and multiply in IEEE
float32 (chunk_fwd._state_operand_dtype / _state_precision); bfloat16 and float32 as before.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunk_fwd import _state_operand_dtype, _state_precision
from .tile import load_tile, store_tile


@triton.jit
def _decays(lg, i_t, T, BT: tl.constexpr):
    o_i = tl.arange(0, BT)
    m_ij = o_i[:, None] >= o_i[None, :]
    b_d1 = tl.where(m_ij, tl.exp2(lg * tl.maximum(o_i[:, None] - o_i[None, :], 0).to(tl.float32)), 0.0)
    b_a1 = tl.exp2(lg * (o_i + 1).to(tl.float32))
    c_len = tl.minimum(BT, T - i_t * BT)
    b_b = tl.where(o_i < c_len, tl.exp2(lg * tl.maximum(c_len - 1 - o_i, 0).to(tl.float32)), 0.0)
    gc = tl.exp2(lg * c_len.to(tl.float32))
    return b_d1, b_a1, b_b, gc


@triton.jit
def chunk_ahla_fwd_h_kernel(
    q, k, v, gam,                 # [B, T, H, K] x2, [B, T, H, V], [H]
    p0, e0,                       # [B*H, K, V] x2 float32 initial state
    hp, he,                       # [B*H, NT, K, V] x2 float32: state before every chunk
    pt, et,                       # [B*H, K, V] x2 float32: final state
    T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, PREC: tl.constexpr,
    SDT: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = SDT  # operand dtype of the products (float32 for float16 inputs: _state_operand_dtype)
    lg = tl.log2(tl.load(gam + i_h))
    b_p = tl.zeros([BD, BV], dtype=tl.float32)
    b_e = tl.zeros([BD, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_p = load_tile(p0 + i_bh * K * V, 0, i_v * BV, K, V, V, BD, BV)
        b_e = load_tile(e0 + i_bh * K * V, 0, i_v * BV, K, V, V, BD, BV)
    qk_off = (i_b * T * H + i_h) * K
    v_off = (i_b * T * H + i_h) * V
    for i_t in range(0, NT):
        s_off = (i_bh * NT + i_t) * K * V
        store_tile(hp + s_off, b_p, 0, i_v * BV, K, V, V, BD, BV)
        store_tile(he + s_off, b_e, 0, i_v * BV, K, V, V, BD, BV)
        b_q = load_tile(q + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
        b_k = load_tile(k + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
        b_v = load_tile(v + v_off, i_t * BT, i_v * BV, T, V, H * V, BT, BV).to(DT)
        b_d1, b_a1, b_b, gc = _decays(lg, i_t, T, BT)
        b_wg = (b_d1 * tl.dot(b_q, tl.trans(b_k), input_precision=PREC)).to(DT)
        b_r = b_a1[:, None] * tl.dot(b_q, b_p.to(DT), input_precision=PREC) \
            + tl.dot(b_wg, b_v, input_precision=PREC)                          # [BT, BV]
        b_kd = (b_k.to(tl.float32) * b_b[:, None]).to(DT)
        b_p = gc * b_p + tl.dot(tl.trans(b_kd), b_v, input_precision=PREC)
        b_e = gc * b_e + tl.dot(tl.trans(b_kd), b_r.to(DT), input_precision=PREC)
    if STORE_FINAL_STATE:
        store_tile(pt + i_bh * K * V, b_p, 0, i_v * BV, K, V, V, BD, BV)
        store_tile(et + i_bh * K * V, b_e, 0, i_v * BV, K, V, V, BD, BV)


@triton.jit
def chunk_ahla_fwd_o_kernel(
    q, k, v, gam, hp, he, o,
    T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
    SDT: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = SDT  # operand dtype of the products (float32 for float16 inputs: _state_operand_dtype)
    lg = tl.log2(tl.load(gam + i_h))
    qk_off = (i_b * T * H + i_h) * K
    v_off = (i_b * T * H + i_h) * V
    s_off = (i_bh * NT + i_t) * K * V
    b_q = load_tile(q + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
    b_k = load_tile(k + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
    b_v = load_tile(v + v_off, i_t * BT, i_v * BV, T, V, H * V, BT, BV).to(DT)
    b_p = load_tile(hp + s_off, 0, i_v * BV, K, V, V, BD, BV).to(DT)
    b_e = load_tile(he + s_off, 0, i_v * BV, K, V, V, BD, BV).to(DT)
    b_d1, b_a1, b_b, gc = _decays(lg, i_t, T, BT)
    b_wg = (b_d1 * tl.dot(b_q, tl.trans(b_k), input_precision=PREC)).to(DT)
    b_r = b_a1[:, None] * tl.dot(b_q, b_p, input_precision=PREC) + tl.dot(b_wg, b_v, input_precision=PREC)
    b_o = b_a1[:, None] * tl.dot(b_q, b_e, input_precision=PREC) + tl.dot(b_wg, b_r.to(DT), input_precision=PREC)
    store_tile(o + v_off, b_o, i_t * BT, i_v * BV, T, V, H * V, BT, BV)


@triton.jit
def chunk_ahla_bwd_dh_kernel(
    q, k, do, gam,
    dpt, det,                     # [B*H, K, V] x2: grad of the final state
    dhp, dhe,                     # [B*H, NT, K, V] x2: grad of the state after every chunk
    dp0, de0,                     # [B*H, K, V] x2: grad of the initial state
    T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    USE_FINAL_GRAD: tl.constexpr, PREC: tl.constexpr,
    SDT: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = SDT  # operand dtype of the products (float32 for float16 inputs: _state_operand_dtype)
    lg = tl.log2(tl.load(gam + i_h))
    b_dp = tl.zeros([BD, BV], dtype=tl.float32)
    b_de = tl.zeros([BD, BV], dtype=tl.float32)
    if USE_FINAL_GRAD:
        b_dp = load_tile(dpt + i_bh * K * V, 0, i_v * BV, K, V, V, BD, BV)
        b_de = load_tile(det + i_bh * K * V, 0, i_v * BV, K, V, V, BD, BV)
    qk_off = (i_b * T * H + i_h) * K
    v_off = (i_b * T * H + i_h) * V
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        s_off = (i_bh * NT + i_t) * K * V
        store_tile(dhp + s_off, b_dp, 0, i_v * BV, K, V, V, BD, BV)
        store_tile(dhe + s_off, b_de, 0, i_v * BV, K, V, V, BD, BV)
        b_q = load_tile(q + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
        b_k = load_tile(k + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
        b_do = load_tile(do + v_off, i_t * BT, i_v * BV, T, V, H * V, BT, BV).to(DT)
        b_d1, b_a1, b_b, gc = _decays(lg, i_t, T, BT)
        b_wg = (b_d1 * tl.dot(b_q, tl.trans(b_k), input_precision=PREC)).to(DT)
        b_kd = (b_k.to(tl.float32) * b_b[:, None]).to(DT)
        b_dr = tl.dot(tl.trans(b_wg), b_do, input_precision=PREC) \
            + tl.dot(b_kd, b_de.to(DT), input_precision=PREC)                  # [BT, BV]
        b_qs = (b_q.to(tl.float32) * b_a1[:, None]).to(DT)
        b_dp = gc * b_dp + tl.dot(tl.trans(b_qs), b_dr.to(DT), input_precision=PREC)
        b_de = gc * b_de + tl.dot(tl.trans(b_qs), b_do, input_precision=PREC)
    store_tile(dp0 + i_bh * K * V, b_dp, 0, i_v * BV, K, V, V, BD, BV)
    store_tile(de0 + i_bh * K * V, b_de, 0, i_v * BV, K, V, V, BD, BV)


@triton.jit
def chunk_ahla_bwd_dqkv_kernel(
    q, k, v, do, gam, hp, he, dhp, dhe,
    dq, dk, dv,                   # [NV, B, T, H, K] x2 (partials), [B, T, H, V]
    T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
    SDT: tl.constexpr,
):
    i_t, i_bh, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    B = tl.num_programs(1) // H
    DT = SDT  # operand dtype of the products (float32 for float16 inputs: _state_operand_dtype)
    lg = tl.log2(tl.load(gam + i_h))
    qk_off = (i_b * T * H + i_h) * K
    v_off = (i_b * T * H + i_h) * V
    s_off = (i_bh * NT + i_t) * K * V
    b_q = load_tile(q + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
    b_k = load_tile(k + qk_off, i_t * BT, 0, T, K, H * K, BT, BD).to(DT)
    b_v = load_tile(v + v_off, i_t * BT, i_v * BV, T, V, H * V, BT, BV).to(DT)
    b_do = load_tile(do + v_off, i_t * BT, i_v * BV, T, V, H * V, BT, BV).to(DT)
    b_p = load_tile(hp + s_off, 0, i_v * BV, K, V, V, BD, BV).to(DT)
    b_e = load_tile(he + s_off, 0, i_v * BV, K, V, V, BD, BV).to(DT)
    b_dpp = load_tile(dhp + s_off, 0, i_v * BV, K, V, V, BD, BV).to(DT)
    b_dep = load_tile(dhe + s_off, 0, i_v * BV, K, V, V, BD, BV).to(DT)
    b_d1, b_a1, b_b, gc = _decays(lg, i_t, T, BT)
    b_wg = (b_d1 * tl.dot(b_q, tl.trans(b_k), input_precision=PREC)).to(DT)
    b_kd = (b_k.to(tl.float32) * b_b[:, None]).to(DT)
    b_r = (b_a1[:, None] * tl.dot(b_q, b_p, input_precision=PREC)
           + tl.dot(b_wg, b_v, input_precision=PREC)).to(DT)                    # [BT, BV]
    b_dr = (tl.dot(tl.trans(b_wg), b_do, input_precision=PREC)
            + tl.dot(b_kd, b_dep, input_precision=PREC)).to(DT)                 # [BT, BV]
    b_dwg = b_d1 * (tl.dot(b_do, tl.trans(b_r), input_precision=PREC)
                    + tl.dot(b_dr, tl.trans(b_v), input_precision=PREC))
    b_dwg = b_dwg.to(DT)
    b_dq = b_a1[:, None] * (tl.dot(b_do, tl.trans(b_e), input_precision=PREC)
                            + tl.dot(b_dr, tl.trans(b_p), input_precision=PREC)) \
        + tl.dot(b_dwg, b_k, input_precision=PREC)
    b_dk = tl.dot(tl.trans(b_dwg), b_q, input_precision=PREC) \
        + b_b[:, None] * (tl.dot(b_v, tl.trans(b_dpp), input_precision=PREC)
                          + tl.dot(b_r, tl.trans(b_dep), input_precision=PREC))
    b_dv = tl.dot(tl.trans(b_wg), b_dr, input_precision=PREC) + tl.dot(b_kd, b_dpp, input_precision=PREC)
    part = i_v * B * T * H * K
    store_tile(dq + part + qk_off, b_dq, i_t * BT, 0, T, K, H * K, BT, BD)
    store_tile(dk + part + qk_off, b_dk, i_t * BT, 0, T, K, H * K, BT, BD)
    store_tile(dv + v_off, b_dv, i_t * BT, i_v * BV, T, V, H * V, BT, BV)


def _blocks(q, v):
    K, V = q.shape[-1], v.shape[-1]
    BD = max(16, triton.next_power_of_2(K))
    # float16 inputs compute with float32 operands (the state outgrows float16): as float32
    BV = min(max(16, triton.next_power_of_2(V)), 64 if q.dtype == torch.bfloat16 else 32)
    return BD, BV, triton.cdiv(V, BV)


def chunk_ahla_fwd(q, k, v, gam, p0, e0, chunk_size: int, output_final_state: bool, out_dtype,
                   keep_states: bool = False):
    """o [B, T, H, V] (+ final (P, E) [B*H, K, V] float32; + per-chunk states if keep_states)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT, NT = chunk_size, triton.cdiv(T, chunk_size)
    BD, BV, NV = _blocks(q, v)
    f32 = dict(dtype=torch.float32, device=q.device)
    hp = torch.empty(B * H, NT, K, V, **f32)
    he = torch.empty(B * H, NT, K, V, **f32)
    pt = torch.empty(B * H, K, V, **f32) if output_final_state else hp
    et = torch.empty(B * H, K, V, **f32) if output_final_state else he
    use_init = p0 is not None
    prec, sdt = _state_precision(q.dtype), _state_operand_dtype(q.dtype)
    chunk_ahla_fwd_h_kernel[(NV, B * H)](
        q, k, v, gam, p0 if use_init else hp, e0 if use_init else he, hp, he, pt, et,
        T, H=H, K=K, V=V, BT=BT, BD=BD, BV=BV, USE_INITIAL_STATE=use_init,
        STORE_FINAL_STATE=output_final_state, PREC=prec, SDT=sdt, num_warps=4, num_stages=2)
    o = torch.empty(B, T, H, V, dtype=out_dtype, device=q.device)
    chunk_ahla_fwd_o_kernel[(NV, NT, B * H)](
        q, k, v, gam, hp, he, o, T, H=H, K=K, V=V, BT=BT, BD=BD, BV=BV, PREC=prec, SDT=sdt,
        num_warps=4, num_stages=2)
    final = (pt, et) if output_final_state else None
    return o, final, ((hp, he) if keep_states else None)


def chunk_ahla_bwd(q, k, v, do, gam, p0, e0, dpt, det, chunk_size: int):
    """dq, dk [B,T,H,K], dv [B,T,H,V] (input dtype) and grads of the initial (P, E) [B*H, K, V]."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT, NT = chunk_size, triton.cdiv(T, chunk_size)
    BD, BV, NV = _blocks(q, v)
    prec, sdt = _state_precision(q.dtype), _state_operand_dtype(q.dtype)
    # the recomputed output is discarded: float32, so its normaliser column cannot overflow float16
    _, _, (hp, he) = chunk_ahla_fwd(q, k, v, gam, p0, e0, chunk_size, False, torch.float32,
                                    keep_states=True)
    f32 = dict(dtype=torch.float32, device=q.device)
    dhp = torch.empty(B * H, NT, K, V, **f32)
    dhe = torch.empty(B * H, NT, K, V, **f32)
    dp0 = torch.empty(B * H, K, V, **f32)
    de0 = torch.empty(B * H, K, V, **f32)
    use_final = dpt is not None
    chunk_ahla_bwd_dh_kernel[(NV, B * H)](
        q, k, do, gam, dpt if use_final else dp0, det if use_final else de0, dhp, dhe, dp0, de0,
        T, H=H, K=K, V=V, BT=BT, BD=BD, BV=BV, USE_FINAL_GRAD=use_final, PREC=prec, SDT=sdt,
        num_warps=4, num_stages=2)
    if NV == 1:
        dq, dk = torch.empty_like(q), torch.empty_like(k)
    else:
        dq = torch.empty(NV, *q.shape, **f32)
        dk = torch.empty(NV, *k.shape, **f32)
    dv = torch.empty_like(v)
    chunk_ahla_bwd_dqkv_kernel[(NT, B * H, NV)](
        q, k, v, do, gam, hp, he, dhp, dhe, dq, dk, dv,
        T, H=H, K=K, V=V, BT=BT, BD=BD, BV=BV, PREC=prec, SDT=sdt, num_warps=4, num_stages=1)
    if NV > 1:
        dq, dk = dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype)
    return dq, dk, dv, dp0, de0
