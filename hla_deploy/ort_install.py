"""Which ONNX Runtime distribution is installed (checked when ``hla_deploy`` is imported).

    installed_onnxruntime(path=None) -> {name: version}   e.g. {"onnxruntime-gpu": "1.30.0"}
    onnxruntime_label(path=None) -> str                   "onnxruntime-gpu 1.30.0", or "none"
    conflict_message(dists) -> Optional[str]              how to fix two distributions installed at once
    check_onnxruntime(path=None) -> Optional[str]         warns (OnnxRuntimeConflictWarning) on a conflict
    require_onnxruntime() -> module                       ``import onnxruntime``, or MissingDependencyError
                                                          (an ImportError; exit 3) saying which extra to install

hla-deploy's base dependencies name no ONNX Runtime: the extra ``[cpu]`` installs ``onnxruntime``,
``[gpu]`` installs ``onnxruntime-gpu``. Both distributions provide the same ``onnxruntime`` module
and overwrite each other's files (ONNX Runtime's install guide: never install both), so when more
than one is found a warning says how to keep one. Only package metadata is read (no import of
onnxruntime): importing hla_deploy stays cheap.
"""
from __future__ import annotations

import importlib.metadata as md
import warnings
from typing import Dict, Optional, Sequence

#: Distributions on PyPI that all install the ``onnxruntime`` module.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")
INSTALL_HINT = ("install one ONNX Runtime: `pip install 'hla-deploy[cpu]'` (CPU, package onnxruntime) or "
                "`pip install 'hla-deploy[gpu]'` (CUDA, package onnxruntime-gpu); in a source checkout "
                "`pip install -e '.[cpu]'` or `pip install -e '.[gpu]'`")


class OnnxRuntimeConflictWarning(UserWarning):
    """More than one ONNX Runtime distribution is installed."""


def installed_onnxruntime(path: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Installed ONNX Runtime distributions (first one found on ``path``, default sys.path, per name)."""
    found: Dict[str, str] = {}
    kwargs = {} if path is None else {"path": list(path)}
    for name in ORT_DISTRIBUTIONS:  # a lookup per name (fast), not a scan of every installed package
        for dist in md.distributions(name=name, **kwargs):
            found[name] = dist.version
            break
    return found


def onnxruntime_label(path: Optional[Sequence[str]] = None) -> str:
    dists = installed_onnxruntime(path)
    return ", ".join(f"{n} {v}" for n, v in sorted(dists.items())) or "none"


def conflict_message(dists: Dict[str, str]) -> Optional[str]:
    if len(dists) < 2:
        return None
    names = sorted(dists)
    listed = " and ".join(f"{n} {dists[n]}" for n in names)
    return (f"hla-deploy: {listed} are all installed. They provide the same `onnxruntime` module and "
            f"overwrite each other's files, so which one runs is undefined (ONNX Runtime's install guide: "
            f"install only one). Fix: `pip uninstall -y {' '.join(names)}`, then either "
            f"`pip install 'hla-deploy[gpu]'` (onnxruntime-gpu: CUDA and CPU) or "
            f"`pip install 'hla-deploy[cpu]'` (onnxruntime: CPU only).")


def check_onnxruntime(path: Optional[Sequence[str]] = None) -> Optional[str]:
    """Warn (OnnxRuntimeConflictWarning) when several ONNX Runtime distributions are installed."""
    msg = conflict_message(installed_onnxruntime(path))
    if msg:
        warnings.warn(msg, OnnxRuntimeConflictWarning, stacklevel=3)
    return msg


def require_onnxruntime():
    """``import onnxruntime``; a MissingDependencyError (an ImportError) naming the extra to install
    when it is missing."""
    from .extras import MissingDependencyError
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(f"onnxruntime is not importable ({e}): {INSTALL_HINT}") from e
    return onnxruntime
