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
normalize: a value column of ones (mK, n are P, E for v ≡ 1), as for hla2: `chunk_ahla_fwd_h_kernel`
scans vx = [v, 1] (the ones made in the kernel) and `chunk_ahla_fwd_o_kernel` computes the
denominator as float32 row sums (R1 = a1 (Q mK) + Wg 1, den = a1 (Q n) + Wg R1 + eps) and divides
(tl.div_rn), so every value block owns its denominator. The forward kernels read `state_in` and
write `state_out` in the contract layout, like chunk_fwd.py; T, H are runtime int32.
float16 inputs: P ~ t and E ~ t^2 (and R ~ t) outgrow float16 (65504) on long sequences. The
forward multiplies them on the tensor cores after a power-of-two rescale of their columns
(operand.dot_big_right); the backward kernels upcast q, k, v, dO to float32 and multiply in IEEE
float32 (operand.state_operand_dtype / state_precision); bfloat16 and float32 as before.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .operand import dot, dot_big_right, state_operand_dtype, state_precision
from .tile import load_state_cols, load_tile, load_vx, store_state_cols, store_tile


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


@triton.jit(do_not_specialize=["T", "H"])
def chunk_ahla_fwd_h_kernel(
    q, k, v,                      # [B, T, H, K] x2, [B, T, H, DV] (activation dtype)
    decay,                        # [H] float32
    state_in,                     # [B, H, N] float32, contract layout: P, E, [mK, n]
    ws_p, ws_e,                   # [B*H, NT, K, DV + NORM] x2 float32: P|mK, E|n before every chunk
    state_out,                    # [B, H, N] float32
    T, H,                         # int32
    K: tl.constexpr, DV: tl.constexpr, NORM: tl.constexpr, N: tl.constexpr,
    OFF_E: tl.constexpr, OFF_MK: tl.constexpr, OFF_N: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, F16: tl.constexpr, IEEE: tl.constexpr,
):
    VX = DV + NORM
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(decay + i_h))
    # this program owns columns [i_v*BV, +BV) of P|mK and E|n (all rows)
    s_in = state_in + i_bh.to(tl.int64) * N
    b_p = load_state_cols(s_in, 0, i_v * BV, K, DV, 0, OFF_MK, NORM, BD, BV)            # [BD, BV]
    b_e = load_state_cols(s_in, 0, i_v * BV, K, DV, OFF_E, OFF_N, NORM, BD, BV)         # [BD, BV]
    row0 = i_b.to(tl.int64) * T * H + i_h
    ws_bh = i_bh.to(tl.int64) * NT
    for i_t in range(0, NT):
        ws_off = (ws_bh + i_t) * K * VX
        store_tile(ws_p + ws_off, b_p, 0, i_v * BV, K, VX, VX, BD, BV)
        store_tile(ws_e + ws_off, b_e, 0, i_v * BV, K, VX, VX, BD, BV)
        b_q = load_tile(q + row0 * K, i_t * BT, 0, T, K, H * K, BT, BD)                # [BT, BD]
        b_k = load_tile(k + row0 * K, i_t * BT, 0, T, K, H * K, BT, BD)                # [BT, BD]
        b_v = load_vx(v + row0 * DV, i_t * BT, i_v * BV, T, DV, H * DV, NORM, BT, BV)  # [BT, BV]
        b_d1, b_a1, b_b, gc = _decays(lg, i_t, T, BT)
        b_wg = (b_d1 * dot(b_q, tl.trans(b_k), IEEE)).to(DT)                           # D1 ⊙ Q K^T
        b_r = b_a1[:, None] * dot_big_right(b_q, b_p, F16, IEEE) + dot(b_wg, b_v, IEEE)   # [BT, BV] (grows)
        b_kd = (b_k.to(tl.float32) * b_b[:, None]).to(DT)
        b_p = gc * b_p + dot(tl.trans(b_kd), b_v, IEEE)
        b_e = gc * b_e + dot_big_right(tl.trans(b_kd), b_r, F16, IEEE)
    s_out = state_out + i_bh.to(tl.int64) * N
    store_state_cols(s_out, b_p, 0, i_v * BV, K, DV, 0, OFF_MK, NORM, BD, BV)
    store_state_cols(s_out, b_e, 0, i_v * BV, K, DV, OFF_E, OFF_N, NORM, BD, BV)


@triton.jit(do_not_specialize=["T", "H"])
def chunk_ahla_fwd_o_kernel(
    q, k, v,                      # [B, T, H, K] x2, [B, T, H, DV]
    decay,                        # [H] float32
    ws_p, ws_e,                   # chunk_ahla_fwd_h_kernel's workspace
    o,                            # [B, T, H, DV] activation dtype (SAVE_DEN: float32 [B, T, H, DV + 1])
    T, H,                         # int32
    eps,                          # float32
    K: tl.constexpr, DV: tl.constexpr, NORM: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, F16: tl.constexpr, IEEE: tl.constexpr,
    SAVE_DEN: tl.constexpr,
):
    VX = DV + NORM
    OW = DV + SAVE_DEN
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(decay + i_h))
    row0 = i_b.to(tl.int64) * T * H + i_h
    ws_off = (i_bh.to(tl.int64) * NT + i_t) * K * VX
    b_q = load_tile(q + row0 * K, i_t * BT, 0, T, K, H * K, BT, BD)                    # [BT, BD]
    b_k = load_tile(k + row0 * K, i_t * BT, 0, T, K, H * K, BT, BD)                    # [BT, BD]
    b_v = load_tile(v + row0 * DV, i_t * BT, i_v * BV, T, DV, H * DV, BT, BV)          # [BT, BV]
    b_p = load_tile(ws_p + ws_off, 0, i_v * BV, K, DV, VX, BD, BV)                     # [BD, BV]
    b_e = load_tile(ws_e + ws_off, 0, i_v * BV, K, DV, VX, BD, BV)                     # [BD, BV]
    b_d1, b_a1, b_b, gc = _decays(lg, i_t, T, BT)
    b_wg32 = b_d1 * dot(b_q, tl.trans(b_k), IEEE)                                      # [BT, BT] D1 ⊙ Q K^T
    b_wg = b_wg32.to(DT)
    b_r = b_a1[:, None] * dot_big_right(b_q, b_p, F16, IEEE) + dot(b_wg, b_v, IEEE)    # [BT, BV] (grows)
    b_o = b_a1[:, None] * dot_big_right(b_q, b_e, F16, IEEE) + dot_big_right(b_wg, b_r, F16, IEEE)
    o_base = o + row0 * OW
    if NORM:
        r_d = tl.arange(0, BD)
        b_mk = tl.load(ws_p + ws_off + r_d * VX + DV, mask=r_d < K, other=0.0)         # [BD] mK
        b_n = tl.load(ws_e + ws_off + r_d * VX + DV, mask=r_d < K, other=0.0)          # [BD] n
        b_qf = b_q.to(tl.float32)
        b_r1 = b_a1 * tl.sum(b_qf * b_mk[None, :], axis=1) + tl.sum(b_wg32, axis=1)    # [BT] R's ones column
        b_den = b_a1 * tl.sum(b_qf * b_n[None, :], axis=1) + tl.sum(b_wg32 * b_r1[None, :], axis=1) + eps
        b_o = tl.div_rn(b_o, tl.broadcast_to(b_den[:, None], (BT, BV)))
        if SAVE_DEN:
            if i_v == 0:
                r_t = i_t * BT + tl.arange(0, BT)
                tl.store(o_base + r_t * (H * OW) + DV, b_den, mask=r_t < T)
    store_tile(o_base, b_o, i_t * BT, i_v * BV, T, DV, H * OW, BT, BV)


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
    DT = SDT  # operand dtype of the products (float32 for float16 inputs: operand.state_operand_dtype)
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
    DT = SDT  # operand dtype of the products (float32 for float16 inputs: operand.state_operand_dtype)
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


def _bwd_blocks(q, v):
    K, V = q.shape[-1], v.shape[-1]
    BD = max(16, triton.next_power_of_2(K))
    # float16 inputs compute the backward with float32 operands (the state outgrows float16): as float32
    BV = min(max(16, triton.next_power_of_2(V)), 64 if q.dtype == torch.bfloat16 else 32)
    return BD, BV, triton.cdiv(V, BV)


def chunk_ahla_bwd(q, k, v, do, gam, hp, he, dpt, det, chunk_size: int):
    """dq, dk [B,T,H,K], dv [B,T,H,V] (input dtype) and grads of the initial (P, E) [B*H, K, V].

    v, do: [B, T, H, V] with V = dv + normalize (vx and the numerator's gradient); hp, he: the
    states before every chunk [B*H, NT, K, V] (the forward's fwd_h workspace, recomputed)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT, NT = chunk_size, triton.cdiv(T, chunk_size)
    BD, BV, NV = _bwd_blocks(q, v)
    prec, sdt = state_precision(q.dtype), state_operand_dtype(q.dtype)
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
