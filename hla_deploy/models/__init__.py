"""HLA byte-level language models: config, model, checkpoints, tokenizer, reference generation.

    from hla_deploy.models import HLALanguageModel, default_checkpoint, generate, tokenizer
    model = HLALanguageModel.load(default_checkpoint())
    ids = generate(model, tokenizer.encode("def "), 64)
"""
from __future__ import annotations

from pathlib import Path

from hla_deploy.models import tokenizer
from hla_deploy.models.checkpoint import CheckpointError, save_checkpoint
from hla_deploy.models.config import HLAConfig, geometric_decay
from hla_deploy.models.generate import generate, generate_stream
from hla_deploy.models.model import HLALanguageModel, load_checkpoint

DEFAULT_CHECKPOINT_NAME = "tiny-pystdlib"


def default_checkpoint() -> Path:
    """Path of the trained demo checkpoint shipped in the package (hla_deploy/checkpoints/tiny-pystdlib/).

    Raises FileNotFoundError if the directory or its config.json / model.safetensors is missing
    (e.g. an install that dropped package data).
    """
    path = Path(__file__).resolve().parent.parent / "checkpoints" / DEFAULT_CHECKPOINT_NAME
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"the shipped checkpoint file {str(path / name)!r} is missing; the package was installed "
                f"without its data (hla_deploy/checkpoints/*/*) or the checkpoint was not built yet "
                f"(examples/train_tiny_lm.py)")
    return path


__all__ = ["HLAConfig", "HLALanguageModel", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "generate", "generate_stream", "tokenizer", "default_checkpoint", "geometric_decay"]
