"""torch.ops.hla_deploy.hla_recurrent_step -> ONE `hla_deploy::HLARecurrentStep` ONNX node.

    torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())

(like TensorRT-Edge-LLM's onnx/dynamo_translations.py for its Mamba / Gated DeltaNet plugins).
The node's schema (exporters/node/schema.py) is registered first, so onnxscript knows the node has two
outputs (o, state_out). Attributes are those of docs/OP_CONTRACT.md; `backend` and `chunk_size`
choose how torch computes the op and do not reach the graph. The op's schema has no defaults (so
torch.export never drops an argument); the defaults below equal the contract's anyway.
"""
from __future__ import annotations

from typing import Dict, Sequence


def _hla_opset():
    from onnxscript import values

    from hla_deploy import OP_DOMAIN
    from ..node.schema import SCHEMA_VERSION, register_hla_schema
    register_hla_schema()
    return values.Opset(OP_DOMAIN, SCHEMA_VERSION)


def hla_recurrent_step(q, k, v, state, variant: str = "hla2", decay: Sequence[float] = (1.0,),
                       normalize: bool = False, eps: float = 1e-6, ridge: float = 0.0, backend: str = "auto",
                       chunk_size: int = 64):
    """onnxscript translation: (q, k, v, state) -> (o, state_out), one HLARecurrentStep node."""
    from ..node.attrs import check_hla_attributes
    decay = check_hla_attributes(variant, list(decay), int(bool(normalize)), float(eps), float(ridge))
    return _hla_opset().HLARecurrentStep(q, k, v, state, variant=variant, decay=decay,
                                         normalize=int(bool(normalize)), eps=float(eps), ridge=float(ridge),
                                         _outputs=2)


def translation_table() -> Dict[object, object]:
    """{torch op overload: onnxscript function} for torch.onnx.export(custom_translation_table=...)."""
    import torch

    import hla_deploy.ops  # noqa: F401  (registers torch.ops.hla_deploy.*)
    return {torch.ops.hla_deploy.hla_recurrent_step.default: hla_recurrent_step}
