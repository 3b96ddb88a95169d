"""torch.compile for training: the blocks of an HLALanguageModel, each compiled in place.

Regional compilation: every HLABlock gets `block.compile()` (the state-dict keys do not change,
so checkpoints are unaffected). The blocks share one code object and one shape, so they share
the compiled graphs (torch >= 2.5 inlines nn.Module calls and guards on no module identity).
Inductor fuses what surrounds the HLA op (RMSNorms, the L2 norm of q and k, the bf16 casts,
SiLU * up, the residual adds, forward and backward); the HLA op itself stays one opaque custom op
(its registered fake and autograd, hla_deploy/ops/custom_op.py) that runs the Triton kernels.

Evaluation and generation run eagerly (`eager()`): another signature (no grad, a carried state,
T = 1) would compile new graphs for a few calls.
"""
from __future__ import annotations

import torch


def compile_blocks(model, backend: str = "inductor") -> None:
    """Compile every block of ``model`` (HLALanguageModel) in place with ``backend``."""
    for block in model.blocks:
        block.compile(backend=backend, dynamic=False)


def eager():
    """Context in which compiled modules run their eager code (torch.compiler.set_stance)."""
    return torch.compiler.set_stance("force_eager")


def uncompile_blocks(model) -> None:
    """Undo compile_blocks (after a failed compilation): the blocks run eagerly again.
    nn.Module.compile stores its wrapper in ``_compiled_call_impl`` (torch >= 2.2)."""
    for block in model.blocks:
        block._compiled_call_impl = None
