"""Export with ONE custom node `hla_deploy::HLARecurrentStep` per HLA mixer.

Each layer's mixer becomes a single node (docs/OP_CONTRACT.md):

    o [B, T, H, dv], state_out_i [B, H, N] = HLARecurrentStep(q [B, T, H, d], k [B, T, H, d],
        v [B, T, H, dv], state_i [B, H, N]; variant, decay, normalize, eps, ridge)

q, k, v are in the activation dtype (float32 or float16); the state is float32 (the op converts
at its boundary). Running the graph needs the hla-deploy custom-op library (ONNX Runtime) or
plugin (TensorRT); onnx's checker and shape inference know the op once
`exporters.schema.register_hla_schema()` has run.
"""
from __future__ import annotations

from hla_deploy import OP_DOMAIN, OP_TYPE

from .graph_builder import GraphBuilder
from .hla_attrs import check_hla_attributes


def hla_node_attributes(config) -> dict:
    """The HLARecurrentStep attributes for a model config (decay: 1 value or n_heads values)."""
    decay = config.decay if isinstance(config.decay, list) else [config.decay]
    decay = check_hla_attributes(config.variant, decay, int(config.normalize), config.eps, config.ridge,
                                 config.n_heads)
    return dict(variant=config.variant, decay=[float(g) for g in decay], normalize=int(config.normalize),
                eps=float(config.eps), ridge=float(config.ridge))


def emit_hla_custom(gb: GraphBuilder, q: str, k: str, v: str, state: str, *, name: str = "hla",
                    **attrs):
    """Append one HLARecurrentStep node; returns (o, state_out)."""
    o, st = gb.op(OP_TYPE, [q, k, v, state], 2, domain=OP_DOMAIN, hint=name, **attrs)
    return o, st


def custom_hla_emitter(config):
    """emit_hla for lm_graph.build_lm_graph: one custom node per layer."""
    attrs = hla_node_attributes(config)

    def emit(gb, q, k, v, state, layer, act_type):
        return emit_hla_custom(gb, q, k, v, state, name=f"blocks.{layer}.attn.hla", **attrs)
    return emit
