"""A small ONNX graph builder over onnx.helper: unique names, constants, initializers, model assembly.

Used by onnx_standard.py (the standard-op lowering of HLARecurrentStep, spliced into exported
graphs, and its stand-alone single-node graphs for tests and benchmarks). Stand-alone graphs use
opset ai.onnx 17 and, for the custom node, hla_deploy 1, IR version 9; the ops the lowering emits
mean the same in opset 18, the opset of model exports (exporters/onnx/export.py).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_OPSET = 17
HLA_OPSET = 1
IR_VERSION = 9

#: exporter dtype name -> (numpy dtype, ONNX TensorProto type)
DTYPES = {
    "fp32": (np.float32, TensorProto.FLOAT),
    "fp16": (np.float16, TensorProto.FLOAT16),
}


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one ONNX graph.

    `op(...)` appends a node and returns its output name(s); `const(array)` adds a (deduplicated)
    constant initializer; `weight(name, array)` adds a named initializer.
    """

    def __init__(self, name: str = "graph", prefix: str = ""):
        self.name = name
        self.prefix = prefix            # prepended to every generated node/value name
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self.outputs: List[onnx.ValueInfoProto] = []
        self._names: Dict[str, int] = {}
        self._consts: Dict[tuple, str] = {}
        self.uses_hla_domain = False

    # ------------------------------------------------------------------ names
    def fresh(self, hint: str) -> str:
        hint = self.prefix + hint
        n = self._names.get(hint, 0)
        self._names[hint] = n + 1
        return hint if n == 0 else f"{hint}_{n}"

    # ------------------------------------------------------------------ values
    def input(self, name: str, elem_type: int, shape: Optional[Sequence[Union[int, str, None]]]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape)))
        self._names[name] = self._names.get(name, 0) + 1
        return name

    def output(self, name: str, elem_type: int, shape: Optional[Sequence[Union[int, str, None]]]) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape)))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C", copy=True), name))
        return name

    def const(self, value, dtype=np.int64, hint: str = "const") -> str:
        """A constant initializer; identical (dtype, shape, values) constants are shared."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(hint, arr)
        return self._consts[key]

    # ------------------------------------------------------------------ nodes
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, *, hint: Optional[str] = None,
           domain: str = "", outputs: Optional[Sequence[str]] = None, **attrs):
        """Append a node; returns its output name (n_out == 1) or a list of names."""
        base = hint or op_type.lower()
        outs = list(outputs) if outputs is not None else [self.fresh(f"{base}_out{i}" if n_out > 1 else base)
                                                          for i in range(n_out)]
        node = helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{base}_node"),
                                domain=domain or None, **attrs)
        if domain:
            self.uses_hla_domain = True
        self.nodes.append(node)
        return outs[0] if len(outs) == 1 else outs

    # ------------------------------------------------------------------ common small patterns
    def cast(self, x: str, to: int, hint: str = "cast") -> str:
        return self.op("Cast", [x], to=to, hint=hint)

    def transpose(self, x: str, perm: Sequence[int], hint: str = "transpose") -> str:
        return self.op("Transpose", [x], perm=list(perm), hint=hint)

    def reshape(self, x: str, shape: Sequence[int], hint: str = "reshape") -> str:
        """Reshape with ONNX semantics (0 copies the input dim, -1 is inferred)."""
        return self.op("Reshape", [x, self.const(list(shape))], hint=hint)

    def unsqueeze(self, x: str, axes: Sequence[int], hint: str = "unsqueeze") -> str:
        return self.op("Unsqueeze", [x, self.const(list(axes))], hint=hint)

    def slice(self, x: str, start: int, end: int, axis: int, hint: str = "slice") -> str:
        return self.op("Slice", [x, self.const([start]), self.const([end]), self.const([axis])], hint=hint)

    def matmul_t(self, a: str, b: str, hint: str = "matmul_t") -> str:
        """a @ b^T over the last two axes (rank-4 operands)."""
        return self.op("MatMul", [a, self.transpose(b, [0, 1, 3, 2], hint=hint + "_T")], hint=hint)

    # ------------------------------------------------------------------ assembly
    def make_model(self, metadata: Optional[Dict[str, str]] = None, doc: str = "",
                   producer: str = "hla-deploy") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", ONNX_OPSET)]
        if self.uses_hla_domain:
            opsets.append(helper.make_opsetid("hla_deploy", HLA_OPSET))
        model = helper.make_model(graph, opset_imports=opsets, producer_name=producer, doc_string=doc)
        model.ir_version = IR_VERSION
        if metadata:
            helper.set_model_props(model, {k: str(v) for k, v in metadata.items()})
        return model
