"""Triton Python-backend model `hla_lm`: the toolkit's runtime behind Triton's sequence batcher.

Loaded by the repository's ``1/model.py`` (hla_deploy.serving.repository) inside Triton's Python
backend stub; imports `triton_python_backend_utils`, so only importable there. Each model
instance holds one runtime session (OrtHLASession for .onnx, TrtHLASession for .plan) and a
SequenceTable: one device state per live correlation id (see hla_deploy.serving.sequences).
Every request is [1, T] input_ids plus the START / END / READY / CORRID control tensors; it
gets logits [1, T, V] or an error response naming its correlation id. All requests of one
``execute`` (a batch formed by Triton's sequence batcher: distinct sequences) go to
SequenceTable.run_batch, which runs the steps of equal length in ONE runtime call; a request
that fails gets its error alone. Null requests of the direct strategy (READY = 0) get an empty
response and touch no state.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hla_deploy.serving.sequences import SequenceTable, Step


def _scalar(request, name: str, default=0):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else t.as_numpy().reshape(-1)[0].item()


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"hla_lm: {message}"))


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
        """All requests of this call: single-token steps (and prompts of equal length) of distinct
        sequences run as one runtime call (SequenceTable.run_batch); each gets its own response."""
        responses = [None] * len(requests)
        steps, where = [], []
        for k, request in enumerate(requests):
            corrid = _scalar(request, "CORRID", None)
            if corrid is None:
                corrid = request.correlation_id()
            if not _scalar(request, "READY", 1):  # a null request (direct strategy): no state touched
                responses[k] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("logits", np.zeros((1, 0, self.vocab), np.float32))])
                continue
            try:
                ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
                if ids.ndim == 2 and ids.shape[0] == 1:
                    ids = ids[0]  # [T]; any other shape is refused by the table, naming the id
                steps.append(Step(corrid, ids, bool(_scalar(request, "START")), bool(_scalar(request, "END"))))
                where.append(k)
            except Exception as e:
                responses[k] = _error(f"correlation id {corrid}: {e}")
        for k, res in zip(where, self.table.run_batch(steps)):
            if isinstance(res, Exception):  # one bad request fails alone, named; the others still run
                responses[k] = _error(str(res))
            else:
                responses[k] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("logits", res[None])])
        return responses

    def finalize(self):
        self.table = None
