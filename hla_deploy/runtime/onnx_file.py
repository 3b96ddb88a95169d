"""Read an exported hla-deploy ONNX file with the `onnx` package (no onnxruntime, no TensorRT).

    model, meta = read_export("model.onnx")   # onnx.ModelProto (external data not loaded), metadata dict
    export_op(model, meta)                    # "custom" (HLARecurrentStep nodes) | "standard"

read_export raises, naming the file: FileNotFoundError (missing), IsADirectoryError (a directory),
ValueError (not a readable ONNX model, or not an hla-deploy export: the graph lacks inputs
input_ids / state or outputs logits / state_out).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple, Union

from .session_base import INPUTS, OUTPUTS

CUSTOM_OP_TYPE = "HLARecurrentStep"


def read_export(path: Union[str, os.PathLike]) -> Tuple[object, Dict[str, str]]:
    """(onnx.ModelProto, {metadata key: value}) of an hla-deploy export; see the module docstring."""
    import onnx

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"ONNX model {path} is a directory; expected an exported .onnx file")
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ValueError(f"could not read ONNX model {path}: {e}") from None
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if set(INPUTS) - set(inputs) or set(OUTPUTS) - set(outputs):
        raise ValueError(f"{path}: expected inputs {INPUTS} and outputs {OUTPUTS} (an hla-deploy export), "
                         f"got inputs {tuple(inputs)} and outputs {tuple(outputs)}")
    return model, {p.key: p.value for p in model.metadata_props}


def export_op(model, meta: Dict[str, str]) -> str:
    """"custom" or "standard": the ``hla_deploy.op`` metadata, else whether the graph holds an
    HLARecurrentStep node."""
    op = meta.get("hla_deploy.op")
    if op in ("custom", "standard"):
        return op
    return "custom" if any(n.op_type == CUSTOM_OP_TYPE for n in model.graph.node) else "standard"
