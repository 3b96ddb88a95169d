"""Triton kernels for training HLA, chunk-parallel: hla2 (masked second order) and ahla.

    hla_attention_triton(q, k, v, variant, decay, normalize, eps, ridge, initial_state,
                         output_final_state) -> (o, final_state)

q, k [B, T, H, d], v [B, T, H, dv] (float32, float16 or bfloat16; d, dv + normalize <= MAX_HEAD_DIM = 128);
o [B, T, H, dv] in q's dtype; initial_state / final_state [B, H, N] float32 in the layout of
docs/OP_CONTRACT.md. Differentiable in q, k, v and initial_state (hand-written backward kernels).

Files: launch_plan.py (the forward's launches: one plan for the JIT path and the AOT kernels),
chunk_fwd.py (hla2 state scan + output kernels), chunk_bwd.py (hla2 reverse state-gradient
scan + chunk-local dq/dk/dv kernel), chunk_ahla.py (ahla, all four), function.py
(autograd.Functions), operand.py (operand dtypes, the float16 power-of-two rescale), tile.py
(masked tile load/store, contract-layout state tiles), utils.py (checks, state packing for the
backward), README.md (derivation).
Without CUDA the kernels run only under the Triton interpreter (TRITON_INTERPRET=1, CPU tensors).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import torch

#: Largest head dims the kernels take (d <= MAX_HEAD_DIM, dv + normalize <= MAX_HEAD_DIM): utils.py
from .utils import MAX_HEAD_DIM

__all__ = ["is_available", "supports", "hla_attention_triton", "MAX_HEAD_DIM"]


def is_available() -> bool:
    """True when Triton imports and can run here (a CUDA GPU, or TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1"


# Variants whose kernels have been checked on a GPU against the float64 reference (forward and
# gradients). ahla's kernels (chunk_ahla.py) pass on the CPU Triton interpreter but have not run
# on a GPU yet: `supports` (and so hla_attention's backend "auto"/"triton") leaves them out until
# `pytest tests/test_triton_hla.py -k ahla` has passed on one; hla_attention_triton(variant="ahla")
# can be called directly meanwhile.
GPU_VERIFIED_VARIANTS = ("hla2",)


def supports(variant: str, normalize: bool = False, ridge: float = 0.0, *,
             head_dim: Optional[int] = None, value_dim: Optional[int] = None) -> bool:
    """Whether these kernels serve the configuration: hla2 (any normalize, ridge >= 0); ahla
    (ridge 0) once listed in GPU_VERIFIED_VARIANTS; and, when the head dims are given,
    head_dim <= MAX_HEAD_DIM and value_dim + normalize <= MAX_HEAD_DIM."""
    if variant not in GPU_VERIFIED_VARIANTS:
        return False
    if head_dim is not None and head_dim > MAX_HEAD_DIM:
        return False
    if value_dim is not None and value_dim + int(bool(normalize)) > MAX_HEAD_DIM:
        return False
    if variant == "hla2":
        return ridge >= 0.0
    return variant == "ahla" and ridge == 0.0


def hla_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str = "hla2",
                         decay: Union[float, Sequence[float], torch.Tensor] = 1.0,
                         normalize: bool = False, eps: float = 1e-6, ridge: float = 0.0,
                         initial_state: Optional[torch.Tensor] = None,
                         output_final_state: bool = False, *, chunk_size: Optional[int] = None,
                         ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """hla2 attention, chunk-parallel Triton forward and backward.

    q, k: [B, T, H, d]; v: [B, T, H, dv]; float32 / float16 / bfloat16, one device.
    decay: float or 1 or H values in (0, 1]; initial_state: [B, H, N] float32 or None.
    Returns o [B, T, H, dv] (q's dtype) and the final state [B, H, N] float32 (or None).
    chunk_size (keyword, 16/32/64) overrides the tokens per chunk of the launch plan (default
    launch_plan.DEFAULT_CHUNK_SIZE, the same for every T: what the AOT kernels use).
    The forward runs exactly launch_plan.plan(...)'s launches (launch_plan.run_plan).
    """
    from .function import ChunkAHLAFunction, ChunkHLA2Function
    from .utils import check_inputs, decay_vector

    if variant == "hla3":
        raise ValueError("the Triton backend implements variants 'hla2' and 'ahla', not 'hla3'; "
                         "use backend='chunk' for hla3")
    decays = check_inputs(q, k, v, variant, decay, normalize, eps, ridge, initial_state)
    if not is_available():
        raise RuntimeError("Triton backend unavailable: needs a CUDA GPU (or TRITON_INTERPRET=1 "
                           "with CPU tensors)")
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(f"q is on {q.device}: the Triton kernels need CUDA tensors (or CPU tensors "
                         f"with TRITON_INTERPRET=1)")
    gam = decay_vector(decays, q.device)                              # [H] float32
    if chunk_size is not None and chunk_size not in (16, 32, 64):
        raise ValueError(f"chunk_size must be 16, 32 or 64, got {chunk_size}")
    if variant == "ahla":
        return ChunkAHLAFunction.apply(q, k, v, gam, initial_state, bool(normalize), float(eps),
                                       bool(output_final_state), chunk_size)
    return ChunkHLA2Function.apply(q, k, v, gam, initial_state, bool(normalize), float(eps),
                                   float(ridge), bool(output_final_state), chunk_size)
