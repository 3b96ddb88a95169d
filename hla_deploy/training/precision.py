"""Mixed precision for training HLA models: "fp32" or "bf16" (torch.autocast).

With "bf16" the forward runs under ``torch.autocast(device_type, dtype=torch.bfloat16)``:

    parameters, gradients, optimizer state   float32 (master weights; autocast casts copies)
    nn.Linear (projections, MLP, lm head)     bf16 operands, float32 accumulation (tensor cores)
    q, k, v into the HLA op                   bf16 (HLAAttention casts them: autocast does not cast
                                              a custom op's inputs); the Triton kernels multiply
                                              bf16 operands, accumulate in float32
    HLA state                                 float32 (the op runs with autocast off inside)
    RMSNorm, L2 norm of q and k               computed in float32 (hla_deploy/layers/norms.py)
    residual stream, logits, loss             float32

bf16 has float32's exponent range, so no loss scaling (GradScaler) is needed. "fp32" is plain
float32 (the Triton kernels then multiply in IEEE float32: correct but ~100x slower on an H200).
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def default_precision(device: torch.device) -> str:
    """"bf16" on CUDA, "fp32" elsewhere (bf16 autocast on a CPU is slower than float32)."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def check_precision(precision: str, device: torch.device) -> str:
    """The precision if ``device`` can run it; ValueError naming the problem otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16': {torch.cuda.get_device_name(device)} does not support "
                         f"bfloat16; use 'fp32'")
    return precision


def autocast(device: torch.device, precision: str):
    """The context to run a forward pass (and its loss) in: autocast for "bf16", none for "fp32".
    Call backward outside it (autocast's rule)."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
