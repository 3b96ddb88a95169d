"""Exporters: any PyTorch model built with HLA -> ONNX (custom HLARecurrentStep node or standard ops) -> TensorRT.

    from hla_deploy.exporters import export_onnx, translation_table
    export_onnx(model, example_inputs, "model.onnx", op="custom" | "standard", dtype="fp32" | "fp16")
    export_onnx("ckpt_dir", None, "model.onnx")          # HLALanguageModel checkpoints: no example needed
    torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())

Modules (heavy imports stay inside them; importing this package is cheap):
    export.py            export_onnx / build_onnx_model (torch.onnx dynamo export, checks, atomic write)
    torch_translation.py the custom op -> ONE hla_deploy::HLARecurrentStep node (translation_table)
    lm_interface.py      HLALanguageModel's graph interface (input/output names, dims, metadata)
    dynamic.py           example arguments and default dynamic shapes
    graph_checks.py      states in and out, requested dims dynamic
    verify.py            the graph at a second batch and length vs the torch module
    onnx_standard.py     the standard-op lowering of HLARecurrentStep (lower_custom_nodes, standard_hla_graph)
    standard_math.py     the same lowering in numpy (checked in float64 against the recurrence)
    schema.py            the ONNX OpSchema of HLARecurrentStep (register_hla_schema)
    graph_builder.py     small onnx.helper graph builder (used by the lowering)
    cli_export.py        `hla-deploy export`
    tensorrt_engine.py, cli_build_engine.py   ONNX -> TensorRT engine (`hla-deploy build-engine`)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def export_onnx(model, example_inputs, out_path: Union[str, os.PathLike], *, op: str = "custom",
                dtype: str = "fp32", dynamic_shapes=None, input_names=None, output_names=None) -> Path:
    """Export any nn.Module whose forward takes and returns HLA states as tensors (or an
    HLALanguageModel / checkpoint directory; example_inputs may then be None) to ONNX; returns the
    output Path.

    op: "custom" (one hla_deploy::HLARecurrentStep node per HLA call) or "standard" (standard ONNX
    ops only). dtype: "fp32" or "fp16" (parameters float16; HLA states float32; an LM's logits
    float32). dynamic_shapes: as torch.export takes it (None: dim 0 "batch" and dim 1 "seq" of the
    inputs, batch of the states; see exporters/dynamic.py). Before writing, the graph is run at a
    second batch and length against the module. Raises CheckpointError for a bad checkpoint and
    ExportError (a ValueError) naming the module / input otherwise; never leaves a partial file.
    """
    from .export import export_onnx as _export_onnx
    return _export_onnx(model, example_inputs, out_path, op=op, dtype=dtype, dynamic_shapes=dynamic_shapes,
                        input_names=input_names, output_names=output_names)


def translation_table():
    """{torch.ops.hla_deploy.hla_recurrent_step.default: onnxscript fn} for users calling
    torch.onnx.export(..., dynamo=True, custom_translation_table=translation_table()) themselves."""
    from .torch_translation import translation_table as _table
    return _table()


__all__ = ["export_onnx", "translation_table"]
