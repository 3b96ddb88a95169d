"""Layers to build HLA models with (the toolkit's own HLALanguageModel uses them too).

    from hla_deploy.layers import HLAAttention
    attn = HLAAttention(d_model=64, n_heads=2, head_dim=16, variant="hla2", decay=0.95)
    y, state = attn(x)              # x [B, T, 64] -> y [B, T, 64], state [B, 2, N] float32
    y2, state = attn(x2, state)     # continue the sequence

A model whose forward takes and returns these states as tensors exports with
hla_deploy.exporters.export_onnx (each layer becomes one hla_deploy::HLARecurrentStep node).
"""
from .attention import HLAAttention
from .norms import QK_L2_EPS, RMSNorm, l2_normalize, rms_norm

__all__ = ["HLAAttention", "RMSNorm", "rms_norm", "l2_normalize", "QK_L2_EPS"]
