"""Backend choice of the HLA operator: what backend="auto" runs, and the optional Triton kernels
(imported lazily), shared by hla_attention (api.py) and the torch custom op (custom_op.py).
"""
from __future__ import annotations

import torch


def triton_module():
    try:
        from . import triton as triton_ops  # noqa: WPS433 (lazy: optional backend)
    except Exception as exc:  # ImportError, or triton itself failing to import
        raise RuntimeError(f"backend 'triton' is unavailable: importing hla_deploy.ops.triton failed "
                           f"({type(exc).__name__}: {exc})") from exc
    missing = [n for n in ("is_available", "supports", "hla_attention_triton") if not hasattr(triton_ops, n)]
    if missing:
        raise RuntimeError(f"backend 'triton' is unavailable: hla_deploy.ops.triton lacks {', '.join(missing)}")
    return triton_ops


def triton_usable(variant: str, normalize: bool, ridge: float, d: int, dv: int) -> bool:
    try:
        triton_ops = triton_module()
        return bool(triton_ops.is_available()) and bool(
            triton_ops.supports(variant, normalize, ridge, head_dim=d, value_dim=dv))
    except Exception:
        return False


def auto_backend(on_cuda: bool, dtype: torch.dtype, T: int, variant: str, normalize: bool, ridge: float,
                  d: int, dv: int) -> str:
    """What backend="auto" runs: "triton" for CUDA tensors (not float64) when the kernels are
    usable and serve (variant, normalize, ridge, d, dv); else "chunk" (T > 1) or "recurrent"."""
    if on_cuda and dtype != torch.float64 and triton_usable(variant, normalize, ridge, d, dv):
        return "triton"
    return "chunk" if T > 1 else "recurrent"
