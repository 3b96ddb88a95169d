"""Static checks of an exported graph before it is written (export_onnx refuses on failure):

- it holds at least one hla_deploy::HLARecurrentStep node;
- every node's `state` input is computed from a graph input (the forward TAKES its states) and
  every node's `state_out` reaches a graph output (the forward RETURNS them): a stateless graph
  cannot decode token by token;
- every dim the caller asked to be dynamic is still symbolic in the graph's inputs.
"""
from __future__ import annotations

from typing import Dict, List, Set

from hla_deploy import OP_DOMAIN, OP_TYPE

from .errors import ExportError


class GraphCheckError(ExportError):
    """The exported graph does not have the interface an HLA export needs (message says why)."""


def hla_nodes(proto) -> List[object]:
    return [n for n in proto.graph.node if n.op_type == OP_TYPE and n.domain == OP_DOMAIN]


def _ancestors_of(proto, names: Set[str]) -> Set[str]:
    """Values the given ones are computed from (data flow only: not through Shape / Size, whose
    outputs carry no data of their input; zeros of x's shape are not made from x)."""
    producer = {o: n for n in proto.graph.node for o in n.output if n.op_type not in ("Shape", "Size")}
    seen, stack = set(), list(names)
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        node = producer.get(v)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return seen


def check_state_wiring(proto, what: str) -> None:
    nodes = hla_nodes(proto)
    if not nodes:
        raise GraphCheckError(f"{what}: the exported graph has no {OP_DOMAIN}::{OP_TYPE} node; the forward "
                              f"must call hla_deploy.ops.hla_attention or hla_deploy.layers.HLAAttention")
    graph_inputs = {i.name for i in proto.graph.input}
    reaching_outputs = _ancestors_of(proto, {o.name for o in proto.graph.output})
    for idx, node in enumerate(nodes):
        if not (_ancestors_of(proto, {node.input[3]}) & graph_inputs):
            raise GraphCheckError(
                f"{what}: HLA call #{idx} (node {node.name!r}) does not take its state from a graph input "
                f"(the forward made it, e.g. state=None -> zeros); the forward must take the HLA states as "
                f"tensor arguments so the graph can continue a sequence")
        if node.output[1] not in reaching_outputs:
            raise GraphCheckError(
                f"{what}: the forward does not return the state of HLA call #{idx} (node {node.name!r}); "
                f"return every HLA state (e.g. `return y, state`) so the graph can decode token by token")


def input_dims(proto) -> Dict[str, list]:
    """{graph input name: [int | str | None per dim]}."""
    out = {}
    for vi in proto.graph.input:
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None))
        out[vi.name] = dims
    return out


def check_requested_dims(proto, requested: Dict[str, Dict[int, str]], what: str) -> None:
    """requested: {graph input name: {dim: label}} that must be symbolic in the graph."""
    dims = input_dims(proto)
    for name, want in requested.items():
        got = dims.get(name)
        if got is None:
            continue
        for i, label in want.items():
            if i < len(got) and isinstance(got[i], int):
                raise GraphCheckError(
                    f"{what}: input {name!r} dim {i} was asked to be dynamic ({label!r}) but the export is "
                    f"specialised to {got[i]} there (the model's code fixes that size, e.g. a reshape with a "
                    f"literal or a shape-dependent branch); make the model size-agnostic or leave the dim static")
