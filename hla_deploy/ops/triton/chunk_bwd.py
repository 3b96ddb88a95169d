"""Chunk-parallel backward of hla2 in Triton (hand-derived reverse mode of chunk_fwd.py).

Notation as in chunk_fwd.py; per chunk (S, M, C) is the state before the chunk and
(dS', dM', dC') the gradient of the loss with respect to the state after it.

Reverse scan over chunks (`chunk_hla2_bwd_dh`, like fla's chunk_bwd_dh), G = D1 ⊙ (dO V^T):

    dS = g^c dS' + g^c dM' X^T + Qs^T G Q           X = Q^T diag(b) V
    dM = g^2c dM' + (diag(a2) Q)^T dO
    dC = g^c dC' + λ Qs^T dO

It stores (dS', dM', dC') for every chunk and returns the gradient of the initial state.
Chunk-local gradients (`chunk_hla2_bwd_dqkv`, parallel over chunks), with Vd = diag(b) V,
Kd = diag(b) K, Z = W^T Vd, dZ = Kd dM', E = dC' + g^c S^T dM', A the forward's intra matrix:

    dWg = G W                 dW = G^T Wg + Vd dZ^T          dP = D1 ⊙ dWg + L ⊙ dW
    dQ  = dP K + diag(a2) dO M^T + λ diag(a1) dO C^T + diag(a1) G Q S^T + G^T Qs S
          + λ (G + G^T) Q + Vd E^T
    dK  = dP^T Q + diag(b) K (dS' + dS'^T) + diag(b) Z dM'^T
    dV  = A^T dO + diag(b) (Q E + W dZ)

State and accumulation float32; dq, dk, dv are written in the input dtype. Products with the
state, its gradient or a product of them keep float32 operands for float16 inputs (they outgrow
float16's range on long sequences: operand.state_operand_dtype; the forward rescales instead).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .operand import input_precision as _prec
from .operand import state_operand_dtype as _state_operand_dtype
from .operand import state_precision as _state_precision
from .tile import load_tile, store_tile


@triton.jit
def chunk_hla2_bwd_dh_kernel(
    q, v, do,                     # [B, T, H, K], [B, T, H, V], [B, T, H, V]
    gam,                          # [H] float32
    dst, dmt, dct,                # [B*H, K, K], [B*H, K, V] x2 float32: grad of the final state
    dhs, dhm, dhc,                # [B*H, NT, K, K], [B*H, NT, K, V] x2: grad of the state after chunk
    ds0, dm0, dc0,                # [B*H, K, K], [B*H, K, V] x2: grad of the initial state
    lam,
    T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_C: tl.constexpr, USE_FINAL_GRAD: tl.constexpr, PREC: tl.constexpr,
    SDT: tl.constexpr, SPREC: tl.constexpr,
):
    i_k, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(gam + i_h))

    # this program owns rows [i_k*BK, +BK) of dS, dM, dC
    b_ds = tl.zeros([BK, BD], dtype=tl.float32)
    b_dm = tl.zeros([BK, BV], dtype=tl.float32)
    b_dc = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FINAL_GRAD:
        b_ds = load_tile(dst + i_bh * K * K, i_k * BK, 0, K, K, K, BK, BD)
        b_dm = load_tile(dmt + i_bh * K * V, i_k * BK, 0, K, V, V, BK, BV)
        if HAS_C:
            b_dc = load_tile(dct + i_bh * K * V, i_k * BK, 0, K, V, V, BK, BV)

    o_i = tl.arange(0, BT)
    m_ij = o_i[:, None] >= o_i[None, :]
    b_d1 = tl.where(m_ij, tl.exp2(lg * tl.maximum(o_i[:, None] - o_i[None, :], 0).to(tl.float32)), 0.0)
    b_a1 = tl.exp2(lg * (o_i + 1).to(tl.float32))
    q_base = q + (i_b * T * H + i_h) * K
    v_base = v + (i_b * T * H + i_h) * V
    do_base = do + (i_b * T * H + i_h) * V
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        store_tile(dhs + (i_bh * NT + i_t) * K * K, b_ds, i_k * BK, 0, K, K, K, BK, BD)
        store_tile(dhm + (i_bh * NT + i_t) * K * V, b_dm, i_k * BK, 0, K, V, V, BK, BV)
        if HAS_C:
            store_tile(dhc + (i_bh * NT + i_t) * K * V, b_dc, i_k * BK, 0, K, V, V, BK, BV)

        b_q = load_tile(q_base, i_t * BT, 0, T, K, H * K, BT, BD)      # [BT, BD]
        b_qr = load_tile(q_base, i_t * BT, i_k * BK, T, K, H * K, BT, BK)   # [BT, BK]
        b_v = load_tile(v_base, i_t * BT, 0, T, V, H * V, BT, BV)      # [BT, BV]
        b_do = load_tile(do_base, i_t * BT, 0, T, V, H * V, BT, BV).to(SDT)     # float32 with normalize

        c_len = tl.minimum(BT, T - i_t * BT)
        b_b = tl.where(o_i < c_len, tl.exp2(lg * tl.maximum(c_len - 1 - o_i, 0).to(tl.float32)), 0.0)
        gc = tl.exp2(lg * c_len.to(tl.float32))

        b_vd = (b_v.to(tl.float32) * b_b[:, None]).to(DT)
        b_x = tl.dot(tl.trans(b_q), b_vd, input_precision=PREC)                # [BD, BV]
        b_g = (b_d1 * tl.dot(b_do, tl.trans(b_v.to(SDT)), input_precision=SPREC)).to(SDT)   # [BT, BT]
        b_qsr = (b_qr.to(tl.float32) * b_a1[:, None]).to(SDT)                  # [BT, BK]
        b_qg = tl.dot(tl.trans(b_qsr), b_g, input_precision=SPREC)              # [BK, BT]
        b_ds = gc * b_ds + gc * tl.dot(b_dm.to(SDT), tl.trans(b_x).to(SDT), input_precision=SPREC) \
            + tl.dot(b_qg.to(SDT), b_q.to(SDT), input_precision=SPREC)
        if HAS_C:
            b_dc = gc * b_dc + lam * tl.dot(tl.trans(b_qsr), b_do, input_precision=SPREC)
        b_qs2r = (b_qr.to(tl.float32) * (b_a1 * b_a1)[:, None]).to(SDT)
        b_dm = gc * gc * b_dm + tl.dot(tl.trans(b_qs2r), b_do, input_precision=SPREC)

    store_tile(ds0 + i_bh * K * K, b_ds, i_k * BK, 0, K, K, K, BK, BD)
    store_tile(dm0 + i_bh * K * V, b_dm, i_k * BK, 0, K, V, V, BK, BV)
    if HAS_C:
        store_tile(dc0 + i_bh * K * V, b_dc, i_k * BK, 0, K, V, V, BK, BV)


@triton.jit
def chunk_hla2_bwd_dqkv_kernel(
    q, k, v, do,                  # [B, T, H, K] x2, [B, T, H, V] x2
    gam,
    hs, hm, hc,                   # state before each chunk (float32)
    dhs, dhm, dhc,                # grad of the state after each chunk (float32)
    dq, dk, dv,                   # [NV, B, T, H, K] x2 (partial sums over value blocks), [B, T, H, V]
    lam,
    T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_C: tl.constexpr, PREC: tl.constexpr, SDT: tl.constexpr, SPREC: tl.constexpr,
):
    # value block i_v: columns [i_v*BV, +BV) of v, do, M, C, dM', dC'; dq, dk are linear in those
    # blocks, so each program writes its partial dq, dk (summed on the host when NV > 1)
    i_t, i_bh, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    B = tl.num_programs(1) // H
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(gam + i_h))

    o_i = tl.arange(0, BT)
    m_ij = o_i[:, None] >= o_i[None, :]
    b_d1 = tl.where(m_ij, tl.exp2(lg * tl.maximum(o_i[:, None] - o_i[None, :], 0).to(tl.float32)), 0.0)
    b_a1 = tl.exp2(lg * (o_i + 1).to(tl.float32))
    c_len = tl.minimum(BT, T - i_t * BT)
    b_b = tl.where(o_i < c_len, tl.exp2(lg * tl.maximum(c_len - 1 - o_i, 0).to(tl.float32)), 0.0)
    gc = tl.exp2(lg * c_len.to(tl.float32))

    qk_off = (i_b * T * H + i_h) * K
    v_off = (i_b * T * H + i_h) * V
    b_q = load_tile(q + qk_off, i_t * BT, 0, T, K, H * K, BT, BD)
    b_k = load_tile(k + qk_off, i_t * BT, 0, T, K, H * K, BT, BD)
    b_v = load_tile(v + v_off, i_t * BT, i_v * BV, T, V, H * V, BT, BV)
    b_dor = load_tile(do + v_off, i_t * BT, i_v * BV, T, V, H * V, BT, BV)      # float32 with normalize
    s_off = (i_bh * NT + i_t) * K * K
    m_off = (i_bh * NT + i_t) * K * V
    # SDT: operand dtype of every product with the state, its gradient or a product of them
    # (they grow with the sequence; float32 for float16 inputs, see operand.state_operand_dtype)
    b_s = load_tile(hs + s_off, 0, 0, K, K, K, BD, BD).to(SDT)
    b_m = load_tile(hm + m_off, 0, i_v * BV, K, V, V, BD, BV).to(SDT)
    b_dsp = load_tile(dhs + s_off, 0, 0, K, K, K, BD, BD)
    b_dmp = load_tile(dhm + m_off, 0, i_v * BV, K, V, V, BD, BV).to(SDT)

    b_a1c = b_a1[:, None]
    b_qx, b_kx, b_dox = b_q.to(SDT), b_k.to(SDT), b_dor.to(SDT)                # the same, as SDT operands
    b_qs = (b_q.to(tl.float32) * b_a1c).to(SDT)                                # diag(a1) Q
    b_vd = (b_v.to(tl.float32) * b_b[:, None]).to(DT)                          # diag(b) V
    b_kd = (b_k.to(tl.float32) * b_b[:, None]).to(SDT)                         # diag(b) K
    b_vdx = b_vd.to(SDT)
    b_p = tl.dot(b_q, tl.trans(b_k), input_precision=PREC)                     # [BT, BT] Q K^T
    # the within-chunk matrices take SDT operands too (float32 IEEE for float16 inputs: with float16
    # operands dq of test_float16_state_beyond_float16_range sat at its 3e-3 bound; docs/GPU.md)
    b_w = tl.where(m_ij, b_p, 0.0).to(SDT)                                     # L ⊙ P
    b_wg = (b_d1 * b_p).to(SDT)                                                # D1 ⊙ P
    b_qss = tl.dot(b_qs, b_s, input_precision=SPREC).to(SDT)                    # [BT, BD] Qs S

    # forward intra matrix A (recomputed)
    b_a = tl.dot(b_wg, tl.trans(b_w), input_precision=SPREC) + tl.dot(b_qss, tl.trans(b_qx), input_precision=SPREC)
    # G = D1 ⊙ dO V^T
    b_g = b_d1 * tl.dot(b_dox, tl.trans(b_v.to(SDT)), input_precision=SPREC)  # meets S, M: SDT
    if HAS_C:
        b_a += lam * tl.dot(b_q, tl.trans(b_q), input_precision=PREC)
    b_a = (b_a * b_d1).to(SDT)
    b_gt = b_g.to(SDT)
    b_gx = b_g.to(SDT)

    b_dz = tl.dot(b_kd, b_dmp, input_precision=SPREC).to(SDT)                   # [BT, BV] Kd dM'
    b_z = tl.dot(tl.trans(b_w), b_vdx, input_precision=SPREC)                  # [BT, BV] W^T Vd
    b_dwg = tl.dot(b_gt, b_w, input_precision=SPREC)                           # G W
    b_dw = tl.dot(tl.trans(b_gt), b_wg, input_precision=SPREC) \
        + tl.dot(b_vdx, tl.trans(b_dz), input_precision=SPREC)                  # G^T Wg + Vd dZ^T
    b_dp = (b_d1 * b_dwg + tl.where(m_ij, b_dw, 0.0)).to(SDT)
    # E = dC' + g^c S^T dM'   [BD, BV]
    b_e = gc * tl.dot(tl.trans(b_s), b_dmp, input_precision=SPREC)
    if HAS_C:
        b_dcp = load_tile(dhc + m_off, 0, i_v * BV, K, V, V, BD, BV)
        b_e += b_dcp
    b_e = b_e.to(SDT)

    # dQ
    b_dq = tl.dot(b_dp, b_kx, input_precision=SPREC)
    b_dq += (b_a1c * b_a1c) * tl.dot(b_dox, tl.trans(b_m), input_precision=SPREC)
    b_qst = tl.dot(b_qx, tl.trans(b_s), input_precision=SPREC).to(SDT)          # Q S^T
    b_dq += b_a1c * tl.dot(b_gx, b_qst, input_precision=SPREC)
    b_dq += tl.dot(tl.trans(b_gx), b_qss, input_precision=SPREC)
    b_dq += tl.dot(b_vdx, tl.trans(b_e), input_precision=SPREC)
    if HAS_C:
        b_c = load_tile(hc + m_off, 0, i_v * BV, K, V, V, BD, BV).to(SDT)
        b_dq += lam * b_a1c * tl.dot(b_dox, tl.trans(b_c), input_precision=SPREC)
        b_gsym = (b_g + tl.trans(b_g)).to(SDT)
        b_dq += lam * tl.dot(b_gsym, b_qx, input_precision=SPREC)
    # dK
    b_dk = tl.dot(tl.trans(b_dp), b_qx, input_precision=SPREC)
    if i_v == 0:
        b_dsym = (b_dsp + tl.trans(b_dsp)).to(SDT)
        b_dk += tl.dot(b_kd, b_dsym, input_precision=SPREC)
    b_dk += b_b[:, None] * tl.dot(b_z.to(SDT), tl.trans(b_dmp), input_precision=SPREC)
    # dV
    b_dv = tl.dot(tl.trans(b_a), b_dox, input_precision=SPREC)
    b_dv += b_b[:, None] * (tl.dot(b_qx, b_e, input_precision=SPREC) + tl.dot(b_w.to(SDT), b_dz, input_precision=SPREC))

    part = i_v * B * T * H * K
    store_tile(dq + part + qk_off, b_dq, i_t * BT, 0, T, K, H * K, BT, BD)
    store_tile(dk + part + qk_off, b_dk, i_t * BT, 0, T, K, H * K, BT, BD)
    store_tile(dv + v_off, b_dv, i_t * BT, i_v * BV, T, V, H * V, BT, BV)


def chunk_hla2_bwd_dh(q, v, do, gam, dst, dmt, dct, lam: float, chunk_size: int, has_c: bool):
    """Reverse scan: grads of the state after every chunk and of the initial state."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    NT = triton.cdiv(T, BT)
    BD = max(16, triton.next_power_of_2(K))
    BV = max(16, triton.next_power_of_2(V))
    BK = min(BD, 32)
    f32 = dict(dtype=torch.float32, device=q.device)
    dhs = torch.empty(B * H, NT, K, K, **f32)
    dhm = torch.empty(B * H, NT, K, V, **f32)
    dhc = torch.empty(B * H, NT, K, V, **f32) if has_c else None
    ds0 = torch.empty(B * H, K, K, **f32)
    dm0 = torch.empty(B * H, K, V, **f32)
    dc0 = torch.empty(B * H, K, V, **f32) if has_c else None
    use_final = dst is not None
    grid = (triton.cdiv(K, BK), B * H)
    chunk_hla2_bwd_dh_kernel[grid](
        q, v, do, gam,
        dst if use_final else ds0, dmt if use_final else dm0,
        (dct if (use_final and has_c) else dm0),
        dhs, dhm, dhc if has_c else dhm, ds0, dm0, dc0 if has_c else dm0, float(lam),
        T, H=H, K=K, V=V, BT=BT, BK=BK, BD=BD, BV=BV,
        HAS_C=has_c, USE_FINAL_GRAD=use_final, PREC=_prec(q.dtype),
        SDT=_state_operand_dtype(q.dtype), SPREC=_state_precision(q.dtype),
        num_warps=4, num_stages=2,
    )
    return (dhs, dhm, dhc), (ds0, dm0, dc0)


def chunk_hla2_bwd_dqkv(q, k, v, do, gam, hs, hm, hc, dhs, dhm, dhc, lam: float, chunk_size: int):
    """Chunk-local gradients dq, dk [B,T,H,K], dv [B,T,H,V] in the input dtype."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    NT = triton.cdiv(T, BT)
    BD = max(16, triton.next_power_of_2(K))
    # value blocks of at most 64 (32 for float32 inputs, and for float16 ones, whose state products
    # have float32 operands too) columns keep the kernel within shared memory
    BV = min(max(16, triton.next_power_of_2(V)), 64 if q.dtype == torch.bfloat16 else 32)
    NV = triton.cdiv(V, BV)
    if NV == 1:
        dq = torch.empty_like(q)
        dk = torch.empty_like(k)
    else:
        dq = torch.empty(NV, *q.shape, dtype=torch.float32, device=q.device)
        dk = torch.empty(NV, *k.shape, dtype=torch.float32, device=q.device)
    dv = torch.empty_like(v)
    has_c = hc is not None
    grid = (NT, B * H, NV)
    chunk_hla2_bwd_dqkv_kernel[grid](
        q, k, v, do, gam, hs, hm, hc if has_c else hm, dhs, dhm, dhc if has_c else dhm,
        dq, dk, dv, float(lam),
        T, H=H, K=K, V=V, BT=BT, BD=BD, BV=BV, HAS_C=has_c, PREC=_prec(q.dtype),
        SDT=_state_operand_dtype(q.dtype), SPREC=_state_precision(q.dtype),
        num_warps=8 if BD * BV >= 64 * 64 else 4, num_stages=1,
    )
    if NV > 1:
        dq, dk = dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype)
    return dq, dk, dv
