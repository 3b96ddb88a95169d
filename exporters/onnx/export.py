"""export_onnx: any nn.Module built with HLA (or an HLALanguageModel / checkpoint dir) -> ONNX file.

    export_onnx(model, example_inputs, "model.onnx", op="custom", dtype="fp32", dynamic_shapes=None,
                input_names=None, output_names=None) -> Path

The module is traced by torch.onnx.export(dynamo=True) with hla_deploy.exporters.translation_table():
each HLA call (torch.ops.hla_deploy.hla_recurrent_step) becomes ONE hla_deploy::HLARecurrentStep
node (docs/OP_CONTRACT.md). The forward must take and return its HLA states as tensors.

op="custom":   HLARecurrentStep nodes (needs our ORT library / TensorRT plugin)
op="standard": the same graph with every custom node lowered to standard ONNX ops (any runtime)
dtype="fp32" | "fp16": fp16 converts the module's parameters and floating buffers to float16.
  HLALanguageModel / checkpoints: inputs and outputs keep their interface (ids int64, state, logits
  float32). Other modules: example_inputs are used as given: pass float16 activations and float32
  HLA states (states are float32 in every backend); outputs are what the float16 module returns.
dynamic_shapes: as torch.export / torch.onnx take it; None = the defaults of exporters/onnx/dynamic.py
  (HLALanguageModel: batch and seq of input_ids, batch of state).
input_names / output_names: graph input / output names (defaults: the forward's parameter names;
  output_0, output_1, ...). HLALanguageModel: input_ids, state -> logits, state_out.
Opset: ai.onnx 18 + hla_deploy 1.

Before anything is written the graph is checked (graph_checks.py: HLA nodes present, states in and
out, requested dims still dynamic; onnx.checker full check with the schema registered) and run at a
second batch and length against the torch module (verify.py); any failure raises ExportError naming
the module and input, and no file is left (hla_deploy/_atomic.py).
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Union

from hla_deploy._atomic import atomic_path, missing_parent

OPS = ("custom", "standard")
DTYPES = ("fp32", "fp16")
ONNX_OPSET = 18


from .errors import ExportError, OutputWriteError  # noqa: E402  (re-exported: hla_deploy.exporters.onnx.export.ExportError)


def _check_options(op, dtype):
    if op not in OPS:
        raise ExportError(f"unsupported op {op!r}; expected one of {', '.join(OPS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def _resolve(source):
    """(nn.Module, HLALanguageModel or None)."""
    import torch.nn as nn

    from hla_deploy.models import HLALanguageModel
    if isinstance(source, HLALanguageModel):
        return source, source
    if isinstance(source, (str, os.PathLike)):
        lm = HLALanguageModel.load(source, map_location="cpu")   # raises CheckpointError
        return lm, lm
    if isinstance(source, nn.Module):
        return source, None
    raise TypeError(f"export_onnx expects an nn.Module (e.g. an HLALanguageModel) or a checkpoint directory "
                    f"path, got {type(source).__name__}")


def _torch_onnx_export(module, args, dynamic_shapes, input_names, output_names, what):
    import logging
    import warnings

    import torch

    from .torch_translation import translation_table
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")   # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, custom_translation_table=translation_table(),
                                        dynamic_shapes=dynamic_shapes, input_names=input_names,
                                        output_names=output_names, opset_version=ONNX_OPSET, verbose=False,
                                        report=False, optimize=True)
    except (ExportError, TypeError) as e:
        raise ExportError(f"torch.onnx.export of {what} failed: {e}") from e
    except Exception as e:  # torch.export / torch.onnx errors: keep their message, name the module
        msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        if len(msg) > 4000:
            msg = msg[:4000] + " ..."
        lead = ""
        for n, name, dim in re.findall(r"static shape of (\d+) for dimension inputs\['(\w+)'\]\.shape\[(\d+)\]", msg):
            lead += (f"input {name!r} dim {dim} was asked to be dynamic but the model specialises it to {n} "
                     f"(a literal size or a shape-dependent branch in its code); ")
        raise ExportError(f"torch.onnx.export of {what} failed ({type(e).__name__}): {lead}{msg}") from e
    finally:
        quiet.setLevel(level)
    return program.model_proto


def build_onnx_model(model, example_inputs=None, *, op: str = "custom", dtype: str = "fp32",
                     dynamic_shapes=None, input_names=None, output_names=None, verify: bool = True):
    """The checked onnx.ModelProto (see the module docstring); writes nothing."""
    import onnx
    import torch
    from onnx import helper

    import hla_deploy
    from . import graph_checks, lm_interface
    from .dynamic import default_dynamic_shapes, positional_args, requested_dynamic_dims, run_and_find_states
    from ..node.schema import register_hla_schema
    from ..standard.lowering import lower_custom_nodes
    from .verify import verify_against_module

    _check_options(op, dtype)
    module, lm = _resolve(model)
    what = type(module).__name__
    module = copy.deepcopy(module).cpu().eval()     # traced and checked on the CPU (a copy: yours is untouched)
    reference = module                              # float32: what verify.py compares against
    if dtype == "fp16":
        module = copy.deepcopy(module).half()
    if lm is not None:
        module, reference = lm_interface.LMExport(module), lm_interface.LMExport(reference)
        if example_inputs is None:
            example_inputs = lm_interface.example_inputs(lm)
        elif isinstance(example_inputs, torch.Tensor) or len(example_inputs) == 1:
            ids = example_inputs if isinstance(example_inputs, torch.Tensor) else example_inputs[0]
            example_inputs = (ids, lm.init_state(ids.shape[0], device="cpu"))
        input_names = input_names or list(lm_interface.INPUT_NAMES)
        output_names = output_names or list(lm_interface.OUTPUT_NAMES)
        if dynamic_shapes is None:
            dynamic_shapes = dict(lm_interface.DYNAMIC_SHAPES)
    elif example_inputs is None:
        raise ExportError(f"export_onnx({what}): example_inputs is required for a module other than "
                          f"HLALanguageModel (a tuple of its forward's arguments, states included)")
    args, arg_names = positional_args(module, example_inputs)
    args = torch.utils._pytree.tree_map(lambda a: a.detach().cpu() if isinstance(a, torch.Tensor) else a, args)
    try:
        outputs, state_storages = run_and_find_states(module, args)
    except Exception as e:
        raise ExportError(f"export_onnx({what}): the module fails on example_inputs "
                          f"({type(e).__name__}: {e})") from e
    if dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(args, arg_names, state_storages)
    requested = requested_dynamic_dims(dynamic_shapes, arg_names)
    n_out = len([x for x in torch.utils._pytree.tree_leaves(outputs) if isinstance(x, torch.Tensor)])
    if output_names is None:
        output_names = [f"output_{i}" for i in range(n_out)]

    register_hla_schema()
    proto = _torch_onnx_export(module, args, dynamic_shapes, input_names, output_names, what)
    graph_names = [i.name for i in proto.graph.input]
    tensor_names = [n for n, a in zip(arg_names, args) if isinstance(a, torch.Tensor)]
    if input_names is None and len(tensor_names) == len(graph_names):
        by_graph = dict(zip(tensor_names, graph_names))
    else:
        by_graph = dict(zip(tensor_names, graph_names)) if len(tensor_names) == len(graph_names) else {}
    graph_checks.check_state_wiring(proto, what)
    graph_checks.check_requested_dims(proto, {by_graph[n]: d for n, d in requested.items() if n in by_graph}, what)
    if op == "standard":
        proto = lower_custom_nodes(proto)
    onnx.checker.check_model(proto, full_check=True)
    if verify:
        verify_against_module(proto, reference, args, fp16=(dtype == "fp16"), what=what)
    meta = (lm_interface.metadata(lm.config, op, dtype) if lm is not None else {
        "hla_deploy.op_contract_version": str(hla_deploy.OP_CONTRACT_VERSION),
        "hla_deploy.version": hla_deploy.__version__, "hla_deploy.op": op, "hla_deploy.dtype": dtype})
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    helper.set_model_props(proto, {**{p.key: p.value for p in kept}, **meta})
    proto.producer_name, proto.producer_version = "hla-deploy", hla_deploy.__version__
    proto.doc_string = f"{what} exported by hla-deploy {hla_deploy.__version__}: op={op}, dtype={dtype}"
    return proto


def export_onnx(model, example_inputs, out_path: Union[str, os.PathLike], *, op: str = "custom",
                dtype: str = "fp32", dynamic_shapes=None, input_names=None, output_names=None) -> Path:
    """Export to ONNX; returns the output Path. See the module docstring."""
    import onnx

    _check_options(op, dtype)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ExportError(f"output path {str(out_path)!r} is a directory; expected a .onnx file path")
    problem = missing_parent(out_path)
    if problem:
        raise ExportError(f"output file {str(out_path)!r}: {problem}")
    proto = build_onnx_model(model, example_inputs, op=op, dtype=dtype, dynamic_shapes=dynamic_shapes,
                             input_names=input_names, output_names=output_names)
    try:
        with atomic_path(out_path) as tmp:  # never a half-written .onnx
            onnx.save_model(proto, str(tmp))
    except OSError as e:
        raise OutputWriteError(f"cannot write output file {str(out_path)!r}: {e.strerror or e}") from e
    return out_path
