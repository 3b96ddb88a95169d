"""torch.autograd.Functions around the Triton kernels: ChunkHLA2Function (hla2: chunk_fwd.py,
chunk_bwd.py) and ChunkAHLAFunction (ahla: chunk_ahla.py).

Forward: exactly the launch plan (launch_plan.run_plan: the state read from and written to the
contract layout, o normalised in the kernel), so training's forward and deployment's AOT kernels
are the same code. Nothing but the inputs (and the initial state, zeros when None) is saved.

Backward (host-side steps are allowed here): recompute the state before every chunk with the
plan's fwd_h launch (float16 inputs: the float32 plan's, `_backward_plan`); with normalize, o in float32 and the denominator den from
`launch_plan.training_output_launch` (fwd_o with SAVE_DEN = 1); then the gradient of the
numerator [B, T, H, dv + 1] (the normaliser is the value column of ones, vx = [v, 1]):
dnum = [dO / den, -(dO · o) / den], and the hand-written backward kernels.
"""
from __future__ import annotations

import torch

from . import launch_plan
from .chunk_bwd import chunk_hla2_bwd_dh, chunk_hla2_bwd_dqkv
from .utils import pack_state, pack_state_ahla, unpack_state, unpack_state_ahla


def _prefill(variant: str, q, k, v, gam, initial_state, normalize: bool, has_c: bool, eps: float,
             ridge: float, chunk_size):
    """Run the plan: (plan, q, k, v, state_in, o, state_out) with fresh o and state_out."""
    B, T, H, d = q.shape
    dv = v.shape[-1]
    p = launch_plan.plan(variant, normalize, has_c, d, dv, q.dtype, chunk_size=chunk_size)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if initial_state is None:
        state_in = torch.zeros(B, H, p.state_size, dtype=torch.float32, device=q.device)
    else:
        state_in = initial_state.detach().contiguous()
    state_out = torch.empty_like(state_in)
    o = torch.empty(B, T, H, dv, dtype=q.dtype, device=q.device)
    launch_plan.run_plan(p, q, k, v, gam, state_in, state_out, o, eps, ridge)
    return p, q, k, v, state_in, o, state_out


def _backward_plan(p):
    """The plan whose launches the backward re-runs: the forward's, except for float16 inputs,
    whose backward keeps IEEE float32 (as its kernels do): the float32 plan on float32 copies of
    q, k, v (the forward's float16 rescale gave dq 3.06e-3 against 3.00e-3 in
    test_float16_state_beyond_float16_range[hla2-0.25], whose bound is 3e-3)."""
    if p.config.dtype != "fp16":
        return p
    c = p.config
    return launch_plan.plan(c.variant, c.normalize, c.has_c, c.d, c.dv, "fp32", chunk_size=p.chunk_size)


def _recompute(ctx, q, k, v, gam, state_in):
    """(workspace holding the state before every chunk, sizes, bindings) for the backward."""
    p = _backward_plan(ctx.plan)
    B, T, H, _ = q.shape
    if p is not ctx.plan:
        q, k, v = q.float(), k.float(), v.float()
    sizes = launch_plan.sizes_of(p, B, T, H)
    ws = launch_plan.allocate_workspace(p, B, T, H, q.device)
    bind = dict(ws, q=q, k=k, v=v, decay=gam, state_in=state_in, state_out=torch.empty_like(state_in),
                T=T, H=H, B=B, eps=ctx.eps, lam=ctx.lam)
    launch_plan.run_launch(p.launches[0], bind, sizes)                  # fwd_h: states before chunks
    return ws, sizes, bind


def _grad_numerator(ctx, do, bind, sizes, q, v):
    """(dnum [B, T, H, dv + normalize], vx = [v, 1] or v) from do [B, T, H, dv] (None: zeros)."""
    B, T, H, _ = q.shape
    dv = v.shape[-1]
    if do is None:
        do = torch.zeros(B, T, H, dv, dtype=q.dtype, device=q.device)
    do = do.contiguous()
    if not ctx.plan.config.normalize:
        return do, v
    o_train = torch.empty(B, T, H, dv + 1, dtype=torch.float32, device=q.device)
    train = launch_plan.training_output_launch(_backward_plan(ctx.plan))
    launch_plan.run_launch(train, dict(bind, o_train=o_train), sizes)
    o32, den = o_train[..., :dv], o_train[..., dv:]                     # den includes eps
    do32 = do.float()
    dnum = torch.cat([do32 / den, -(do32 * o32).sum(-1, keepdim=True) / den], dim=-1)
    vx = torch.cat([v, v.new_ones(B, T, H, 1)], dim=-1)
    return dnum.contiguous(), vx                                        # float32 [B, T, H, dv + 1]


class ChunkHLA2Function(torch.autograd.Function):
    """(q, k, v [B,T,H,*], gam [H] f32, initial_state [B,H,N] f32 or None) -> (o [B,T,H,dv], state [B,H,N] f32 or None)."""

    @staticmethod
    def forward(ctx, q, k, v, gam, initial_state, normalize: bool, eps: float, ridge: float,
                output_final_state: bool, chunk_size):
        p, q, k, v, state_in, o, state_out = _prefill("hla2", q, k, v, gam, initial_state, normalize,
                                                      ridge != 0.0, eps, ridge, chunk_size)
        ctx.save_for_backward(q, k, v, gam, state_in)
        ctx.plan, ctx.eps, ctx.lam = p, float(eps), float(ridge)
        return o, (state_out if output_final_state else None)

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, gam, state_in = ctx.saved_tensors
        cfg, bt, ridge = ctx.plan.config, ctx.plan.chunk_size, ctx.lam
        B, T, H, d = q.shape
        dv, normalize, has_c = cfg.dv, cfg.normalize, cfg.has_c
        ws, sizes, bind = _recompute(ctx, q, k, v, gam, state_in)
        dox, vx = _grad_numerator(ctx, do, bind, sizes, q, v)
        NT, vxd = sizes["NT"], dv + int(normalize)
        hs = ws["ws_s"].view(B * H, NT, d, d)
        hm = ws["ws_m"].view(B * H, NT, d, vxd)
        hc = ws["ws_c"].view(B * H, NT, d, vxd) if has_c else None
        if dfinal is not None:
            dst, dmt, dct = unpack_state(dfinal.float().contiguous(), B, H, d, dv, normalize, ridge)
        else:
            dst = dmt = dct = None
        (dhs, dhm, dhc), (ds0, dm0, dc0) = chunk_hla2_bwd_dh(q, vx, dox, gam, dst, dmt, dct, ridge,
                                                            bt, has_c)
        dq, dk, dvx = chunk_hla2_bwd_dqkv(q, k, vx, dox, gam, hs, hm, hc, dhs, dhm, dhc, ridge, bt)
        dv_ = dvx[..., :dv] if normalize else dvx
        dinit = None
        if ctx.needs_input_grad[4]:
            dinit = pack_state(ds0, dm0, dc0, B, H, d, dv, normalize)
        return dq, dk, dv_, None, dinit, None, None, None, None, None


class ChunkAHLAFunction(torch.autograd.Function):
    """ahla: (q, k, v [B,T,H,*], gam [H], initial_state [B,H,N] or None) -> (o, state or None)."""

    @staticmethod
    def forward(ctx, q, k, v, gam, initial_state, normalize: bool, eps: float,
                output_final_state: bool, chunk_size):
        p, q, k, v, state_in, o, state_out = _prefill("ahla", q, k, v, gam, initial_state, normalize,
                                                      False, eps, 0.0, chunk_size)
        ctx.save_for_backward(q, k, v, gam, state_in)
        ctx.plan, ctx.eps, ctx.lam = p, float(eps), 0.0
        return o, (state_out if output_final_state else None)

    @staticmethod
    def backward(ctx, do, dfinal):
        from .chunk_ahla import chunk_ahla_bwd
        q, k, v, gam, state_in = ctx.saved_tensors
        cfg, bt = ctx.plan.config, ctx.plan.chunk_size
        B, T, H, d = q.shape
        dv, normalize = cfg.dv, cfg.normalize
        ws, sizes, bind = _recompute(ctx, q, k, v, gam, state_in)
        dox, vx = _grad_numerator(ctx, do, bind, sizes, q, v)
        NT, vxd = sizes["NT"], dv + int(normalize)
        hp = ws["ws_p"].view(B * H, NT, d, vxd)
        he = ws["ws_e"].view(B * H, NT, d, vxd)
        dpt, det = (unpack_state_ahla(dfinal.float().contiguous(), B, H, d, dv, normalize)
                    if dfinal is not None else (None, None))
        dq, dk, dvx, dp0, de0 = chunk_ahla_bwd(q, k, vx, dox, gam, hp, he, dpt, det, bt)
        dv_ = dvx[..., :dv] if normalize else dvx
        dinit = None
        if ctx.needs_input_grad[4]:
            dinit = pack_state_ahla(dp0, de0, B, H, d, dv, normalize)
        return dq, dk, dv_, None, dinit, None, None, None, None
