"""Checkpoint directories: `config.json` (HLAConfig.to_dict) + `model.safetensors` (the state dict)
+ `manifest.json` (the SHA-256 of every weight file, hla_deploy.checkpoint_manifest).

Every file is written atomically (a temp file in the same directory, then os.replace), so a
reader never sees a half-written file; the manifest is removed first and written last, so a save
cut short leaves a checkpoint without digests (it loads with a warning), never one whose digests
describe other weights. Every load verifies the weights against the manifest before reading them.
The model class is not imported here (hla_deploy.models.model imports this module): save_checkpoint
and fill_model take the model; HLALanguageModel.load / load_checkpoint build it.
Every problem found while loading raises CheckpointError (a ValueError and a
hla_deploy.exit_codes.UsageError: exit status 2 in every CLI) naming the file and, for tensors,
the tensor name and the expected/actual shape, for a digest mismatch both digests.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from hla_deploy._atomic import atomic_path
from hla_deploy.exit_codes import UsageError
from hla_deploy import checkpoint_manifest as digests
from hla_deploy.models.config import HLAConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

PathLike = Union[str, os.PathLike]


class CheckpointError(UsageError):
    """A checkpoint directory is missing, corrupt, or does not match its config or its digests."""


def _atomic_write(path: Path, write_fn) -> None:
    """Call write_fn(tmp_path) then rename tmp_path to path; the temp file is removed on failure."""
    with atomic_path(path) as tmp:
        write_fn(str(tmp))


def save_checkpoint(model, directory: PathLike, metadata: Dict[str, str] = None) -> Path:
    """Save `model` (an HLALanguageModel) to `directory`: config.json + model.safetensors +
    manifest.json (the weights' SHA-256, checked by every load)."""
    from safetensors.torch import save_file
    import hla_deploy

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    meta = {"format": "pt", "hla_deploy.version": hla_deploy.__version__,
            "hla_deploy.config": json.dumps(model.config.to_dict(), sort_keys=True)}
    if metadata:
        meta.update({str(k): str(v) for k, v in metadata.items()})
    digests.remove_manifest(directory)  # until the new digests are written (see the module docstring)
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=meta))
    text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"

    def write_config(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic_write(directory / CONFIG_NAME, write_config)
    digests.write_manifest(directory, [WEIGHTS_NAME])
    return directory


def load_config(directory: PathLike) -> HLAConfig:
    """Read and validate `directory`/config.json; raises CheckpointError naming the file."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"checkpoint {str(directory)!r} is a file; expected a directory holding "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist "
                              f"(expected a directory holding {CONFIG_NAME} and {WEIGHTS_NAME})")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint config {str(path)!r} is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint config {str(path)!r} is not valid JSON: {e}") from e
    try:
        return HLAConfig.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint config {str(path)!r} is invalid: {e}") from e


def load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU after checking it against the manifest.json beside it
    (hla_deploy.checkpoint_manifest); raises CheckpointError naming the file."""
    from safetensors.torch import load_file
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights {str(path)!r} are missing")
    try:
        digests.verify(path.parent, [path.name])
    except digests.DigestError as e:
        raise CheckpointError(str(e)) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError for corrupt files
        raise CheckpointError(f"checkpoint weights {str(path)!r} are corrupt or not a safetensors file: "
                              f"{type(e).__name__}: {e}") from e


def saved_config(path: Path) -> Optional[dict]:
    """The config (HLAConfig.to_dict) that save_checkpoint recorded in the safetensors metadata of
    ``path`` (key ``hla_deploy.config``), or None when there is none (weights written elsewhere)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("hla_deploy.config")
        return None if raw is None else HLAConfig.from_dict(json.loads(raw)).to_dict()
    except Exception as e:  # the header was readable a moment ago (load_tensors); the metadata is not
        raise CheckpointError(f"checkpoint weights {str(path)!r}: unreadable 'hla_deploy.config' metadata: "
                              f"{type(e).__name__}: {e}") from e


def _check_saved_config(config: HLAConfig, wpath: Path) -> None:
    """config.json must describe the model the weights were saved with: the fields that do not
    change tensor shapes (variant, decay, normalize, eps, ridge, ...) would otherwise load silently
    into a different model."""
    saved = saved_config(wpath)
    if saved is None:
        return
    ours = config.to_dict()
    diffs = [k for k in sorted(set(ours) | set(saved)) if ours.get(k) != saved.get(k)]
    if diffs:
        shown = ", ".join(f"{k}: {CONFIG_NAME} has {ours.get(k)!r}, the weights were saved with {saved.get(k)!r}"
                          for k in diffs)
        raise CheckpointError(f"checkpoint {str(wpath.parent)!r}: {CONFIG_NAME} does not describe the model "
                              f"{WEIGHTS_NAME} was saved from ({shown}); is {CONFIG_NAME} from another "
                              f"checkpoint?")


def _few(names, shown: int = 4) -> str:
    """A list of names for an error message, cut after ``shown`` (one readable line)."""
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return f"{names[:shown]}{more}"


def fill_model(model, directory: PathLike):
    """Load `directory`'s weights into `model` (built from `directory`'s config, e.g. by
    HLALanguageModel.load), checking every tensor name, shape and dtype; returns `model`. Takes the
    model rather than building it, so this module does not import the model class."""
    config = model.config
    wpath = Path(directory) / WEIGHTS_NAME
    tensors = load_tensors(wpath)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"checkpoint weights {str(wpath)!r} lack tensor(s) {_few(missing)} required by "
                              f"{CONFIG_NAME} (n_layers={config.n_layers}, "
                              f"tie_embeddings={config.tie_embeddings})")
    if unexpected:
        raise CheckpointError(f"checkpoint weights {str(wpath)!r} hold unexpected tensor(s) {_few(unexpected)} "
                              f"not in the model described by {CONFIG_NAME}")
    for name, ref in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(f"checkpoint weights {str(wpath)!r}: tensor {name!r} has shape "
                                  f"{list(t.shape)}, expected {list(ref.shape)} from {CONFIG_NAME}")
        if not t.dtype.is_floating_point:
            raise CheckpointError(f"checkpoint weights {str(wpath)!r}: tensor {name!r} has dtype {t.dtype}, "
                                  f"expected a floating-point dtype")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"checkpoint weights {str(wpath)!r}: tensor {name!r} holds NaN or Inf")
    _check_saved_config(config, wpath)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    return model
