"""Chunk-parallel forward of hla2 (masked second order) in Triton: the two kernels of a prefill.

Per (batch row b, head h), decay g, chunks of BT tokens with local rows i, j = 0..c-1 (c = the
chunk's length, BT except maybe for the last), carry (S, M, C) = the state before the chunk:

    P  = Q K^T            W = L ⊙ P            Wg = D1 ⊙ P       D1[i, j] = g^(i-j) [j <= i]
    a1 = g^(i+1)          a2 = a1^2            b = g^(c-1-i)     Qs = diag(a1) Q
    A  = D1 ⊙ (Wg W^T + Qs S Q^T + λ Q Q^T)
    o  = diag(a2) Q M + λ diag(a1) Q C + A V
    S' = g^c S + K^T diag(b) K
    C' = g^c C + Q^T diag(b) V
    M' = g^2c M + g^c S Q^T diag(b) V + K^T diag(b) (W^T diag(b) V)

(derived from the contract's recurrent step; hla_deploy/ops/triton/README.md shows the steps).
normalize: n and m are M and C for a value column of ones, so `chunk_hla2_fwd_h` scans vx = [v, 1]
(dv + 1 columns, the ones made in the kernel), and `chunk_hla2_fwd_o` computes the denominator
den = a2 (Q n) + λ a1 (Q m) + A 1 + eps as float32 row sums and divides (IEEE, tl.div_rn).

- `chunk_hla2_fwd_h_kernel`: sequential over chunks, parallel over (row block of S/M, value
  block, b*h): reads the initial state from `state_in` and writes the final state to `state_out`
  (contract layout [B, H, N] float32, part offsets as constexprs), and the state before every chunk
  into the workspace: ws_s [B*H, NT, d, d], ws_m / ws_c [B*H, NT, d, dv + normalize] float32.
- `chunk_hla2_fwd_o_kernel`: parallel over (value block, chunk, b*h): o [B, T, H, dv] in the
  activation dtype. SAVE_DEN (training's backward only, never in the launch plan): o is float32
  [B, T, H, dv + 1] and column dv holds den.

T and H are runtime int32 (`do_not_specialize`: the JIT compiles the code the AOT signature gives).
Which launches, constexprs, grids and workspace: launch_plan.py. Operand dtypes: operand.py.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .operand import dot, dot_big_left, dot_big_right
from .tile import load_state_cols, load_tile, load_vx, store_state_cols, store_tile


@triton.jit(do_not_specialize=["T", "H"])
def chunk_hla2_fwd_h_kernel(
    q, k, v,                      # [B, T, H, K], [B, T, H, K], [B, T, H, DV] (activation dtype)
    decay,                        # [H] float32
    state_in,                     # [B, H, N] float32, contract layout: S, M, [n], [C, [m]]
    ws_s, ws_m, ws_c,             # [B*H, NT, K, K], [B*H, NT, K, DV + NORM] x2 float32: state before each chunk
    state_out,                    # [B, H, N] float32 (must not be state_in: launch_plan.Plan.in_place)
    T, H,                         # int32
    K: tl.constexpr, DV: tl.constexpr, NORM: tl.constexpr, HAS_C: tl.constexpr, N: tl.constexpr,
    OFF_M: tl.constexpr, OFF_N: tl.constexpr, OFF_C: tl.constexpr, OFF_MC: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    F16: tl.constexpr, IEEE: tl.constexpr,
):
    VX = DV + NORM
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(decay + i_h))

    # this program owns rows [i_k*BK, +BK) of S (all columns) and block (rows, [i_v*BV, +BV)) of M|n, C|m
    s_in = state_in + i_bh.to(tl.int64) * N
    b_s = load_tile(s_in, i_k * BK, 0, K, K, K, BK, BD)                                # [BK, BD]
    b_m = load_state_cols(s_in, i_k * BK, i_v * BV, K, DV, OFF_M, OFF_N, NORM, BK, BV)  # [BK, BV]
    b_c = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_C:
        b_c = load_state_cols(s_in, i_k * BK, i_v * BV, K, DV, OFF_C, OFF_MC, NORM, BK, BV)

    o_i = tl.arange(0, BT)
    m_ij = o_i[:, None] >= o_i[None, :]
    row0 = i_b.to(tl.int64) * T * H + i_h                                             # token 0 of (b, h)
    q_base, k_base, v_base = q + row0 * K, k + row0 * K, v + row0 * DV
    ws_bh = i_bh.to(tl.int64) * NT
    for i_t in range(0, NT):
        # state before chunk i_t
        if i_v == 0:
            store_tile(ws_s + (ws_bh + i_t) * K * K, b_s, i_k * BK, 0, K, K, K, BK, BD)
        store_tile(ws_m + (ws_bh + i_t) * K * VX, b_m, i_k * BK, i_v * BV, K, VX, VX, BK, BV)
        if HAS_C:
            store_tile(ws_c + (ws_bh + i_t) * K * VX, b_c, i_k * BK, i_v * BV, K, VX, VX, BK, BV)

        b_q = load_tile(q_base, i_t * BT, 0, T, K, H * K, BT, BD)                     # [BT, BD]
        b_k = load_tile(k_base, i_t * BT, 0, T, K, H * K, BT, BD)                     # [BT, BD]
        b_kr = load_tile(k_base, i_t * BT, i_k * BK, T, K, H * K, BT, BK)             # [BT, BK]
        b_v = load_vx(v_base, i_t * BT, i_v * BV, T, DV, H * DV, NORM, BT, BV)        # [BT, BV]

        c_len = tl.minimum(BT, T - i_t * BT)
        b_b = tl.where(o_i < c_len, tl.exp2(lg * tl.maximum(c_len - 1 - o_i, 0).to(tl.float32)), 0.0)
        gc = tl.exp2(lg * c_len.to(tl.float32))

        b_vd = (b_v.to(tl.float32) * b_b[:, None]).to(DT)                              # [BT, BV] diag(b) V
        b_p = dot(b_q, tl.trans(b_k), IEEE)                                            # [BT, BT] Q K^T
        b_w = tl.where(m_ij, b_p, 0.0).to(DT)                                          # L ⊙ P
        b_x = dot(tl.trans(b_q), b_vd, IEEE)                                           # [BD, BV] Q^T diag(b) V
        b_z = dot(tl.trans(b_w), b_vd, IEEE)                                           # [BT, BV] W^T diag(b) V
        b_kd = (b_kr.to(tl.float32) * b_b[:, None]).to(DT)                             # [BT, BK] diag(b) K rows
        b_m = gc * gc * b_m + gc * dot_big_left(b_s, b_x.to(DT), F16, IEEE) \
            + dot(tl.trans(b_kd), b_z.to(DT), IEEE)
        if HAS_C:
            b_qr = load_tile(q_base, i_t * BT, i_k * BK, T, K, H * K, BT, BK)
            b_c = gc * b_c + dot(tl.trans(b_qr), b_vd, IEEE)
        b_s = gc * b_s + dot(tl.trans(b_kd), b_k, IEEE)

    s_out = state_out + i_bh.to(tl.int64) * N
    if i_v == 0:
        store_tile(s_out, b_s, i_k * BK, 0, K, K, K, BK, BD)
    store_state_cols(s_out, b_m, i_k * BK, i_v * BV, K, DV, OFF_M, OFF_N, NORM, BK, BV)
    if HAS_C:
        store_state_cols(s_out, b_c, i_k * BK, i_v * BV, K, DV, OFF_C, OFF_MC, NORM, BK, BV)


@triton.jit(do_not_specialize=["T", "H"])
def chunk_hla2_fwd_o_kernel(
    q, k, v,                      # [B, T, H, K], [B, T, H, K], [B, T, H, DV]
    decay,                        # [H] float32
    ws_s, ws_m, ws_c,             # state before each chunk (chunk_hla2_fwd_h_kernel's workspace)
    o,                            # [B, T, H, DV] activation dtype (SAVE_DEN: float32 [B, T, H, DV + 1])
    T, H,                         # int32
    eps, lam,                     # float32: the normaliser's eps, ridge λ
    K: tl.constexpr, DV: tl.constexpr, NORM: tl.constexpr, HAS_C: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    F16: tl.constexpr, IEEE: tl.constexpr, SAVE_DEN: tl.constexpr,
):
    VX = DV + NORM
    OW = DV + SAVE_DEN                                                                 # o's row width
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    DT = q.dtype.element_ty
    lg = tl.log2(tl.load(decay + i_h))

    o_i = tl.arange(0, BT)
    m_ij = o_i[:, None] >= o_i[None, :]
    b_d1 = tl.where(m_ij, tl.exp2(lg * tl.maximum(o_i[:, None] - o_i[None, :], 0).to(tl.float32)), 0.0)
    b_a1 = tl.exp2(lg * (o_i + 1).to(tl.float32))                                      # g^(i+1)

    row0 = i_b.to(tl.int64) * T * H + i_h
    b_q = load_tile(q + row0 * K, i_t * BT, 0, T, K, H * K, BT, BD)                    # [BT, BD]
    b_k = load_tile(k + row0 * K, i_t * BT, 0, T, K, H * K, BT, BD)                    # [BT, BD]
    b_v = load_tile(v + row0 * DV, i_t * BT, i_v * BV, T, DV, H * DV, BT, BV)          # [BT, BV]
    ws_t = i_bh.to(tl.int64) * NT + i_t
    b_s = load_tile(ws_s + ws_t * K * K, 0, 0, K, K, K, BD, BD)                        # [BD, BD]
    b_m = load_tile(ws_m + ws_t * K * VX, 0, i_v * BV, K, DV, VX, BD, BV)              # [BD, BV]

    b_p = dot(b_q, tl.trans(b_k), IEEE)                                                # [BT, BT]
    b_w = tl.where(m_ij, b_p, 0.0).to(DT)                                              # L ⊙ P
    b_wg = (b_d1 * b_p).to(DT)                                                         # D1 ⊙ P
    b_qs = (b_q.to(tl.float32) * b_a1[:, None]).to(DT)                                 # diag(a1) Q
    b_qss = dot_big_right(b_qs, b_s, F16, IEEE)                                        # [BT, BD] Qs S (grows)
    b_a = dot(b_wg, tl.trans(b_w), IEEE) + dot_big_left(b_qss, tl.trans(b_q), F16, IEEE)
    b_o = dot_big_right(b_q, b_m, F16, IEEE) * (b_a1 * b_a1)[:, None]
    if HAS_C:
        b_a += lam * dot(b_q, tl.trans(b_q), IEEE)
        b_c = load_tile(ws_c + ws_t * K * VX, 0, i_v * BV, K, DV, VX, BD, BV)
        b_o += lam * b_a1[:, None] * dot_big_right(b_q, b_c, F16, IEEE)
    b_a = b_a * b_d1                                                                   # A [BT, BT] (grows)
    b_o += dot_big_left(b_a, b_v, F16, IEEE)                                           # numerator [BT, BV]
    o_base = o + row0 * OW
    if NORM:
        r_d = tl.arange(0, BD)
        b_n = tl.load(ws_m + ws_t * K * VX + r_d * VX + DV, mask=r_d < K, other=0.0)   # [BD] n
        b_qf = b_q.to(tl.float32)
        b_den = (b_a1 * b_a1) * tl.sum(b_qf * b_n[None, :], axis=1) + tl.sum(b_a, axis=1)
        if HAS_C:
            b_mc = tl.load(ws_c + ws_t * K * VX + r_d * VX + DV, mask=r_d < K, other=0.0)  # [BD] m
            b_den += lam * b_a1 * tl.sum(b_qf * b_mc[None, :], axis=1)
        b_den = b_den + eps                                                            # [BT]
        b_o = tl.div_rn(b_o, tl.broadcast_to(b_den[:, None], (BT, BV)))
        if SAVE_DEN:
            if i_v == 0:
                r_t = i_t * BT + o_i
                tl.store(o_base + r_t * (H * OW) + DV, b_den, mask=r_t < T)
    store_tile(o_base, b_o, i_t * BT, i_v * BV, T, DV, H * OW, BT, BV)
