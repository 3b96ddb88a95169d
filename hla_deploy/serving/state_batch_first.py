"""Rewrite an exported hla-deploy graph so its state is batch-first, for Triton's implicit state.

    state_batch_first("model.onnx", "model_bf.onnx")   # state / state_out [L, B, H, N] -> [B, L, H, N]

Triton's sequence batcher keeps a model's state itself ("implicit state") only for models with
max_batch_size > 0, and then batches the state along dim 0 like every other input; the export's
state is [L, B, H, N] (batch at dim 1). This rewrite renames nothing the client sees: the new graph
takes `state` [B, L, H, N], transposes it (perm 1, 0, 2, 3) into the original graph's state, and
transposes the original `state_out` back to [B, L, H, N]. input_ids [B, T] and logits [B, T, V]
are already batch-first. Numerically the graph is unchanged (two transposes, no arithmetic).
The metadata gains ``hla_deploy.state_layout = "BLHN"``. Pure `onnx`; no torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from hla_deploy._atomic import atomic_path

PathLike = Union[str, os.PathLike]
STATE_LAYOUT_KEY = "hla_deploy.state_layout"
_PERM = [1, 0, 2, 3]  # [L, B, H, N] <-> [B, L, H, N] (its own inverse)


def state_batch_first_model(model):
    """The rewritten onnx.ModelProto (see module docstring); `model` is not modified."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(STATE_LAYOUT_KEY) == "BLHN":
        raise ValueError("the graph's state is already batch-first (hla_deploy.state_layout = BLHN)")
    g = model.graph
    inputs = {i.name: i for i in g.input}
    outputs = {o.name: o for o in g.output}
    if "state" not in inputs or "state_out" not in outputs:
        raise ValueError(f"expected an hla-deploy export with input 'state' and output 'state_out', got inputs "
                         f"{sorted(inputs)} and outputs {sorted(outputs)}")
    for vi in (inputs["state"], outputs["state_out"]):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise ValueError(f"{vi.name} must have rank 4 [L, B, H, N], got rank {len(dims)}")
    taken = {n for node in g.node for n in list(node.input) + list(node.output)} | set(inputs) | set(outputs)

    def fresh(hint: str) -> str:
        name, i = hint, 0
        while name in taken:
            i += 1
            name = f"{hint}_{i}"
        taken.add(name)
        return name

    inner_state, inner_out = fresh("state_lbhn"), fresh("state_out_lbhn")
    for node in g.node:  # the old graph now reads inner_state and writes inner_out
        node.input[:] = [inner_state if n == "state" else n for n in node.input]
        node.output[:] = [inner_out if n == "state_out" else n for n in node.output]
    for vi, old in ((inputs["state"], "state"), (outputs["state_out"], "state_out")):
        dims = vi.type.tensor_type.shape.dim
        l_dim, b_dim = onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension()
        l_dim.CopyFrom(dims[0])
        b_dim.CopyFrom(dims[1])
        dims[0].CopyFrom(b_dim)
        dims[1].CopyFrom(l_dim)
    g.node.insert(0, helper.make_node("Transpose", ["state"], [inner_state], perm=_PERM, name=fresh("state_to_lbhn")))
    g.node.append(helper.make_node("Transpose", [inner_out], ["state_out"], perm=_PERM, name=fresh("state_out_to_blhn")))
    helper.set_model_props(model, {**meta, STATE_LAYOUT_KEY: "BLHN"})
    return model


def state_batch_first(onnx_path: PathLike, out_path: PathLike) -> Path:
    """Write the batch-first-state version of `onnx_path` to `out_path` (atomically); returns it."""
    import onnx

    from hla_deploy.runtime.onnx_file import read_export

    src = Path(onnx_path)
    model, _ = read_export(src)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ValueError(f"{src}: external-data initializers are not supported by state_batch_first")
    out = Path(out_path)
    new = state_batch_first_model(model)
    with atomic_path(out, suffix=".onnx") as tmp:
        onnx.save(new, str(tmp))
    return out
