"""Parity between exported graphs, without a checkpoint (and without torch): the reference is the
float32 standard-op graph run in stock onnxruntime (CPU EP, no custom-op library), and the model
description comes from its ``hla_deploy.config`` metadata.

    GraphConfig.from_metadata(meta, path)   n_layers, n_heads, state_size, vocab_size, to_dict()
    GraphReference(ctx)                     the Reference interface of hla_deploy.parity.backends

The standard-op graph is the exporter's lowering of HLARecurrentStep into plain ONNX ops, a second
implementation of the op next to the C++/CUDA kernels, so the custom-op graph on ort-cpu, ort-cuda
or trt is checked against it. What this cannot see (the torch model itself) is what a run with the
checkpoint checks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from hla_deploy.exit_codes import UsageError


class GraphConfig:
    """The model description an hla-deploy export carries (metadata ``hla_deploy.config``)."""

    def __init__(self, raw: Dict, path: Path):
        from hla_deploy.state_layout import state_size  # torch-free
        self._raw = dict(raw)
        try:
            self.n_layers = int(raw["n_layers"])
            self.n_heads = int(raw["n_heads"])
            self.vocab_size = int(raw.get("vocab_size", 256))
            self.variant = str(raw["variant"])
            self.head_dim, self.value_dim = int(raw["head_dim"]), int(raw["value_dim"])
            self.normalize, self.ridge = bool(raw.get("normalize", False)), float(raw.get("ridge", 0.0))
            self.state_size = int(state_size(self.variant, self.head_dim, self.value_dim, self.normalize,
                                             self.ridge))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{path}: the 'hla_deploy.config' metadata does not describe an HLA language "
                             f"model ({type(e).__name__}: {e})") from None

    @classmethod
    def from_metadata(cls, meta: Dict[str, str], path: Path) -> "GraphConfig":
        raw = meta.get("hla_deploy.config")
        if raw is None:
            raise UsageError(f"{path} has no 'hla_deploy.config' metadata, so it cannot be the reference of a "
                             f"parity run without a checkpoint (re-export it with `hla-deploy export`)")
        try:
            return cls(json.loads(raw), path)
        except ValueError as e:
            if isinstance(e, UsageError):
                raise
            raise UsageError(f"{path}: the 'hla_deploy.config' metadata is not JSON ({e})") from None

    def to_dict(self) -> Dict:
        return dict(self._raw)


def check_reference_graph(path: Path, meta: Dict[str, str]) -> None:
    """The standard-op graph used as the reference must be a float32 export."""
    dtype = meta.get("hla_deploy.dtype", "fp32")
    if dtype != "fp32":
        raise UsageError(f"{path} is a {dtype} export; without a checkpoint the standard-op graph is the "
                         f"reference and must be float32 (export one with `hla-deploy export CKPT --op "
                         f"standard --dtype fp32`)")


class GraphReference:
    """The float32 standard-op graph in onnxruntime's CPU EP as the reference (greedy decode)."""

    form, device = "onnx-standard", "cpu"

    def __init__(self, ctx):
        self.ctx = ctx
        self.path: Optional[Path] = ctx.onnx_given.get("standard")
        self.description = (f"the float32 standard-op graph {self.path} in onnxruntime (CPUExecutionProvider, "
                            f"no custom-op library); no checkpoint given, so the torch model is not checked")
        self.session = None

    def run_batches(self, batches, decode_steps: int):
        from hla_deploy.ort_install import require_onnxruntime

        from .backends import greedy_reference
        ort = require_onnxruntime()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])

        def step(ids, state):
            logits, state_out = self.session.run(["logits", "state_out"], {
                "input_ids": np.ascontiguousarray(ids, dtype=np.int64),
                "state": np.ascontiguousarray(state, dtype=np.float32)})
            return np.asarray(logits, dtype=np.float32), np.asarray(state_out, dtype=np.float32)
        return [greedy_reference(step, self.ctx.zero_state(ids.shape[0]), ids, decode_steps, lambda s: s)
                for ids in batches]

    def info(self) -> dict:
        return {"form": self.form, "device": self.device, "dtype": "fp32", "description": self.description}
