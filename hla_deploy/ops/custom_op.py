"""The HLA operator as ONE torch custom op: ``torch.ops.hla_deploy.hla_recurrent_step``.

    o [B, T, H, dv], state_out [B, H, N] = torch.ops.hla_deploy.hla_recurrent_step(
        q [B, T, H, d], k [B, T, H, d], v [B, T, H, dv], state [B, H, N],
        variant, decay (list of 1 or H floats), normalize, eps, ridge, backend, chunk_size)

It always takes a state (``hla_attention`` passes zeros for ``initial_state=None``) and always
returns the state after the T tokens (docs/OP_CONTRACT.md). torch.export / torch.compile /
torch.onnx see one opaque node: the fake impl gives the output shapes for any B and T, so nothing
specialises on T; the exporters translate the node to ONE ``hla_deploy::HLARecurrentStep``
(hla_deploy.exporters.translation_table()). Every argument is required (the schema has no
defaults, so torch.export never drops one).

Autocast: the op's implementations run with autocast OFF (`_no_autocast`), so what it computes
depends only on its inputs' dtypes: under a bf16 autocast the chunk form would otherwise run its
matmuls (state products included) in bf16. Autocast does not cast a custom op's inputs either:
the layer feeds the dtype it wants (hla_deploy/layers/attention.py casts q, k, v to the autocast
dtype). 16-bit q, k, v: the chunk form and the recurrence compute in float32, the Triton kernels
multiply 16-bit operands with float32 accumulation; the state is float32 in every case.

backend "auto" is resolved inside the op at run time (Triton for CUDA tensors when usable, else
the chunk form for T > 1 and the recurrence for T = 1), so the traced graph does not depend on T.

Autograd (register_autograd): the backward is a second opaque op,
``hla_deploy::hla_recurrent_step_backward``, which re-runs the differentiable implementation
(the Triton autograd Functions on CUDA, the chunk form elsewhere) under autograd and returns
(dq, dk, dv, dstate). Gradients flow to q, k, v and state; ``decay`` is a list of python floats,
an attribute of the op: it is NOT trainable.
"""
from __future__ import annotations

import contextlib
from typing import List, Optional, Sequence, Tuple

import torch

OP_NAME = "hla_deploy::hla_recurrent_step"
BACKWARD_OP_NAME = "hla_deploy::hla_recurrent_step_backward"


def _gamma(decay: Sequence[float], H: int, dtype: torch.dtype, device) -> torch.Tensor:
    g = torch.tensor([float(x) for x in decay], dtype=dtype, device=device)
    return g.expand(H).contiguous() if g.numel() == 1 else g     # [H]


def _resolve_backend(backend: str, q: torch.Tensor, variant: str, normalize: bool, ridge: float,
                     dv: int) -> str:
    if backend != "auto":
        return backend
    from .backend import auto_backend
    return auto_backend(q.is_cuda, q.dtype, q.shape[1], variant, normalize, ridge, q.shape[3], dv)


def _forward_impl(q, k, v, state, variant, decay, normalize, eps, ridge, backend, chunk_size,
                  differentiable_only: bool = False):
    """o (q's dtype), state_out: runs `backend` (resolved from "auto"). With differentiable_only the
    recurrence is never used (the backward re-runs the chunk form or Triton)."""
    H, dv = q.shape[2], v.shape[3]
    backend = _resolve_backend(backend, q, variant, normalize, ridge, dv)
    if differentiable_only and backend == "recurrent":
        backend = "chunk"
    if backend == "triton":
        from .backend import triton_module
        return triton_module().hla_attention_triton(q, k, v, variant, list(decay), normalize, eps, ridge,
                                                     state, True)
    cdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc = q.to(cdtype), k.to(cdtype), v.to(cdtype)
    gamma = _gamma(decay, H, cdtype, q.device)
    s0 = state.to(cdtype)
    if backend == "recurrent":
        from .recurrent import recurrent_hla
        o, s = recurrent_hla(qc, kc, vc, variant, gamma, normalize, eps, ridge, s0)
    elif backend == "chunk":
        from .chunk import chunk_hla
        o, s = chunk_hla(qc, kc, vc, variant, gamma, normalize, eps, ridge, s0, int(chunk_size))
    else:
        raise ValueError(f"hla_recurrent_step: backend {backend!r} is not served by the op; expected "
                         f"'auto', 'recurrent', 'chunk' or 'triton'")
    return o.to(q.dtype), s   # state_out: float32 (float64 with float64 q)


def _no_autocast(device: torch.device):
    """Autocast off for ``device``'s type inside the op (see the module docstring)."""
    return torch.autocast(device.type, enabled=False)


@torch.library.custom_op(OP_NAME, mutates_args=())
def hla_recurrent_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor,
                       variant: str, decay: List[float], normalize: bool, eps: float, ridge: float,
                       backend: str, chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """See the module docstring. Inputs are validated by hla_deploy.ops.hla_attention."""
    with _no_autocast(q.device):
        o, s = _forward_impl(q, k, v, state, variant, decay, normalize, eps, ridge, backend, chunk_size)
    return o.contiguous(), s.contiguous()


@hla_recurrent_step.register_fake
def _hla_recurrent_step_fake(q, k, v, state, variant, decay, normalize, eps, ridge, backend, chunk_size):
    B, T, H, _ = q.shape
    sdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty(B, T, H, v.shape[3]), state.new_empty(state.shape, dtype=sdtype)


@contextlib.contextmanager
def _autograd_inside_op():
    """Re-enable autograd inside a custom op's kernel (the dispatcher runs kernels below the
    Autograd keys, so ops there record no graph). Private torch API, checked with torch 2.13."""
    K = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (K.AutogradFunctionality, K.AutogradOther, K.AutogradNestedTensor):
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude):
        yield


@torch.library.custom_op(BACKWARD_OP_NAME, mutates_args=())
def hla_recurrent_step_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor,
                                grad_o: torch.Tensor, grad_state: torch.Tensor, variant: str,
                                decay: List[float], normalize: bool, eps: float, ridge: float,
                                backend: str, chunk_size: int
                                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dstate): re-runs the differentiable forward (Triton on CUDA when it serves the
    configuration, else the chunk form) and back-propagates (grad_o, grad_state) through it."""
    with _autograd_inside_op(), torch.enable_grad(), _no_autocast(q.device):
        leaves = [x.detach().requires_grad_(True) for x in (q, k, v, state)]
        o, s = _forward_impl(*leaves, variant, decay, normalize, eps, ridge, backend, chunk_size,
                             differentiable_only=True)
        grads = torch.autograd.grad((o, s), leaves, (grad_o.to(o.dtype), grad_state.to(s.dtype)),
                                    allow_unused=True)
    return tuple((torch.zeros_like(x) if g is None else g.to(x.dtype)).contiguous()
                 for g, x in zip(grads, (q, k, v, state)))


@hla_recurrent_step_backward.register_fake
def _hla_recurrent_step_backward_fake(q, k, v, state, grad_o, grad_state, variant, decay, normalize, eps,
                                      ridge, backend, chunk_size):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v, state))


def _setup_context(ctx, inputs, output):
    q, k, v, state, variant, decay, normalize, eps, ridge, backend, chunk_size = inputs
    ctx.save_for_backward(q, k, v, state)
    ctx.attrs = (variant, list(decay), normalize, eps, ridge, backend, chunk_size)


def _backward(ctx, grad_o: Optional[torch.Tensor], grad_state: Optional[torch.Tensor]):
    q, k, v, state = ctx.saved_tensors
    if grad_o is None:
        B, T, H, _ = q.shape
        grad_o = q.new_zeros(B, T, H, v.shape[3])
    if grad_state is None:
        grad_state = torch.zeros_like(state)
    dq, dk, dv, dstate = torch.ops.hla_deploy.hla_recurrent_step_backward(
        q, k, v, state, grad_o, grad_state, *ctx.attrs)
    return dq, dk, dv, dstate, None, None, None, None, None, None, None


hla_recurrent_step.register_autograd(_backward, setup_context=_setup_context)
