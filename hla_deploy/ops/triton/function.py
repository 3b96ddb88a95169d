"""torch.autograd.Functions around the Triton kernels: ChunkHLA2Function (hla2: chunk_fwd.py,
chunk_bwd.py) and ChunkAHLAFunction (ahla: chunk_ahla.py).

normalize: the normaliser n (and m for ridge; mK, n for ahla) obeys the same recurrence as M (and C) for a value
column of ones, so the kernels run on vx = [v, 1] (dvx = dv + 1 columns) and the division
o = num[..., :dv] / (num[..., dv] + eps) and its gradient are elementwise steps here.
"""
from __future__ import annotations

import torch

from .chunk_bwd import chunk_hla2_bwd_dh, chunk_hla2_bwd_dqkv
from .chunk_fwd import chunk_hla2_fwd_h, chunk_hla2_fwd_o
from .utils import pack_state, unpack_state


def default_chunk_size(T: int) -> int:
    return 64 if T > 32 else (32 if T > 16 else 16)


def _value_columns(v: torch.Tensor, normalize: bool) -> torch.Tensor:
    """vx: [v, 1] [B, T, H, dv + 1] with normalize (the normaliser's value column of ones), else v."""
    B, T, H, _ = v.shape
    return torch.cat([v, v.new_ones(B, T, H, 1)], dim=-1) if normalize else v


def _output(ctx, num: torch.Tensor, dv: int, eps: float, normalize: bool, dtype: torch.dtype,
            *saved: torch.Tensor) -> torch.Tensor:
    """o [B, T, H, dv] in ``dtype`` from the kernels' numerator num [B, T, H, dvx]; saves ``saved``
    (and, with normalize, o32 and den) for backward."""
    if normalize:
        den = num[..., dv:] + eps                                      # [B, T, H, 1]
        o32 = num[..., :dv] / den
        ctx.save_for_backward(*saved, o32, den)
        return o32.to(dtype)
    ctx.save_for_backward(*saved)
    return num


def _grad_numerator(ctx, do: torch.Tensor, normalize: bool, dv: int):
    """(the tensors ``_output`` saved, dox): the gradient of the loss w.r.t. the numerator
    [B, T, H, dvx] (float32 with normalize, do itself otherwise) from do [B, T, H, dv] (None: zeros)."""
    saved = ctx.saved_tensors
    if normalize:
        *saved, o32, den = saved
    q = saved[0]
    B, T, H, _ = q.shape
    if do is None:
        do = torch.zeros(B, T, H, dv, dtype=q.dtype, device=q.device)
    do = do.contiguous()
    if not normalize:
        return saved, do
    do32 = do.float()
    dox = torch.cat([do32 / den, -(do32 * o32).sum(-1, keepdim=True) / den], dim=-1)
    return saved, dox.contiguous()                                     # float32 [B, T, H, dv+1]


class ChunkHLA2Function(torch.autograd.Function):
    """(q, k, v [B,T,H,*], gam [H] f32, initial_state [B,H,N] f32 or None) -> (o [B,T,H,dv], state [B,H,N] f32 or None)."""

    @staticmethod
    def forward(ctx, q, k, v, gam, initial_state, normalize: bool, eps: float, ridge: float,
                output_final_state: bool, chunk_size: int):
        B, T, H, d = q.shape
        dv = v.shape[-1]
        has_c = ridge != 0.0
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        vx = _value_columns(v, normalize)
        s0, m0, c0 = unpack_state(initial_state, B, H, d, dv, normalize, ridge)
        hs, hm, hc, (st, mt, ct) = chunk_hla2_fwd_h(q, k, vx, gam, s0, m0, c0, chunk_size,
                                                   output_final_state, has_c)
        num = chunk_hla2_fwd_o(q, k, vx, gam, hs, hm, hc, ridge, chunk_size,
                               torch.float32 if normalize else q.dtype)
        del hs, hm, hc  # recomputed in backward (state per chunk is larger than q, k, v)
        o = _output(ctx, num, dv, eps, normalize, q.dtype, q, k, vx, gam, initial_state)
        final = pack_state(st, mt, ct, B, H, d, dv, normalize) if output_final_state else None
        ctx.cfg = (normalize, float(ridge), chunk_size, d, dv, has_c)
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        normalize, ridge, chunk_size, d, dv, has_c = ctx.cfg
        (q, k, vx, gam, initial_state), dox = _grad_numerator(ctx, do, normalize, dv)
        B, H = q.shape[0], q.shape[2]
        s0, m0, c0 = unpack_state(initial_state, B, H, d, dv, normalize, ridge)
        hs, hm, hc, _ = chunk_hla2_fwd_h(q, k, vx, gam, s0, m0, c0, chunk_size, False, has_c)
        if dfinal is not None:
            dst, dmt, dct = unpack_state(dfinal.float().contiguous(), B, H, d, dv, normalize, ridge)
        else:
            dst = dmt = dct = None
        (dhs, dhm, dhc), (ds0, dm0, dc0) = chunk_hla2_bwd_dh(q, vx, dox, gam, dst, dmt, dct, ridge,
                                                            chunk_size, has_c)
        dq, dk, dvx = chunk_hla2_bwd_dqkv(q, k, vx, dox, gam, hs, hm, hc, dhs, dhm, dhc, ridge,
                                          chunk_size)
        dv_ = dvx[..., :dv] if normalize else dvx
        dinit = None
        if initial_state is not None and ctx.needs_input_grad[4]:
            dinit = pack_state(ds0, dm0, dc0, B, H, d, dv, normalize)
        return dq, dk, dv_, None, dinit, None, None, None, None, None


class ChunkAHLAFunction(torch.autograd.Function):
    """ahla: (q, k, v [B,T,H,*], gam [H], initial_state [B,H,N] or None) -> (o, state or None)."""

    @staticmethod
    def forward(ctx, q, k, v, gam, initial_state, normalize: bool, eps: float,
                output_final_state: bool, chunk_size: int):
        from .chunk_ahla import chunk_ahla_fwd
        from .utils import pack_state_ahla, unpack_state_ahla
        B, T, H, d = q.shape
        dv = v.shape[-1]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        vx = _value_columns(v, normalize)
        p0, e0 = unpack_state_ahla(initial_state, B, H, d, dv, normalize)
        num, final, _ = chunk_ahla_fwd(q, k, vx, gam, p0, e0, chunk_size, output_final_state,
                                       torch.float32 if normalize else q.dtype)
        o = _output(ctx, num, dv, eps, normalize, q.dtype, q, k, vx, gam, initial_state)
        ctx.cfg = (normalize, chunk_size, d, dv)
        state = pack_state_ahla(*final, B, H, d, dv, normalize) if output_final_state else None
        return o, state

    @staticmethod
    def backward(ctx, do, dfinal):
        from .chunk_ahla import chunk_ahla_bwd
        from .utils import pack_state_ahla, unpack_state_ahla
        normalize, chunk_size, d, dv = ctx.cfg
        (q, k, vx, gam, initial_state), dox = _grad_numerator(ctx, do, normalize, dv)
        B, H = q.shape[0], q.shape[2]
        p0, e0 = unpack_state_ahla(initial_state, B, H, d, dv, normalize)
        dpt, det = (unpack_state_ahla(dfinal.float().contiguous(), B, H, d, dv, normalize)
                    if dfinal is not None else (None, None))
        dq, dk, dvx, dp0, de0 = chunk_ahla_bwd(q, k, vx, dox, gam, p0, e0, dpt, det, chunk_size)
        dv_ = dvx[..., :dv] if normalize else dvx
        dinit = None
        if initial_state is not None and ctx.needs_input_grad[4]:
            dinit = pack_state_ahla(dp0, de0, B, H, d, dv, normalize)
        return dq, dk, dv_, None, dinit, None, None, None, None
