"""Build the native plugins (``plugins/``, from a checkout or an installed package) with CMake on first use.

    ort_library_path(build=True) -> Path   libhla_ort_op.so (ONNX Runtime custom-op library)
    ort_runner_path(build=True)  -> Path   hla_runner (C++ runner linked against the wheel's ORT)
    cmake_build(targets, cmake_args=())    configure + build any target of the ORT build
    ort_library_fresh() -> bool            the library exists and was built for the current build key
    build_dir() / build_info()             where the build goes, and what its key is made of

The build directory is ``$HLA_DEPLOY_BUILD_DIR`` when set, else a per-user cache directory
``<cache>/build/ort-<key>/`` (``<cache>``: ``$HLA_DEPLOY_CACHE`` or ``~/.cache/hla-deploy``), the key
a hash of the native sources (contents), the onnxruntime distribution and version, the CUDA setting
and the platform, never a path: every clone and venv with the same sources reuses one build. The
build goes never into the source tree, never into site-packages. A new key (edited sources, another
onnxruntime) gets a fresh directory; the build of an unchanged key is reused. Builds are serialised
with a lock file, so parallel test processes do not race. Every failure raises ``PluginBuildError``
with the command and the tail of its output. The CMake plumbing (lock, commands, stamps) is
``hla_deploy.native.cmake``, shared with the TensorRT build.

ONNX Runtime headers come from ``hla_deploy.native.ort_headers`` (``ONNXRUNTIME_INCLUDE_DIR`` or
Debian's libonnxruntime-dev 1.21 unpacked into ``.deps/`` of a checkout, or ``<cache>/deps/``).
The runner links the PyPI wheel's ``onnxruntime/capi/libonnxruntime.so.1.x.y`` through a symlink
named by its SONAME, ``<build>/ort_lib/libonnxruntime.so.1``.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

from ..ort_install import INSTALL_HINT, onnxruntime_label
from .cmake import (PluginBuildError, configure_and_build, details, ensure_build_dir, is_fresh,
                    plugins_source_dir, require_cmake)
from .locations import build_key, keyed_build_dir, nvcc_label, source_digest

ORT_OP_LIBRARY = "libhla_ort_op.so"
ORT_RUNNER = "hla_runner"
#: Subdirectories of plugins/ whose sources the ONNX Runtime library and runner are built from.
ORT_SOURCE_SUBDIRS = ("cmake", "common", "ort_hla")


# ---- locations -----------------------------------------------------------------------------------

#: build_info() entries that describe the build but are not part of its key (paths: a second clone or
#: venv with the same sources reuses the build; configure_and_build re-points CMake at the new folder)
NOT_IN_KEY = ("sources",)


def build_info(with_cuda: Optional[str] = None) -> Dict[str, str]:
    """What the build key is made of, plus where the sources are (also written to <build>/BUILD_INFO.txt)."""
    cuda = (with_cuda or _with_cuda_default()).upper()
    return {"sources": str(plugins_source_dir()),
            "sources_sha256": source_digest(ORT_SOURCE_SUBDIRS),
            "onnxruntime": onnxruntime_label(),
            "with_cuda": cuda,
            "nvcc": nvcc_label() if cuda != "OFF" else "unused"}


def _key(info: Dict[str, str]) -> str:
    """Contents only (sources' hash, onnxruntime version, CUDA setting, nvcc version; build_key adds
    the platform), never a path."""
    return build_key(f"{k}={v}" for k, v in sorted(info.items()) if k not in NOT_IN_KEY)


def build_dir(with_cuda: Optional[str] = None) -> Path:
    """$HLA_DEPLOY_BUILD_DIR, else <cache>/build/ort-<key> (see the module docstring)."""
    env = os.environ.get("HLA_DEPLOY_BUILD_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return keyed_build_dir("ort", _key(build_info(with_cuda)))


def ort_library_file() -> Path:
    return build_dir() / "lib" / ORT_OP_LIBRARY


def ort_runner_file() -> Path:
    return build_dir() / "bin" / ORT_RUNNER


# ---- ONNX Runtime wheel library --------------------------------------------------------------------

def onnxruntime_wheel_library() -> Path:
    """The PyPI wheel's libonnxruntime.so.1.x.y (found through ``import onnxruntime``)."""
    try:
        import onnxruntime
    except ImportError as e:
        raise PluginBuildError(f"`import onnxruntime` failed ({e}): {INSTALL_HINT}") from e
    capi = Path(onnxruntime.__file__).resolve().parent / "capi"
    libs = sorted(p for p in capi.glob("libonnxruntime.so.1*") if p.is_file())
    if not libs:
        raise PluginBuildError(f"no libonnxruntime.so.1* in {capi} (onnxruntime {onnxruntime.__version__})")
    return libs[-1]


def ort_soname_link(bdir: Path) -> Path:
    """<build>/ort_lib/libonnxruntime.so.1 -> the wheel's library (created or refreshed)."""
    target = onnxruntime_wheel_library()
    link_dir = bdir / "ort_lib"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libonnxruntime.so.1"
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link
    tmp = link_dir / f".libonnxruntime.so.1.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic
    return link


# ---- build -----------------------------------------------------------------------------------------

def _is_fresh(path: Path, target: str) -> bool:
    return is_fresh(path, build_dir(), target, _key(build_info()))


def ort_library_fresh() -> bool:
    """True when libhla_ort_op.so exists and was built for the current key (no build needed)."""
    return _is_fresh(ort_library_file(), "hla_ort_op")


@functools.lru_cache(maxsize=None)
def _ort_has_cuda_ep() -> bool:
    try:
        import onnxruntime
        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        return False


def _with_cuda_default() -> str:
    """CMake HLA_WITH_CUDA: $HLA_DEPLOY_WITH_CUDA, else ON only when nvcc and ORT's CUDA EP exist."""
    env = os.environ.get("HLA_DEPLOY_WITH_CUDA")
    if env:
        return env.upper()
    return "AUTO" if _ort_has_cuda_ep() and shutil.which("nvcc") else "OFF"


def cmake_build(targets: Sequence[str], cmake_args: Iterable[str] = (), *, with_cuda: Optional[str] = None,
                verbose: bool = True, jobs: Optional[int] = None) -> Path:
    """Configure ``plugins/`` into build_dir() and build ``targets``. Returns the build dir.

    ``cmake_args`` are extra ``-D`` options. Each target built is stamped (fresh until a source changes).
    """
    from .ort_headers import OrtHeadersError, ort_include_dir

    require_cmake()
    plugins_source_dir()  # a clear error before fetching headers when the sources are absent
    info = build_info(with_cuda)
    bdir = ensure_build_dir(build_dir(with_cuda))
    try:
        inc = ort_include_dir(fetch=True, verbose=verbose)
    except OrtHeadersError as e:
        raise PluginBuildError(f"ONNX Runtime headers unavailable: {e}") from e
    args = [f"-DONNXRUNTIME_INCLUDE_DIR={inc}", f"-DHLA_WITH_CUDA={info['with_cuda']}"]
    try:
        args.append(f"-DHLA_ORT_LIBRARY={ort_soname_link(bdir)}")
    except PluginBuildError as e:
        if ORT_RUNNER in targets:
            raise
        if verbose:
            print(f"[hla-deploy build] runner not configured: {e}", file=sys.stderr)
    bdir = configure_and_build(bdir, targets, [*args, *cmake_args], key=_key(info), verbose=verbose, jobs=jobs)
    (bdir / "BUILD_INFO.txt").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
    return bdir


def _announce(what: str, verbose: bool) -> None:
    """The one line a first-use build prints: what is built, from where, into where."""
    if verbose:
        print(f"[hla-deploy] building {what} (first use for these sources, about 10 s) from "
              f"{plugins_source_dir()} into {build_dir()}", file=sys.stderr, flush=True)


def ort_library_path(build: bool = True, verbose: bool = True) -> Path:
    """Path of libhla_ort_op.so, building it (CMake) when missing or older than its sources.
    ``verbose``: the one line saying what is built where (the CMake commands too with ``-v``)."""
    lib = ort_library_file()
    if build and not _is_fresh(lib, "hla_ort_op"):
        _announce(ORT_OP_LIBRARY, verbose)
        cmake_build(["hla_ort_op"], verbose=verbose and details())
    if not lib.is_file():
        raise PluginBuildError(
            f"ONNX Runtime custom-op library not found at {lib}"
            + ("" if build else " (call ort_library_path(build=True) or run `hla-deploy build-plugins`)"))
    return lib


def ort_runner_path(build: bool = True, verbose: bool = True) -> Path:
    """Path of the C++ runner hla_runner, building it when missing or older than its sources."""
    exe = ort_runner_file()
    if build and not _is_fresh(exe, ORT_RUNNER):
        _announce(f"{ORT_OP_LIBRARY} and {ORT_RUNNER}", verbose)
        cmake_build(["hla_ort_op", ORT_RUNNER], verbose=verbose and details())
    elif exe.is_file():
        ort_soname_link(build_dir())  # keep libonnxruntime.so.1 pointing at the installed wheel
    if not exe.is_file():
        raise PluginBuildError(f"C++ runner not found at {exe}"
                               + ("" if build else " (run `hla-deploy build-plugins`)"))
    return exe
