"""manifest.json of a checkpoint directory: the SHA-256 of every weight file (torch-free).

    write_manifest(directory, ["model.safetensors"]) -> Path    digests of the files as they are now
    verify(directory, ["model.safetensors"])                    DigestError on a mismatch; one
                                                                NoDigestWarning for a directory without
                                                                a manifest (a checkpoint older than it)
    remove_manifest(directory)                                  before a save rewrites the weights
    file_sha256(path) -> str

The file (written by hla_deploy.models.save_checkpoint, beside config.json)::

    {"format": "hla-deploy checkpoint manifest", "format_version": 1,
     "files": {"model.safetensors": {"sha256": "<64 hex digits>", "bytes": 7286808}}}

A manifest beside config.json, not a key inside it: config.json stays exactly HLAConfig.to_dict()
(which older hla-deploy versions read strictly), and the digest covers the weight files only.
To give an old checkpoint digests, after checking its weights are the intended ones:
``python -c "from hla_deploy.checkpoint_manifest import write_manifest; write_manifest('DIR', ['model.safetensors'])"``.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Dict, Iterable, Union

from hla_deploy._atomic import atomic_write_text
from hla_deploy.exit_codes import UsageError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "hla-deploy checkpoint manifest"
MANIFEST_FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]


class DigestError(UsageError):
    """A weight file does not match its recorded digest, or the manifest is unreadable."""


class NoDigestWarning(UserWarning):
    """A checkpoint carries no manifest.json, so damage to its weights cannot be detected."""


_warned = set()           # directories already warned about (one warning per directory per process)
_warned_lock = threading.Lock()


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: PathLike, names: Iterable[str]) -> Path:
    """Record the SHA-256 and size of ``directory/<name>`` for every name; returns the manifest path."""
    directory = Path(directory)
    files = {}
    for name in sorted(names):
        path = directory / name
        files[name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    doc = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_FORMAT_VERSION, "files": files}
    return atomic_write_text(directory / MANIFEST_NAME, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def remove_manifest(directory: PathLike) -> None:
    try:
        (Path(directory) / MANIFEST_NAME).unlink()
    except FileNotFoundError:
        pass


def read_manifest(directory: PathLike):
    """{name: {"sha256": ..., "bytes": ...}}, or None when the directory has no manifest.json."""
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DigestError(f"checkpoint manifest {str(path)!r} is unreadable: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise DigestError(f"checkpoint manifest {str(path)!r} is not an hla-deploy checkpoint manifest "
                          f"(expected \"format\": {MANIFEST_FORMAT!r})")
    if doc.get("format_version") != MANIFEST_FORMAT_VERSION:
        raise DigestError(f"checkpoint manifest {str(path)!r} has format_version {doc.get('format_version')!r}; "
                          f"this hla-deploy reads {MANIFEST_FORMAT_VERSION}")
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str)
                                              for v in files.values()):
        raise DigestError(f"checkpoint manifest {str(path)!r}: \"files\" must map file names to "
                          f"{{\"sha256\": ...}} objects")
    return files


def verify(directory: PathLike, names: Iterable[str]) -> Dict[str, str]:
    """Check every ``directory/<name>`` against manifest.json; returns {name: sha256} of the files
    checked. Raises DigestError naming the file and both digests on a mismatch, or when the manifest
    does not list a file. Without a manifest: one NoDigestWarning per directory, and {}."""
    directory = Path(directory)
    files = read_manifest(directory)
    names = list(names)
    if files is None:
        key = str(directory.resolve())
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        if first:
            warnings.warn(f"checkpoint {str(directory)!r} carries no {MANIFEST_NAME} with the SHA-256 of "
                          f"{', '.join(names)} (saved before hla-deploy recorded digests), so damage to its "
                          f"weights cannot be detected; save it again with save_checkpoint to add one",
                          NoDigestWarning, stacklevel=3)
        return {}
    checked = {}
    manifest = directory / MANIFEST_NAME
    for name in names:
        entry = files.get(name)
        if entry is None:
            raise DigestError(f"checkpoint manifest {str(manifest)!r} records no SHA-256 for {name}; "
                              f"the manifest does not describe these weights (save the checkpoint again)")
        path = directory / name
        actual = file_sha256(path)
        if actual != entry["sha256"].lower():
            raise DigestError(f"checkpoint weights {str(path)!r} are damaged or were replaced: their SHA-256 "
                              f"is {actual}, {MANIFEST_NAME} records {entry['sha256']} (restore the file, or "
                              f"save the checkpoint again if these are the weights you want)")
        checked[name] = actual
    return checked
