"""Build the native plugins (``<repo>/plugins``) with CMake on first use.

    ort_library_path(build=True) -> Path   libhla_ort_op.so (ONNX Runtime custom-op library)
    ort_runner_path(build=True)  -> Path   hla_runner (C++ runner linked against the wheel's ORT)
    cmake_build(targets, cmake_args=())    configure + build any target of the ORT build

The build directory is ``$HLA_DEPLOY_BUILD_DIR`` or ``<repo>/plugins/build/`` (ignored by git).
A library is rebuilt when a source under ``plugins/`` is newer than its stamp file. Builds are
serialised with a lock file, so parallel test processes do not race. Every failure raises
``PluginBuildError`` with the command and the tail of its output. The CMake plumbing (lock,
commands, stamps) is ``hla_deploy.plugins.cmake``, shared with the TensorRT build.

ONNX Runtime headers come from ``hla_deploy.plugins.ort_headers`` (``ONNXRUNTIME_INCLUDE_DIR`` or
Debian's libonnxruntime-dev 1.21 unpacked into ``<repo>/.deps/``). The runner links the PyPI
wheel's ``onnxruntime/capi/libonnxruntime.so.1.x.y`` through a symlink named by its SONAME,
``<build>/ort_lib/libonnxruntime.so.1``.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .cmake import (PluginBuildError, configure_and_build, is_fresh, plugins_source_dir, repo_root,
                    require_cmake)

ORT_OP_LIBRARY = "libhla_ort_op.so"
ORT_RUNNER = "hla_runner"
#: Subdirectories of plugins/ whose sources the ONNX Runtime library and runner are built from.
ORT_SOURCE_SUBDIRS = ("cmake", "common", "ort_hla")


# ---- locations -----------------------------------------------------------------------------------

def build_dir() -> Path:
    env = os.environ.get("HLA_DEPLOY_BUILD_DIR")
    return Path(env).expanduser().resolve() if env else repo_root() / "plugins" / "build"


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
        raise PluginBuildError(f"`import onnxruntime` failed ({e}); `pip install onnxruntime`") from e
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
    return is_fresh(path, build_dir(), target, ORT_SOURCE_SUBDIRS)


def _with_cuda_default() -> str:
    """CMake HLA_WITH_CUDA: $HLA_DEPLOY_WITH_CUDA, else ON only when nvcc and ORT's CUDA EP exist."""
    env = os.environ.get("HLA_DEPLOY_WITH_CUDA")
    if env:
        return env.upper()
    try:
        import onnxruntime
        has_ep = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        has_ep = False
    return "AUTO" if has_ep and shutil.which("nvcc") else "OFF"


def cmake_build(targets: Sequence[str], cmake_args: Iterable[str] = (), *, with_cuda: Optional[str] = None,
                verbose: bool = True, jobs: Optional[int] = None) -> Path:
    """Configure ``plugins/`` into build_dir() and build ``targets``. Returns the build dir.

    ``cmake_args`` are extra ``-D`` options. Each target built is stamped (fresh until a source changes).
    """
    from .ort_headers import OrtHeadersError, ort_include_dir

    require_cmake()
    plugins_source_dir()  # a clear error before fetching headers when the sources are absent
    bdir = build_dir()
    try:
        inc = ort_include_dir(fetch=True, verbose=verbose)
    except OrtHeadersError as e:
        raise PluginBuildError(f"ONNX Runtime headers unavailable: {e}") from e
    args = [f"-DONNXRUNTIME_INCLUDE_DIR={inc}",
            f"-DHLA_WITH_CUDA={with_cuda or _with_cuda_default()}"]
    try:
        args.append(f"-DHLA_ORT_LIBRARY={ort_soname_link(bdir)}")
    except PluginBuildError as e:
        if ORT_RUNNER in targets:
            raise
        if verbose:
            print(f"[hla-deploy build] runner not configured: {e}", file=sys.stderr)
    return configure_and_build(bdir, targets, [*args, *cmake_args], verbose=verbose, jobs=jobs)


def ort_library_path(build: bool = True, verbose: bool = True) -> Path:
    """Path of libhla_ort_op.so, building it (CMake) when missing or older than its sources."""
    lib = ort_library_file()
    if build and not _is_fresh(lib, "hla_ort_op"):
        cmake_build(["hla_ort_op"], verbose=verbose)
    if not lib.is_file():
        raise PluginBuildError(
            f"ONNX Runtime custom-op library not found at {lib}"
            + ("" if build else " (call ort_library_path(build=True) or run `hla-deploy build-plugins`)"))
    return lib


def ort_runner_path(build: bool = True, verbose: bool = True) -> Path:
    """Path of the C++ runner hla_runner, building it when missing or older than its sources."""
    exe = ort_runner_file()
    if build and not _is_fresh(exe, ORT_RUNNER):
        cmake_build(["hla_ort_op", ORT_RUNNER], verbose=verbose)
    elif exe.is_file():
        ort_soname_link(build_dir())  # keep libonnxruntime.so.1 pointing at the installed wheel
    if not exe.is_file():
        raise PluginBuildError(f"C++ runner not found at {exe}"
                               + ("" if build else " (run `hla-deploy build-plugins`)"))
    return exe
