"""Exporters: HLALanguageModel -> ONNX (custom HLARecurrentStep node or standard ops) -> TensorRT.

    from hla_deploy.exporters import export_onnx
    export_onnx(model_or_ckpt_dir, example_inputs, "model.onnx", op="custom" | "standard", dtype="fp32" | "fp16")

Modules (heavy imports stay inside them; importing this package is cheap):
    export.py          export_onnx / build_onnx_model (checks the graph, writes atomically)
    lm_graph.py        the model's forward as an ONNX graph, HLA mixer pluggable
    onnx_custom.py     one hla_deploy::HLARecurrentStep node per layer
    onnx_standard.py   the standard-op lowering of HLARecurrentStep (+ standard_hla_graph)
    standard_math.py   the same lowering in numpy (checked in float64 against the recurrence)
    schema.py          the ONNX OpSchema of HLARecurrentStep (register_hla_schema)
    graph_builder.py   small onnx.helper graph builder (opset 17, IR 9)
    cli_export.py      `hla-deploy export`
    tensorrt_engine.py, cli_build_engine.py   ONNX -> TensorRT engine (`hla-deploy build-engine`)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def export_onnx(model, example_inputs, out_path: Union[str, os.PathLike], *, op: str = "custom",
                dtype: str = "fp32", dynamic_shapes=None, input_names=None, output_names=None) -> Path:
    """Export a model (an HLALanguageModel or a checkpoint directory; example_inputs may then be
    None) to ONNX; returns the output Path.

    op: "custom" (one hla_deploy::HLARecurrentStep node per layer) or "standard" (standard ONNX
    ops only). dtype: "fp32" or "fp16" (state and logits stay float32). Raises CheckpointError
    for a bad checkpoint and ExportError (a ValueError) for an unsupported option; never leaves
    a partial output file.
    """
    from .export import export_onnx as _export_onnx
    return _export_onnx(model, example_inputs, out_path, op=op, dtype=dtype, dynamic_shapes=dynamic_shapes,
                        input_names=input_names, output_names=output_names)


__all__ = ["export_onnx"]
