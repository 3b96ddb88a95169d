"""Exporters: any PyTorch model built with HLA -> ONNX (custom HLARecurrentStep node or standard ops) -> TensorRT.

    from hla_deploy.exporters import export_onnx, translation_table
    export_onnx(model, example_inputs, "model.onnx", op="custom" | "standard", dtype="fp32" | "fp16")
    export_onnx("ckpt_dir", None, "model.onnx")          # HLALanguageModel checkpoints: no example needed
    torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())

Sub-packages by job (heavy imports stay inside their modules; importing this package is cheap):
    onnx/       the torch.onnx seam: export.py (export_onnx / build_onnx_model), torch_translation.py (the
                custom op -> ONE HLARecurrentStep node), dynamic.py, graph_checks.py, verify.py,
                lm_interface.py (HLALanguageModel's graph interface), errors.py, cli_export.py (`hla-deploy export`)
    node/       the HLARecurrentStep ONNX node: schema.py (register_hla_schema), attrs.py (attribute rules, N)
    standard/   the standard-op rewrite: lowering.py (lower_custom_nodes, standard_hla_graph), chunk_math.py
                (its numpy twin, checked in float64 against the recurrence), graph_builder.py
    tensorrt/   ONNX -> TensorRT engine: engine.py (build_engine), cli_build_engine.py (`hla-deploy build-engine`)
    bundle/     device bundles: write.py (write_bundle), check.py (shipped as hla_check.py), golden.py,
                kernels.py, scripts.py, readme_device.py, cli_bundle.py (`hla-deploy bundle`)
The serving rewrite (state batch-first) is hla_deploy.serving.state_batch_first; layout: docs/ARCHITECTURE.md.
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
    inputs, batch of the states; see exporters/onnx/dynamic.py). Before writing, the graph is run at a
    second batch and length against the module. Raises CheckpointError for a bad checkpoint and
    ExportError (a ValueError) naming the module / input otherwise; never leaves a partial file.
    """
    from .onnx.export import export_onnx as _export_onnx
    return _export_onnx(model, example_inputs, out_path, op=op, dtype=dtype, dynamic_shapes=dynamic_shapes,
                        input_names=input_names, output_names=output_names)


def translation_table():
    """{torch.ops.hla_deploy.hla_recurrent_step.default: onnxscript fn} for users calling
    torch.onnx.export(..., dynamo=True, custom_translation_table=translation_table()) themselves."""
    from .onnx.torch_translation import translation_table as _table
    return _table()


__all__ = ["export_onnx", "translation_table"]
