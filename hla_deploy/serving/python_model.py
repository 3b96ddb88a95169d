"""Triton Python-backend model `hla_lm`: the toolkit's runtime behind Triton's sequence batcher.

Loaded by the repository's ``1/model.py`` (hla_deploy.serving.repository) inside Triton's Python
backend stub; imports `triton_python_backend_utils`, so only importable there. Each model
instance holds one runtime session (OrtHLASession for .onnx, TrtHLASession for .plan) and a
SequenceTable: one device state per live correlation id (see hla_deploy.serving.sequences).
Every request is [1, T] input_ids plus the START / END / READY / CORRID control tensors; it
gets logits [1, T, V] or an error response naming its correlation id. Null requests of the
direct strategy (READY = 0) get an empty response and touch no state.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hla_deploy.serving.sequences import SequenceTable


def _scalar(request, name: str, default=0):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else t.as_numpy().reshape(-1)[0].item()


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        model_dir = Path(args["model_repository"]) / args["model_version"]
        model_file = model_dir / params["model_file"]
        device = params.get("device", "cpu")
        if model_file.suffix == ".onnx":
            from hla_deploy.runtime.ort_session import OrtHLASession
            sess = OrtHLASession(model_file, device=device, library=params.get("op_library") or None,
                                 device_id=int(args.get("model_instance_device_id", 0) or 0),
                                 intra_op_num_threads=int(params.get("intra_op_num_threads", "1")))
        else:
            from hla_deploy.runtime.trt_session import TrtHLASession
            sess = TrtHLASession(model_file, plugin_path=params.get("trt_plugin") or None)
        self.vocab = int(sess.vocab_size)
        self.table = SequenceTable(sess, int(params["max_sequences"]), float(params["idle_timeout_s"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            corrid = _scalar(request, "CORRID", None)
            if corrid is None:
                corrid = request.correlation_id()
            if not _scalar(request, "READY", 1):  # a null request (direct strategy): no state touched
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("logits", np.zeros((1, 0, self.vocab), np.float32))]))
                continue
            try:
                ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
                if ids.ndim != 2 or ids.shape[0] != 1:
                    raise ValueError(f"correlation id {corrid}: input_ids must be one sequence [1, T], "
                                     f"got shape {list(ids.shape)}")
                logits = self.table.run(corrid, ids[0], start=bool(_scalar(request, "START")),
                                        end=bool(_scalar(request, "END")))
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("logits", logits[None])]))
            except Exception as e:  # one bad request fails alone, named; the others still run
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"hla_lm: {e}")))
        return responses

    def finalize(self):
        self.table = None
