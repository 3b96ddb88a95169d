"""A one-node ONNX graph around hla_deploy::HLARecurrentStep, for op-level tests and benchmarks.

    model = single_node_model(dtype="float32", variant="hla2", decay=[0.9], normalize=1)
    sess = single_node_session(model, library)          # onnxruntime.InferenceSession (CPU EP)
    o, state_out = sess.run(None, {"q": q, "k": k, "v": v, "state": state})

Inputs q, k [B, T, H, d], v [B, T, H, dv] (dtype), state [B, H, N] float32; outputs o (dtype),
state_out float32; every dim dynamic. Attributes are passed through as given (so tests can also
build invalid nodes). Opsets: ai.onnx 17 and hla_deploy 1; IR version 9.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

_DTYPES = {"float32": 1, "float16": 10, "bfloat16": 16, "float64": 11}  # onnx.TensorProto values


def single_node_model(dtype: str = "float32", state_dtype: str = "float32", k_dtype: Optional[str] = None,
                      v_dtype: Optional[str] = None, cast_io: bool = False, declare_shapes: bool = True,
                      **attrs):
    """onnx.ModelProto with one HLARecurrentStep node (attrs as onnx.helper.make_node kwargs).

    cast_io: the graph takes and returns float32 q, k, v, o and Casts them to/from `dtype` around
    the node (feeds bfloat16, which numpy has no type for).
    declare_shapes: False leaves the input shapes undeclared, so ORT feeds any rank to the node
    (tests of the op's own shape checks).
    """
    from onnx import helper

    def elem(name):
        if name not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
        return _DTYPES[name]

    t = elem(dtype)
    io = elem("float32") if cast_io else None
    shp = (lambda s: s) if declare_shapes else (lambda s: None)
    ins = [helper.make_tensor_value_info("q", io or t, shp(["B", "T", "H", "d"])),
           helper.make_tensor_value_info("k", io or elem(k_dtype or dtype), shp(["B", "T", "H", "d"])),
           helper.make_tensor_value_info("v", io or elem(v_dtype or dtype), shp(["B", "T", "H", "dv"])),
           helper.make_tensor_value_info("state", elem(state_dtype), shp(["B", "H", "N"]))]
    outs = [helper.make_tensor_value_info("o", io or t, None),
            helper.make_tensor_value_info("state_out", elem("float32"), None)]
    nodes = []
    names = ["q", "k", "v", "state"]
    if cast_io:
        for i in range(3):
            nodes.append(helper.make_node("Cast", [names[i]], [names[i] + "_c"], to=t))
            names[i] += "_c"
    nodes.append(helper.make_node("HLARecurrentStep", names, ["o_c" if cast_io else "o", "state_out"],
                                  domain="hla_deploy", name="hla", **attrs))
    if cast_io:
        nodes.append(helper.make_node("Cast", ["o_c"], ["o"], to=io))
    graph = helper.make_graph(nodes, "hla_recurrent_step", ins, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("hla_deploy", 1)], ir_version=9)


def single_node_session(model, library: Union[str, Path], intra_op_num_threads: Optional[int] = None):
    """onnxruntime.InferenceSession (CPU EP) of `model` with the custom-op library registered."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(library))
    if intra_op_num_threads is not None:
        so.intra_op_num_threads = intra_op_num_threads
    so.log_severity_level = 4  # errors come back as exceptions; keep stderr quiet
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
