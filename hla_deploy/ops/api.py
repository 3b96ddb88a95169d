"""``hla_attention``: validation and backend dispatch for the HLA operator.

See docs/OP_CONTRACT.md for the semantics and docs/OPS.md for backends and numerics.
"""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch

from . import custom_op as _custom_op  # noqa: F401  (registers torch.ops.hla_deploy.*)
from .backend import triton_module
from .state import state_size
from .validate import BACKENDS, DecayArg, validate_inputs

__all__ = ["hla_attention", "BACKENDS"]


def hla_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, variant: str = "hla2",
                  decay: DecayArg = 1.0, normalize: bool = False, eps: float = 1e-6, ridge: float = 0.0,
                  initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
                  backend: str = "auto", chunk_size: int = 64
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Higher-order linear attention (op contract v1).

    Args:
        q, k: [B, T, H, d]; v: [B, T, H, dv]; float32, float16, bfloat16 (computed in float32
            inside) or float64 (computed in float64).
        variant: "hla2" | "ahla" | "hla3".
        decay: gamma in (0, 1]: a float, or 1 or H floats (sequence or 1-D tensor), per head; a fixed
            attribute of the op (python floats, not trainable; a tensor is rejected while tracing).
        normalize: divide by the normaliser (+ eps). ridge: lambda >= 0 (hla2 only).
        initial_state: [B, H, N] float32 (float64 allowed with float64 q) or None (zeros).
        output_final_state: also return the state after the T tokens.
        backend: "auto" | "naive" | "recurrent" | "chunk" | "triton". "auto": "triton" for CUDA
            tensors (not float64) when hla_deploy.ops.triton imports, is_available() and
            supports(variant, normalize, ridge, head_dim=d, value_dim=dv); otherwise "chunk" for
            T > 1, "recurrent" for T = 1.
        chunk_size: chunk length of the "chunk" backend (any int >= 1).

    Every backend but "naive" runs through the torch custom op torch.ops.hla_deploy.hla_recurrent_step
    (hla_deploy/ops/custom_op.py; "auto" is resolved inside it at run time, so tracing does not
    specialise on T); gradients flow to q, k, v and initial_state.

    Returns:
        o [B, T, H, dv] in q's dtype, and final_state [B, H, N] (float32; float64 with float64 q)
        or None when output_final_state is False.
    """
    if isinstance(decay, torch.Tensor) and torch.compiler.is_compiling():
        raise TypeError("hla_attention: decay given as a tensor cannot be read while tracing "
                        "(torch.export / torch.onnx.export / torch.compile): pass python floats (decay is "
                        "a fixed attribute of the HLARecurrentStep node, not a trainable parameter)")
    decays, normalize, eps, ridge = validate_inputs(q, k, v, variant, decay, normalize, eps, ridge,
                                              initial_state, backend, chunk_size)
    if backend == "naive":
        if output_final_state:
            raise ValueError("backend 'naive' does not compute a state; output_final_state=True needs "
                             "backend 'chunk' or 'recurrent'")
        from .naive import naive_hla
        cdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        gamma = torch.tensor(decays, dtype=cdtype, device=q.device)  # [H]
        return naive_hla(q.to(cdtype), k.to(cdtype), v.to(cdtype), variant, gamma, normalize, eps,
                         ridge).to(q.dtype), None
    B, T, H, d = q.shape
    dv = v.shape[3]
    if backend == "triton" and not torch.compiler.is_compiling():
        triton_ops = triton_module()
        if not triton_ops.is_available():
            raise RuntimeError("backend 'triton' is unavailable: hla_deploy.ops.triton.is_available() "
                               "returned False (needs a CUDA device and triton)")
        if not triton_ops.supports(variant, normalize, ridge, head_dim=d, value_dim=dv):
            raise ValueError(f"backend 'triton' does not support variant={variant!r}, normalize={normalize}, "
                             f"ridge={ridge}, d={d}, dv={dv} (see hla_deploy.ops.triton.supports); "
                             f"use backend 'chunk'")
    if initial_state is None:
        sdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        initial_state = q.new_zeros(B, H, state_size(variant, d, dv, normalize, ridge), dtype=sdtype)
    # decay as given (1 or H values) becomes the `decay` attribute of the exported node
    one_value = isinstance(decay, numbers.Real) or (not isinstance(decay, torch.Tensor) and len(decay) == 1) \
        or (isinstance(decay, torch.Tensor) and decay.numel() == 1)
    o, state = torch.ops.hla_deploy.hla_recurrent_step(
        q, k, v, initial_state, variant, list(decays[:1] if one_value else decays), normalize, eps, ridge,
        backend,
        int(chunk_size))
    return o, (state if output_final_state else None)
