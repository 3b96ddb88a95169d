"""The HLA operator (HLARecurrentStep, docs/OP_CONTRACT.md) in PyTorch.

Forms side by side (like fla/ops/<name>/): ``naive`` (quadratic, [T, T] weights), ``recurrent``
(token-by-token loop over the compact state, the contract's step), ``chunk`` (chunk-parallel
matmuls, the CPU training path) and, in ``hla_deploy.ops.triton``, the GPU kernels.
Entry point: :func:`hla_attention`; it dispatches to ONE torch custom op,
``torch.ops.hla_deploy.hla_recurrent_step`` (custom_op.py: fake impl for any B and T, autograd
through an opaque backward op), so torch.export / torch.onnx / torch.compile see one node.
"""
from .api import BACKENDS, hla_attention
from .state import (VARIANTS, join_state, paper_state_to_compact, split_state, state_parts,
                    state_size)

__all__ = ["hla_attention", "state_size", "state_parts", "split_state", "join_state",
           "paper_state_to_compact", "VARIANTS", "BACKENDS"]
