"""Optional dependencies: which extra of hla-deploy brings which module, and the error saying what
to install (exit status 3 in every `hla-deploy` subcommand).

    require_extra("export", "hla-deploy export")   MissingDependencyError unless torch, onnxscript and
                                                   safetensors are importable
    missing_modules("export") -> list[str]         the extra's modules that are not installed
    MissingDependencyError                         an ImportError whose message says what to install
    install_hint(extra) -> str                     "pip install 'hla-deploy[export]'" (+ checkout form)

The base install is the runtime (numpy, onnx; onnxruntime from [cpu] or [gpu]): ONNX Runtime
sessions, `generate` on .onnx, parity between exported graphs, bundle checks. The extra
``[export]`` adds torch, onnxscript and safetensors, which export, training, quickstart, checkpoints
and the torch backends need. Only ``importlib.util.find_spec`` is used here: nothing is imported.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List, Tuple

#: extra -> (the modules it provides, what they are for)
EXTRAS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "export": (("torch", "onnxscript", "safetensors"),
               "torch, onnxscript and safetensors: checkpoints, export, training, quickstart, the torch backends"),
    "serve": (("pytriton", "tritonclient"), "Triton Inference Server (nvidia-pytriton) and its clients"),
    "tensorrt": (("tensorrt",), "TensorRT's Python package"),
}

#: module -> the extra that installs it (for turning a bare ModuleNotFoundError into a hint)
MODULE_EXTRA = {m: extra for extra, (mods, _) in EXTRAS.items() for m in mods}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; ``str(exc)`` says what to install. Exit status 3."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, e.g. "`pip install 'hla-deploy[export]'` (in a source
    checkout `pip install -e '.[export]'`)"."""
    hint = f"`pip install 'hla-deploy[{extra}]'` (in a source checkout `pip install -e '.[{extra}]'`"
    if extra == "export":
        # a plain `torch` requirement resolves to a CUDA build of several GB on most Linux machines
        hint += "; for a CPU-only torch, install torch first, as the README's set-up command does"
    return hint + ")"


def missing_modules(extra: str) -> List[str]:
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {', '.join(EXTRAS)}")
    return [m for m in EXTRAS[extra][0] if _find_spec(m) is None]


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a blocked or broken module counts as missing
        return None


def missing_extra_message(extra: str, purpose: str, missing: List[str]) -> str:
    return (f"{purpose} needs the [{extra}] extra ({EXTRAS[extra][1]}); not installed here: "
            f"{', '.join(missing)}. Install it: {install_hint(extra)}")


def require_extra(extra: str, purpose: str) -> None:
    """Raise MissingDependencyError naming ``purpose`` and the command to run when a module of
    ``extra`` is missing."""
    missing = missing_modules(extra)
    if missing:
        raise MissingDependencyError(missing_extra_message(extra, purpose, missing))


def from_module_not_found(exc: ModuleNotFoundError, purpose: str):
    """A MissingDependencyError for ``exc`` when the missing module belongs to an extra, else None."""
    top = (exc.name or "").split(".")[0]
    extra = MODULE_EXTRA.get(top)
    if extra is None:
        return None
    return MissingDependencyError(missing_extra_message(extra, purpose, [top]))
