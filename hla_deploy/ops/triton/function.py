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


class ChunkHLA2Function(torch.autograd.Function):
    """(q, k, v [B,T,H,*], gam [H] f32, initial_state [B,H,N] f32 or None) -> (o [B,T,H,dv], state [B,H,N] f32 or None)."""

    @staticmethod
    def forward(ctx, q, k, v, gam, initial_state, normalize: bool, eps: float, ridge: float,
                output_final_state: bool, chunk_size: int):
        B, T, H, d = q.shape
        dv = v.shape[-1]
        has_c = ridge != 0.0
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        vx = torch.cat([v, v.new_ones(B, T, H, 1)], dim=-1) if normalize else v
        s0, m0, c0 = unpack_state(initial_state, B, H, d, dv, normalize, ridge)
        hs, hm, hc, (st, mt, ct) = chunk_hla2_fwd_h(q, k, vx, gam, s0, m0, c0, chunk_size,
                                                   output_final_state, has_c)
        num = chunk_hla2_fwd_o(q, k, vx, gam, hs, hm, hc, ridge, chunk_size,
                               torch.float32 if normalize else q.dtype)
        del hs, hm, hc  # recomputed in backward (state per chunk is larger than q, k, v)
        if normalize:
            den = num[..., dv:] + eps                                  # [B, T, H, 1]
            o32 = num[..., :dv] / den
            o = o32.to(q.dtype)
            ctx.save_for_backward(q, k, vx, gam, initial_state, o32, den)
        else:
            o = num
            ctx.save_for_backward(q, k, vx, gam, initial_state)
        final = pack_state(st, mt, ct, B, H, d, dv, normalize) if output_final_state else None
        ctx.cfg = (normalize, float(ridge), chunk_size, d, dv, has_c)
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        normalize, ridge, chunk_size, d, dv, has_c = ctx.cfg
        if normalize:
            q, k, vx, gam, initial_state, o32, den = ctx.saved_tensors
        else:
            q, k, vx, gam, initial_state = ctx.saved_tensors
        B, T, H, _ = q.shape
        if do is None:
            do = torch.zeros(B, T, H, dv, dtype=q.dtype, device=q.device)
        do = do.contiguous()
        if normalize:
            do32 = do.float()
            dnum = torch.cat([do32 / den, -(do32 * o32).sum(-1, keepdim=True) / den], dim=-1)
            dox = dnum.contiguous()                                    # float32 [B, T, H, dv+1]
        else:
            dox = do
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
        vx = torch.cat([v, v.new_ones(B, T, H, 1)], dim=-1) if normalize else v
        p0, e0 = unpack_state_ahla(initial_state, B, H, d, dv, normalize)
        num, final, _ = chunk_ahla_fwd(q, k, vx, gam, p0, e0, chunk_size, output_final_state,
                                       torch.float32 if normalize else q.dtype)
        if normalize:
            den = num[..., dv:] + eps
            o32 = num[..., :dv] / den
            o = o32.to(q.dtype)
            ctx.save_for_backward(q, k, vx, gam, initial_state, o32, den)
        else:
            o = num
            ctx.save_for_backward(q, k, vx, gam, initial_state)
        ctx.cfg = (normalize, chunk_size, d, dv)
        state = pack_state_ahla(*final, B, H, d, dv, normalize) if output_final_state else None
        return o, state

    @staticmethod
    def backward(ctx, do, dfinal):
        from .chunk_ahla import chunk_ahla_bwd
        from .utils import pack_state_ahla, unpack_state_ahla
        normalize, chunk_size, d, dv = ctx.cfg
        if normalize:
            q, k, vx, gam, initial_state, o32, den = ctx.saved_tensors
        else:
            q, k, vx, gam, initial_state = ctx.saved_tensors
        B, T, H, _ = q.shape
        if do is None:
            do = torch.zeros(B, T, H, dv, dtype=q.dtype, device=q.device)
        do = do.contiguous()
        if normalize:
            do32 = do.float()
            dox = torch.cat([do32 / den, -(do32 * o32).sum(-1, keepdim=True) / den], dim=-1).contiguous()
        else:
            dox = do
        p0, e0 = unpack_state_ahla(initial_state, B, H, d, dv, normalize)
        dpt, det = (unpack_state_ahla(dfinal.float().contiguous(), B, H, d, dv, normalize)
                    if dfinal is not None else (None, None))
        dq, dk, dvx, dp0, de0 = chunk_ahla_bwd(q, k, vx, dox, gam, p0, e0, dpt, det, chunk_size)
        dv_ = dvx[..., :dv] if normalize else dvx
        dinit = None
        if initial_state is not None and ctx.needs_input_grad[4]:
            dinit = pack_state_ahla(dp0, de0, B, H, d, dv, normalize)
        return dq, dk, dv_, None, dinit, None, None, None, None
