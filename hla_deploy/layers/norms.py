"""Normalisations used around HLA: RMSNorm (learned weight) and the L2 normalisation of q and k.

    rms_norm(x, w, eps) = x * rsqrt(mean(x * x, -1) + eps) * w
    l2_normalize(x)     = x * rsqrt(sum(x * x, -1) + QK_L2_EPS)

Both compute in float32 for float16 / bfloat16 inputs and return the input's dtype.
"""
from __future__ import annotations

import torch
import torch.nn as nn

#: epsilon inside the L2 normalisation of q and k (a fixed constant of the forward)
QK_L2_EPS = 1e-6

_HALF = (torch.float16, torch.bfloat16)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2, -1) + eps) * weight, computed in float32 for fp16/bf16 inputs."""
    xf = x.float() if x.dtype in _HALF else x
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.to(y.dtype)).to(x.dtype)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x * rsqrt(sum(x^2, -1) + QK_L2_EPS) over the last (head) dim."""
    xf = x.float() if x.dtype in _HALF else x
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + QK_L2_EPS)).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned weight (no bias). Parameter: `weight` [dim]."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
