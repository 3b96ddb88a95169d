"""The exported graph interface of HLALanguageModel (read by hla_deploy.runtime, parity, the C++
runner and the TensorRT path; keep it stable):

    inputs   input_ids [batch, seq] int64,  state [L, batch, H, N] float32
    outputs  logits [batch, seq, V] float32, state_out [L, batch, H, N] float32
    metadata hla_deploy.config (config JSON), hla_deploy.op_contract_version, hla_deploy.version,
             hla_deploy.op ("custom" | "standard"), hla_deploy.dtype ("fp32" | "fp16")

The graph is traced from the module itself (torch.export): `LMExport` only fixes the forward's
signature (state always given). Default dynamic dims: batch and seq of input_ids, batch of state.
"""
from __future__ import annotations

import json
from typing import Dict, Tuple

import torch
import torch.nn as nn

INPUT_NAMES = ["input_ids", "state"]
OUTPUT_NAMES = ["logits", "state_out"]
DYNAMIC_SHAPES = {"input_ids": {0: "batch", 1: "seq"}, "state": {1: "batch"}}
#: example (batch, seq) traced when export_onnx gets example_inputs=None
EXAMPLE_BATCH, EXAMPLE_SEQ = 2, 8


class LMExport(nn.Module):
    """forward(input_ids [B, T] int64, state [L, B, H, N] float32) -> (logits [B, T, V] float32,
    state_out [L, B, H, N] float32): the wrapped HLALanguageModel with the state always passed."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.model(input_ids, state)


def example_inputs(model, batch: int = EXAMPLE_BATCH, seq: int = EXAMPLE_SEQ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [batch, seq] int64 (seeded random ids), zero state [L, batch, H, N] float32)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)
    return ids, model.init_state(batch, device="cpu")


def metadata(config, op: str, dtype: str) -> Dict[str, str]:
    import hla_deploy
    return {
        "hla_deploy.config": json.dumps(config.to_dict(), sort_keys=True),
        "hla_deploy.op_contract_version": str(hla_deploy.OP_CONTRACT_VERSION),
        "hla_deploy.version": hla_deploy.__version__,
        "hla_deploy.op": op,
        "hla_deploy.dtype": dtype,
    }
