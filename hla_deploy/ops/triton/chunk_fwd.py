"""Chunk-parallel forward of hla2 (masked second order) in Triton.

Per (batch row b, head h), decay g, chunks of BT tokens with local rows i, j = 0..c-1 (c = the
chunk's length, BT except maybe for the last), carry (S, M, C) = the state before the chunk:

    P  = Q K^T            W = L ⊙ P            Wg = D1 ⊙ P       D1[i, j] = g^(i-j) [j <= i]
    a1 = g^(i+1)          a2 = a1^2            b = g^(c-1-i)     Qs = diag(a1) Q
    o  = diag(a2) Q M + λ diag(a1) Q C + (D1 ⊙ (Wg W^T + Qs S Q^T + λ Q Q^T)) V
    S' = g^c S + K^T diag(b) K
    C' = g^c C + Q^T diag(b) V
    M' = g^2c M + g^c S Q^T diag(b) V + K^T diag(b) (W^T diag(b) V)

(derived from the contract's recurrent step; hla_deploy/ops/triton/README.md shows the steps).
Two kernels, as fla's chunk_h / chunk_o:

- `chunk_hla2_fwd_h`: sequential over chunks, parallel over (row block of S/M, value block,
  b*h): writes the state before every chunk, hS [B*H, NT, d, d], hM / hC [B*H, NT, d, dvx]
  (float32) and the final state.
- `chunk_hla2_fwd_o`: parallel over (value block, chunk, b*h): the output o [B, T, H, dvx].

q, k [B, T, H, d], v [B, T, H, dvx]: float32, float16 or bfloat16 (contiguous). State and
accumulation float32. float32 inputs use IEEE float32 dots; 16-bit inputs feed the tensor cores
with operands in the input dtype (float32 accumulation), except that products with the state (or
a product of it) keep float32 operands (IEEE products) for float16 inputs, whose range the state outgrows
(`_state_operand_dtype`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .tile import load_tile, store_tile


@triton.jit
def chunk_hla2_fwd_h_kernel(
    q, k, v,                      # [B, T, H, K], [B, T, H, K], [B, T, H, V]
    gam,                          # [H] float32 decay
    s0, m0, c0,                   # [B*H, K, K], [B*H, K, V], [B*H, K, V] float32 (initial state)
    hs, hm, hc,                   # [B*H, NT, K, K], [B*H, NT, K, V] x2 float32 (state before chunk)
    st, mt, ct,                   # [B*H, K, K], [B*H, K, V] x2 float32 (final state)
    T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_C: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr,
    PREC: tl.constexpr, SDT: tl.constexpr, SPREC: tl.constexpr,
):
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(gam + i_h))

    # this program owns rows [i_k*BK, +BK) of S (all columns) and block (rows, [i_v*BV, +BV)) of M, C
    b_s = tl.zeros([BK, BD], dtype=tl.float32)
    b_m = tl.zeros([BK, BV], dtype=tl.float32)
    b_c = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_s = load_tile(s0 + i_bh * K * K, i_k * BK, 0, K, K, K, BK, BD)
        b_m = load_tile(m0 + i_bh * K * V, i_k * BK, i_v * BV, K, V, V, BK, BV)
        if HAS_C:
            b_c = load_tile(c0 + i_bh * K * V, i_k * BK, i_v * BV, K, V, V, BK, BV)

    o_i = tl.arange(0, BT)
    m_ij = o_i[:, None] >= o_i[None, :]
    q_base = q + (i_b * T * H + i_h) * K
    k_base = k + (i_b * T * H + i_h) * K
    v_base = v + (i_b * T * H + i_h) * V
    for i_t in range(0, NT):
        # state before chunk i_t
        if i_v == 0:
            store_tile(hs + (i_bh * NT + i_t) * K * K, b_s, i_k * BK, 0, K, K, K, BK, BD)
        store_tile(hm + (i_bh * NT + i_t) * K * V, b_m, i_k * BK, i_v * BV, K, V, V, BK, BV)
        if HAS_C:
            store_tile(hc + (i_bh * NT + i_t) * K * V, b_c, i_k * BK, i_v * BV, K, V, V, BK, BV)

        b_q = load_tile(q_base, i_t * BT, 0, T, K, H * K, BT, BD)      # [BT, BD]
        b_k = load_tile(k_base, i_t * BT, 0, T, K, H * K, BT, BD)      # [BT, BD]
        b_kr = load_tile(k_base, i_t * BT, i_k * BK, T, K, H * K, BT, BK)   # [BT, BK]
        b_v = load_tile(v_base, i_t * BT, i_v * BV, T, V, H * V, BT, BV)      # [BT, BV]

        c_len = tl.minimum(BT, T - i_t * BT)
        b_b = tl.where(o_i < c_len, tl.exp2(lg * tl.maximum(c_len - 1 - o_i, 0).to(tl.float32)), 0.0)
        gc = tl.exp2(lg * c_len.to(tl.float32))

        b_vd = (b_v.to(tl.float32) * b_b[:, None]).to(DT)                    # [BT, BV] diag(b) V
        b_p = tl.dot(b_q, tl.trans(b_k), input_precision=PREC)                 # [BT, BT] Q K^T
        b_w = tl.where(m_ij, b_p, 0.0).to(DT)                                  # L ⊙ P
        b_x = tl.dot(tl.trans(b_q), b_vd, input_precision=PREC)                # [BD, BV] Q^T diag(b) V
        b_z = tl.dot(tl.trans(b_w), b_vd, input_precision=PREC)                # [BT, BV] W^T diag(b) V
        b_kd = (b_kr.to(tl.float32) * b_b[:, None]).to(DT)                    # [BT, BK] diag(b) K rows
        b_m = gc * gc * b_m + gc * tl.dot(b_s.to(SDT), b_x.to(SDT), input_precision=SPREC) \
            + tl.dot(tl.trans(b_kd), b_z.to(DT), input_precision=PREC)
        if HAS_C:
            b_qr = load_tile(q_base, i_t * BT, i_k * BK, T, K, H * K, BT, BK)
            b_c = gc * b_c + tl.dot(tl.trans(b_qr), b_vd, input_precision=PREC)
        b_s = gc * b_s + tl.dot(tl.trans(b_kd), b_k, input_precision=PREC)

    if STORE_FINAL_STATE:
        if i_v == 0:
            store_tile(st + i_bh * K * K, b_s, i_k * BK, 0, K, K, K, BK, BD)
        store_tile(mt + i_bh * K * V, b_m, i_k * BK, i_v * BV, K, V, V, BK, BV)
        if HAS_C:
            store_tile(ct + i_bh * K * V, b_c, i_k * BK, i_v * BV, K, V, V, BK, BV)


@triton.jit
def chunk_hla2_fwd_o_kernel(
    q, k, v,                      # [B, T, H, K], [B, T, H, K], [B, T, H, V]
    gam,                          # [H] float32
    hs, hm, hc,                   # state before each chunk (float32)
    o,                            # [B, T, H, V] (q's dtype, or float32 when normalising afterwards)
    lam,                          # ridge λ
    T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_C: tl.constexpr, PREC: tl.constexpr, SDT: tl.constexpr, SPREC: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(gam + i_h))

    o_i = tl.arange(0, BT)
    m_ij = o_i[:, None] >= o_i[None, :]
    b_d1 = tl.where(m_ij, tl.exp2(lg * tl.maximum(o_i[:, None] - o_i[None, :], 0).to(tl.float32)), 0.0)
    b_a1 = tl.exp2(lg * (o_i + 1).to(tl.float32))                            # g^(i+1)

    b_q = load_tile(q + (i_b * T * H + i_h) * K, i_t * BT, 0, T, K, H * K, BT, BD)
    b_k = load_tile(k + (i_b * T * H + i_h) * K, i_t * BT, 0, T, K, H * K, BT, BD)
    b_v = load_tile(v + (i_b * T * H + i_h) * V, i_t * BT, i_v * BV, T, V, H * V, BT, BV)
    b_s = load_tile(hs + (i_bh * NT + i_t) * K * K, 0, 0, K, K, K, BD, BD)
    b_m = load_tile(hm + (i_bh * NT + i_t) * K * V, 0, i_v * BV, K, V, V, BD, BV)

    b_p = tl.dot(b_q, tl.trans(b_k), input_precision=PREC)                     # [BT, BT]
    b_w = tl.where(m_ij, b_p, 0.0).to(DT)                                      # L ⊙ P
    b_wg = (b_d1 * b_p).to(DT)                                                 # D1 ⊙ P
    b_qx = b_q.to(SDT)                                                         # Q as a state-product operand
    b_qs = (b_q.to(tl.float32) * b_a1[:, None]).to(SDT)                        # diag(a1) Q
    b_qss = tl.dot(b_qs, b_s.to(SDT), input_precision=SPREC)                    # [BT, BD] Qs S (grows with t)
    b_a = tl.dot(b_wg, tl.trans(b_w), input_precision=PREC)
    b_a += tl.dot(b_qss.to(SDT), tl.trans(b_qx), input_precision=SPREC)
    b_o = tl.dot(b_qx, b_m.to(SDT), input_precision=SPREC) * (b_a1 * b_a1)[:, None]
    if HAS_C:
        b_a += lam * tl.dot(b_q, tl.trans(b_q), input_precision=PREC)
        b_c = load_tile(hc + (i_bh * NT + i_t) * K * V, 0, i_v * BV, K, V, V, BD, BV)
        b_o += lam * b_a1[:, None] * tl.dot(b_qx, b_c.to(SDT), input_precision=SPREC)
    b_a = (b_a * b_d1).to(SDT)                                                 # A holds Qs S Q^T
    b_o += tl.dot(b_a, b_v.to(SDT), input_precision=SPREC)
    store_tile(o + (i_b * T * H + i_h) * V, b_o, i_t * BT, i_v * BV, T, V, H * V, BT, BV)


# default (block_k, block_v) of chunk_hla2_fwd_h (benchmarks/bench_prefill.py --sweep times others)
FWD_H_BLOCKS = [32, 32]


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _state_operand_dtype(dtype: torch.dtype):
    """Operand dtype (SDT) of the matrix products that involve the state or a product of it.

    The state grows with the sequence: with decay 1, S and C ~ t and M ~ t^2 (M reached 1.2e5
    at T = 1030, d = 64, normalize: its normaliser column). float16 tops out at 65504, so
    casting those tiles to float16 for the tensor cores gave inf and then NaN (issue 12,
    test_model_head_dims[f16-norm-ridge]). For float16 inputs these products therefore keep
    float32 operands, multiplied in IEEE float32 (`_state_precision`).
    bfloat16 has float32's range and keeps its own operands; float32 is float32 already."""
    if dtype == torch.float16:
        return tl.float32
    return tl.bfloat16 if dtype == torch.bfloat16 else tl.float32


def _state_precision(dtype: torch.dtype) -> str:
    """input_precision (SPREC) of the products with SDT operands: IEEE float32 for float16 inputs.
    Not TF32, whose 10-bit mantissa is float16's: at T = 1030 (d = 64, normalize, Triton
    interpreter) the state in float32 but dO rounded to float16 before these products gave dq
    9.4e-3 relative RMS off the float64 reference (large terms of the normaliser's gradient
    cancel); float32 operands throughout give 3.3e-4. bfloat16: bf16 operands, as before."""
    return "ieee" if dtype in (torch.float16, torch.float32) else _prec(dtype)


def chunk_hla2_fwd_h(q, k, v, gam, s0, m0, c0, chunk_size: int, output_final_state: bool,
                     has_c: bool, block_k: Optional[int] = None, block_v: Optional[int] = None,
                     num_warps: int = 4) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], tuple]:
    """States before every chunk (+ final state). q, k [B,T,H,K], v [B,T,H,V] -> hS [B*H,NT,K,K], hM/hC [B*H,NT,K,V].

    block_k / block_v: rows of S/M and columns of M/C per program (default FWD_H_BLOCKS; the
    sequential scan's parallelism is (d / block_k) * (dv / block_v) * B * H programs).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    NT = triton.cdiv(T, BT)
    BD = max(16, triton.next_power_of_2(K))
    BVf = max(16, triton.next_power_of_2(V))
    BK = min(BD, block_k or FWD_H_BLOCKS[0])
    BV = min(BVf, block_v or FWD_H_BLOCKS[1])
    f32 = dict(dtype=torch.float32, device=q.device)
    hs = torch.empty(B * H, NT, K, K, **f32)
    hm = torch.empty(B * H, NT, K, V, **f32)
    hc = torch.empty(B * H, NT, K, V, **f32) if has_c else hm
    if output_final_state:
        st = torch.empty(B * H, K, K, **f32)
        mt = torch.empty(B * H, K, V, **f32)
        ct = torch.empty(B * H, K, V, **f32) if has_c else None
    else:
        st = mt = ct = None
    use_init = s0 is not None
    grid = (triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)
    chunk_hla2_fwd_h_kernel[grid](
        q, k, v, gam,
        s0 if use_init else hs, m0 if use_init else hm, (c0 if (use_init and has_c) else hm),
        hs, hm, hc,
        st if st is not None else hs, mt if mt is not None else hm, ct if ct is not None else hm,
        T, H=H, K=K, V=V, BT=BT, BK=BK, BD=BD, BV=BV,
        HAS_C=has_c, USE_INITIAL_STATE=use_init, STORE_FINAL_STATE=output_final_state,
        PREC=_prec(q.dtype), SDT=_state_operand_dtype(q.dtype), SPREC=_state_precision(q.dtype),
        num_warps=num_warps, num_stages=2,
    )
    return hs, hm, (hc if has_c else None), (st, mt, ct)


def chunk_hla2_fwd_o(q, k, v, gam, hs, hm, hc, lam: float, chunk_size: int,
                     out_dtype: torch.dtype) -> torch.Tensor:
    """Output o [B, T, H, V] from the per-chunk states."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    NT = triton.cdiv(T, BT)
    BD = max(16, triton.next_power_of_2(K))
    BV = max(16, triton.next_power_of_2(V))
    o = torch.empty(B, T, H, V, dtype=out_dtype, device=q.device)
    grid = (triton.cdiv(V, BV), NT, B * H)
    chunk_hla2_fwd_o_kernel[grid](
        q, k, v, gam, hs, hm, hc if hc is not None else hm, o, float(lam),
        T, H=H, K=K, V=V, BT=BT, BD=BD, BV=BV, HAS_C=hc is not None, PREC=_prec(q.dtype),
        SDT=_state_operand_dtype(q.dtype), SPREC=_state_precision(q.dtype), num_warps=4, num_stages=2,
    )
    return o
