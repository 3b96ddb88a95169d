"""Build the native plugins (``<repo>/plugins``) with CMake on first use.

    ort_library_path(build=True) -> Path   libhla_ort_op.so (ONNX Runtime custom-op library)
    ort_runner_path(build=True)  -> Path   hla_runner (C++ runner linked against the wheel's ORT)
    cmake_build(targets, cmake_args=())    configure + build any target (used by trt_build too)

The build directory is ``$HLA_DEPLOY_BUILD_DIR`` or ``<repo>/plugins/build/`` (ignored by git).
A library is rebuilt when a source under ``plugins/`` is newer than it. Builds are serialised with
a lock file, so parallel test processes do not race. Every failure raises ``PluginBuildError``
with the command and the tail of its output.

ONNX Runtime headers come from ``hla_deploy.plugins.ort_headers`` (``ONNXRUNTIME_INCLUDE_DIR`` or
Debian's libonnxruntime-dev 1.21 unpacked into ``<repo>/.deps/``). The runner links the PyPI
wheel's ``onnxruntime/capi/libonnxruntime.so.1.x.y`` through a symlink named by its SONAME,
``<build>/ort_lib/libonnxruntime.so.1``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

ORT_OP_LIBRARY = "libhla_ort_op.so"
ORT_RUNNER = "hla_runner"


class PluginBuildError(RuntimeError):
    """A native plugin could not be built or found."""


# ---- locations -----------------------------------------------------------------------------------

def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def plugins_source_dir() -> Path:
    src = repo_root() / "plugins"
    if not (src / "CMakeLists.txt").is_file():
        raise PluginBuildError(
            f"native sources not found at {src} (plugins/CMakeLists.txt): build from a source checkout "
            f"of hla-deploy (pip install -e .), or pass the library path explicitly")
    return src


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

@contextlib.contextmanager
def _build_lock(bdir: Path):
    bdir.mkdir(parents=True, exist_ok=True)
    with open(bdir / ".build.lock", "w") as fh:
        try:
            import fcntl
            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # non-POSIX: no lock
            pass
        yield


def _run(cmd: List[str], verbose: bool) -> None:
    if verbose:
        print("[hla-deploy build] " + " ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as e:
        raise PluginBuildError(f"`{cmd[0]}` not found: install CMake (>= 3.18) and a C++17 compiler") from e
    if proc.returncode != 0:
        raise PluginBuildError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                               f"--- last output ---\n{proc.stdout[-4000:]}")


_ORT_SUBDIRS = ("common", "ort_hla")


def _newest_source_mtime(subdirs: Sequence[str] = ("common", "ort_hla", "trt_hla")) -> float:
    """Newest modification time of the native sources under plugins/<subdirs> and plugins/CMakeLists.txt."""
    src = plugins_source_dir()
    newest = (src / "CMakeLists.txt").stat().st_mtime
    for sub in subdirs:
        if not (src / sub).is_dir():
            continue
        for p in (src / sub).rglob("*"):
            if p.is_file() and p.suffix in (".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh", ".txt"):
                newest = max(newest, p.stat().st_mtime)
    return newest


def _stamp(target: str) -> Path:
    """Written after each successful build of `target`: CMake leaves an up-to-date library's mtime
    alone, so freshness is judged by the stamp, not by the library file."""
    return build_dir() / f".{target}.built"


def _is_fresh(path: Path, target: str) -> bool:
    stamp = _stamp(target)
    return path.is_file() and stamp.is_file() and stamp.stat().st_mtime >= _newest_source_mtime(_ORT_SUBDIRS)


def _mark_built(*targets: str) -> None:
    for t in targets:
        _stamp(t).touch()


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

    ``cmake_args`` are extra ``-D`` options (e.g. ``-DHLA_BUILD_TRT=ON`` from trt_build).
    """
    from .ort_headers import OrtHeadersError, ort_include_dir

    if shutil.which("cmake") is None:
        raise PluginBuildError("`cmake` not found: install CMake (>= 3.18) and a C++17 compiler "
                               "(e.g. `apt-get install cmake g++` or `pip install cmake`)")
    src = plugins_source_dir()
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
    with _build_lock(bdir):
        _run(["cmake", "-S", str(src), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release", *args, *cmake_args],
             verbose)
        cmd = ["cmake", "--build", str(bdir), "-j", str(jobs or min(os.cpu_count() or 1, 4))]
        for t in targets:
            cmd += ["--target", t]
        _run(cmd, verbose)
    return bdir


def ort_library_path(build: bool = True, verbose: bool = True) -> Path:
    """Path of libhla_ort_op.so, building it (CMake) when missing or older than its sources."""
    lib = ort_library_file()
    if build and not _is_fresh(lib, "hla_ort_op"):
        cmake_build(["hla_ort_op"], verbose=verbose)
        _mark_built("hla_ort_op")
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
        _mark_built("hla_ort_op", ORT_RUNNER)
    elif exe.is_file():
        ort_soname_link(build_dir())  # keep libonnxruntime.so.1 pointing at the installed wheel
    if not exe.is_file():
        raise PluginBuildError(f"C++ runner not found at {exe}"
                               + ("" if build else " (run `hla-deploy build-plugins`)"))
    return exe
