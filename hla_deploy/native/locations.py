"""Where the native sources are, and where builds and downloaded headers go.

    checkout_root() -> Optional[Path]   the source checkout this code runs from (editable install), or None
    repo_root() -> Path                 the root that holds ``plugins/``: the checkout, or in an installed
                                        (wheel) package ``<site-packages>/hla_deploy/_native`` (read-only:
                                        never write under it)
    plugins_source_dir() -> Path        ``repo_root()/plugins`` (CMakeLists.txt, cmake/, common/, ort_hla/,
                                        trt_hla/); PluginBuildError when absent. The ONE function callers
                                        use to find the native sources (builds, device bundles).
    cache_dir() -> Path                 ``$HLA_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/hla-deploy``, else
                                        ``~/.cache/hla-deploy``
    deps_dir() -> Path                  downloaded third-party headers: ``<checkout>/.deps`` in a checkout,
                                        ``cache_dir()/deps`` in an installed package
    source_digest(subdirs) -> str       sha256 of plugins/CMakeLists.txt and every native source under
                                        plugins/<subdirs> (names and contents)
    build_key(parts) -> str             16 hex digits: a hash of ``parts`` (sources digest, onnxruntime
                                        version, CUDA setting, ...) and the platform: contents, never
                                        a path, so every clone and venv with the same sources shares it
    nvcc_label() -> str                 the CUDA compiler's version line (``nvcc --version``), or "none"
    keyed_build_dir(kind, key) -> Path  ``cache_dir()/build/<kind>-<key>``

How the sources reach an installed package: pyproject.toml maps the package ``hla_deploy._native.plugins``
to the repo folder ``plugins/`` (``[tool.setuptools.package-dir]``; its subfolders are listed as its
subpackages) and names the native sources and CMake files as package data, so a wheel and an sdist
carry ``plugins/`` (sources only, no build outputs) as ``hla_deploy/_native/plugins/``. The repo
layout is unchanged; in a checkout the same folder is used in place.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

#: File suffixes that count as native sources (CMake scripts and the linker version script included).
SOURCE_SUFFIXES = (".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh", ".txt", ".cmake", ".map")
#: Folder names never treated as sources (CMake build trees someone made inside plugins/).
_SKIP_DIRS = ("CMakeFiles",)
_PACKAGE_DIR = Path(__file__).resolve().parents[1]       # .../hla_deploy
INSTALLED_NATIVE_ROOT = _PACKAGE_DIR / "_native"         # holds plugins/ in an installed package


class PluginBuildError(RuntimeError):
    """A native plugin could not be built or found."""


def checkout_root() -> Optional[Path]:
    """The source checkout holding this package (editable install or tests on a clone), else None."""
    root = _PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "plugins" / "CMakeLists.txt").is_file():
        return root
    return None


def repo_root() -> Path:
    """The directory holding ``plugins/``: the checkout, else the installed package's ``_native``."""
    root = checkout_root()
    return root if root is not None else INSTALLED_NATIVE_ROOT


def plugins_source_dir() -> Path:
    src = repo_root() / "plugins"
    if not (src / "CMakeLists.txt").is_file():
        raise PluginBuildError(
            f"native sources not found at {src} (CMakeLists.txt missing): this hla-deploy installation "
            f"is incomplete; reinstall it (`pip install --force-reinstall hla-deploy`, or `pip install -e .` "
            f"in a source checkout), or pass the library path explicitly")
    return src


def cache_dir() -> Path:
    env = os.environ.get("HLA_DEPLOY_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "hla-deploy").resolve()


def deps_dir() -> Path:
    root = checkout_root()
    return root / ".deps" if root is not None else cache_dir() / "deps"


def source_files(subdirs: Sequence[str]) -> List[Path]:
    """plugins/CMakeLists.txt and the native sources under plugins/<subdirs>, sorted."""
    src = plugins_source_dir()
    files = [src / "CMakeLists.txt"]
    for sub in subdirs:
        if not (src / sub).is_dir():
            continue
        files += [p for p in (src / sub).rglob("*")
                  if p.is_file() and p.suffix in SOURCE_SUFFIXES
                  and not any(part in _SKIP_DIRS for part in p.relative_to(src).parts)]
    return sorted(set(files))


def source_digest(subdirs: Sequence[str]) -> str:
    src = plugins_source_dir()
    h = hashlib.sha256()
    for p in source_files(subdirs):
        h.update(p.relative_to(src).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def build_key(parts: Iterable[str]) -> str:
    """16 hex digits naming a build: a hash of ``parts`` plus the platform (cache may be shared)."""
    h = hashlib.sha256()
    for part in [*parts, platform.system(), platform.machine()]:
        h.update(str(part).encode() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _nvcc_version(nvcc: str) -> str:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"unusable ({type(e).__name__})"
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown version"


def nvcc_label() -> str:
    """The version line of the ``nvcc`` on PATH ("Build cuda_12.6.r12.6/compiler.34...") or "none":
    what the build key records of the CUDA compiler (its version, not where it is)."""
    nvcc = shutil.which("nvcc")
    return "none" if nvcc is None else _nvcc_version(nvcc)


def keyed_build_dir(kind: str, key: str) -> Path:
    """``cache_dir()/build/<kind>-<key>`` (key from build_key)."""
    return cache_dir() / "build" / f"{kind}-{key}"
