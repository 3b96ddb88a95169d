"""export_onnx: HLALanguageModel (or a checkpoint directory) -> ONNX file.

    export_onnx("ckpt_dir", None, "model.onnx", op="custom", dtype="fp32") -> Path

op="custom":   one `hla_deploy::HLARecurrentStep` node per layer (needs our ORT library / TRT plugin)
op="standard": standard ONNX ops only (opset 17), runs in any ONNX Runtime
dtype="fp32" | "fp16": weights and activations; the state is float32 and the logits float32 always.

The graph is validated (onnx.checker full check, with the HLARecurrentStep schema registered)
before anything is written; the file is written to a temp file in the target directory and
renamed at the end, so a failed export never leaves a partial output file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from hla_deploy._atomic import atomic_path

OPS = ("custom", "standard")
DTYPES = ("fp32", "fp16")


class ExportError(ValueError):
    """The model or an export option cannot be exported (message names the problem)."""


def _load_model(source):
    from hla_deploy.models import HLALanguageModel
    if isinstance(source, HLALanguageModel):
        return source
    if isinstance(source, (str, os.PathLike)):
        return HLALanguageModel.load(source, map_location="cpu")   # raises CheckpointError
    raise TypeError(f"export_onnx expects an HLALanguageModel or a checkpoint directory path, "
                    f"got {type(source).__name__}")


def build_onnx_model(model, op: str = "custom", dtype: str = "fp32"):
    """Build (and check) the onnx.ModelProto for an HLALanguageModel; writes nothing."""
    import onnx

    import hla_deploy
    from .lm_graph import build_lm_graph, model_weights
    from .onnx_custom import custom_hla_emitter
    from .onnx_standard import standard_hla_emitter
    from .schema import register_hla_schema

    if op not in OPS:
        raise ExportError(f"unsupported op {op!r}; expected one of {', '.join(OPS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    config = model.config
    emitter = custom_hla_emitter(config) if op == "custom" else standard_hla_emitter(config)
    gb = build_lm_graph(config, model_weights(model), dtype, emitter)
    metadata = {
        "hla_deploy.config": json.dumps(config.to_dict(), sort_keys=True),
        "hla_deploy.op_contract_version": str(hla_deploy.OP_CONTRACT_VERSION),
        "hla_deploy.version": hla_deploy.__version__,
        "hla_deploy.op": op,
        "hla_deploy.dtype": dtype,
    }
    doc = (f"HLALanguageModel ({config.variant}, {config.n_layers} layers) exported by hla-deploy "
           f"{hla_deploy.__version__}: op={op}, dtype={dtype}")
    proto = gb.make_model(metadata, doc=doc)
    proto.producer_version = hla_deploy.__version__
    register_hla_schema()
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(checkpoint_dir_or_model, example_inputs, out_path: Union[str, os.PathLike], *,
                op: str = "custom", dtype: str = "fp32", dynamic_shapes=None, input_names=None,
                output_names=None) -> Path:
    """Export to ONNX; returns the output Path. See the module docstring."""
    import onnx

    if example_inputs is not None or dynamic_shapes is not None or input_names or output_names:
        raise ExportError("example_inputs / dynamic_shapes / input_names / output_names are not "
                          "supported yet (only HLALanguageModel and checkpoint directories)")

    if op not in OPS:
        raise ExportError(f"unsupported op {op!r}; expected one of {', '.join(OPS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ExportError(f"output path {str(out_path)!r} is a directory; expected a .onnx file path")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"output directory {str(parent)!r} does not exist")
    model = _load_model(checkpoint_dir_or_model)
    proto = build_onnx_model(model, op=op, dtype=dtype)
    try:
        with atomic_path(out_path) as tmp:  # never a half-written .onnx
            onnx.save_model(proto, str(tmp))
    except OSError as e:
        raise ExportError(f"cannot write output file {str(out_path)!r}: {e.strerror or e}") from e
    return out_path
