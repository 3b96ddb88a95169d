"""Build the TensorRT plugin library (``plugins/trt_hla``) with CMake.

    trt_plugin_path(build=True) -> Path      lib/libhla_trt_plugin.so, built when missing or stale
    build_trt_plugin(include_dir=None) -> Path
    tensorrt_include_dir(fetch=True) -> Path directory holding NvInferRuntime.h
    cmake_build_trt(targets, ...) -> Path    configure + build any trt_hla target (tests use it)

The plugin needs CUDA (nvcc) and TensorRT's C++ headers, but NOT TensorRT's libraries: it calls
no libnvinfer function, so it builds on machines without TensorRT. Headers are found in this
order:

1. ``$TENSORRT_INCLUDE_DIR`` (must contain NvInferRuntime.h);
2. an installed TensorRT: ``$TENSORRT_ROOT/include``, JetPack's ``/usr/include/aarch64-linux-gnu``,
   ``/usr/include/x86_64-linux-gnu``, ``/usr/local/TensorRT/include``, ``/usr/include``;
3. the TensorRT 10.14 headers inside the PyPI wheel ``kernel-lens==2.0.1``
   (``kernel_lens/include/tensorrt``; an unofficial, slightly edited copy, used only to compile),
   downloaded with ``pip download --no-deps`` into ``.deps/`` of a checkout (ignored by git), or
   ``<cache>/deps/`` for an installed package (hla_deploy.native.locations), and unpacked there.
   They are never installed, shipped or committed.

The build directory is ``$HLA_DEPLOY_BUILD_DIR/trt``, else ``<cache>/build/trt-<key>/`` (the key a
hash of the sources under plugins/{cmake,common,trt_hla} (contents, not their folder), the CUDA
setting, the nvcc version and the platform):
separate from the ONNX Runtime build, since it configures plugins/ with HLA_BUILD_ORT=OFF.
For deployment on a Jetson, build against the headers of the TensorRT you run (JetPack 6.1/6.2:
TensorRT 10.3), e.g. ``TENSORRT_INCLUDE_DIR=/usr/include/aarch64-linux-gnu``.

Run ``python -m hla_deploy.native.trt_build`` to build and print the library path.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import locations
from .cmake import PluginBuildError, configure_and_build, details, is_fresh, plugins_source_dir, require_cmake

TRT_PLUGIN_LIBRARY = "libhla_trt_plugin.so"
TRT_PLUGIN_TARGET = "hla_trt_plugin"
#: Subdirectories of plugins/ whose sources the TensorRT plugin is built from.
TRT_SOURCE_SUBDIRS = ("cmake", "common", "trt_hla")
KERNEL_LENS_REQUIREMENT = "kernel-lens==2.0.1"
KERNEL_LENS_DIRNAME = "kernel-lens-2.0.1"
_MARKER = "NvInferRuntime.h"
_SYSTEM_INCLUDE_DIRS = (
    "/usr/include/aarch64-linux-gnu",   # JetPack
    "/usr/include/x86_64-linux-gnu",    # Debian/Ubuntu packages
    "/usr/local/TensorRT/include",
    "/usr/include",
)


# ---- locations -------------------------------------------------------------------------------------

def trt_build_key(with_cuda: Optional[str] = None) -> str:
    """Hash of the plugin's sources (contents, never their folder), the CUDA setting, the nvcc
    version and the platform."""
    return locations.build_key([locations.source_digest(TRT_SOURCE_SUBDIRS),
                                (with_cuda or _with_cuda_default()).upper(), locations.nvcc_label()])


def trt_build_dir() -> Path:
    env = os.environ.get("HLA_DEPLOY_BUILD_DIR")
    if env:
        return Path(env).expanduser().resolve() / "trt"
    return locations.keyed_build_dir("trt", trt_build_key("ON"))


def trt_plugin_file(build_dir: Optional[Path] = None) -> Path:
    """Where the plugin library is (or will be) built."""
    return Path(build_dir or trt_build_dir()) / "lib" / TRT_PLUGIN_LIBRARY


def deps_dir() -> Path:
    return locations.deps_dir()


# ---- headers ---------------------------------------------------------------------------------------

def _has_headers(d: Path) -> bool:
    return (d / _MARKER).is_file()


def installed_include_dir() -> Optional[Path]:
    """Headers of an installed TensorRT, or None."""
    cands = []
    root = os.environ.get("TENSORRT_ROOT")
    if root:
        cands += [Path(root) / "include", Path(root) / "include" / "aarch64-linux-gnu",
                  Path(root) / "include" / "x86_64-linux-gnu"]
    cands += [Path(p) for p in _SYSTEM_INCLUDE_DIRS]
    for c in cands:
        if _has_headers(c):
            return c
    return None


def kernel_lens_include_dir() -> Path:
    return deps_dir() / KERNEL_LENS_DIRNAME / "kernel_lens" / "include" / "tensorrt"


def fetch_kernel_lens_headers(verbose: bool = True) -> Path:
    """Download the kernel-lens wheel with pip (no install) and unpack its TensorRT headers."""
    inc = kernel_lens_include_dir()
    if _has_headers(inc):
        return inc
    wheels = deps_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           KERNEL_LENS_REQUIREMENT, "-d", str(wheels)]
    if verbose:
        print("[hla-deploy build] " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = sorted(wheels.glob("kernel_lens-2.0.1-*.whl"))
    if proc.returncode != 0 or not found:
        raise PluginBuildError(
            f"TensorRT headers not found and the fallback download failed ({' '.join(cmd)} exited "
            f"{proc.returncode}):\n{proc.stdout[-2000:]}\nInstall TensorRT's headers, or set "
            f"TENSORRT_INCLUDE_DIR=<dir with {_MARKER}> (or TENSORRT_ROOT=<prefix>).")
    prefix = "kernel_lens/include/tensorrt/"
    target = deps_dir() / KERNEL_LENS_DIRNAME
    tmp = Path(tempfile.mkdtemp(prefix=".kernel-lens.", dir=deps_dir()))
    try:
        with zipfile.ZipFile(found[-1]) as z:
            members = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
            if not any(n.endswith("/" + _MARKER) for n in members):
                raise PluginBuildError(f"{found[-1]} holds no {prefix}{_MARKER}")
            for n in members:
                z.extract(n, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not _has_headers(inc):
        raise PluginBuildError(f"unpacking {found[-1]} did not produce {inc / _MARKER}")
    return inc


def tensorrt_include_dir(fetch: bool = True, verbose: bool = True) -> Path:
    """TensorRT headers: $TENSORRT_INCLUDE_DIR, an installed TensorRT, or the kernel-lens fallback."""
    env = os.environ.get("TENSORRT_INCLUDE_DIR")
    if env:
        d = Path(env).expanduser()
        if not _has_headers(d):
            raise PluginBuildError(f"TENSORRT_INCLUDE_DIR={env} does not contain {_MARKER}")
        return d.resolve()
    inst = installed_include_dir()
    if inst is not None:
        return inst
    if _has_headers(kernel_lens_include_dir()):
        return kernel_lens_include_dir()
    if not fetch:
        raise PluginBuildError(
            f"TensorRT headers not found: set TENSORRT_INCLUDE_DIR=<dir with {_MARKER}> or "
            f"TENSORRT_ROOT=<prefix>, or allow fetching the kernel-lens headers (fetch=True)")
    return fetch_kernel_lens_headers(verbose=verbose)


# ---- build -----------------------------------------------------------------------------------------

def _with_cuda_default() -> str:
    env = os.environ.get("HLA_DEPLOY_WITH_CUDA")
    return env.upper() if env else "AUTO"


def cmake_build_trt(targets: Sequence[str], *, include_dir: Optional[Path] = None,
                    build_dir: Optional[Path] = None, with_cuda: Optional[str] = None,
                    cuda_architectures: Optional[str] = None, cmake_args: Iterable[str] = (),
                    verbose: bool = True, jobs: Optional[int] = None) -> Path:
    """Configure ``plugins/`` (TensorRT plugin only) and build ``targets``. Returns the build dir.
    Each target built is stamped (hla_deploy.native.cmake), so trt_plugin_path knows it is fresh."""
    require_cmake()
    plugins_source_dir()  # a clear error before looking for headers when the sources are absent
    bdir = Path(build_dir) if build_dir is not None else trt_build_dir()
    inc = Path(include_dir) if include_dir is not None else tensorrt_include_dir(fetch=True, verbose=verbose)
    if not _has_headers(inc):
        raise PluginBuildError(f"include_dir {inc} does not contain {_MARKER}")
    args = ["-DHLA_BUILD_ORT=OFF", "-DHLA_BUILD_TRT=ON", "-DHLA_BUILD_CAPI=OFF",
            f"-DHLA_WITH_CUDA={with_cuda or _with_cuda_default()}",
            f"-DTENSORRT_INCLUDE_DIR={inc}"]
    if cuda_architectures:
        args.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_architectures}")
    return configure_and_build(bdir, targets, [*args, *cmake_args], key=trt_build_key(with_cuda),
                               verbose=verbose, jobs=jobs)


def build_trt_plugin(include_dir: Optional[Path] = None, *, build_dir: Optional[Path] = None,
                     cuda_architectures: Optional[str] = None, verbose: bool = True) -> Path:
    """Build lib/libhla_trt_plugin.so (needs nvcc and TensorRT headers, not TensorRT's libraries)."""
    if shutil.which("nvcc") is None and not os.environ.get("CUDACXX"):
        raise PluginBuildError("the TensorRT plugin needs the CUDA toolkit (nvcc not found on PATH; "
                               "set CUDACXX or add CUDA's bin directory to PATH)")
    bdir = cmake_build_trt([TRT_PLUGIN_TARGET], include_dir=include_dir, build_dir=build_dir, with_cuda="ON",
                           cuda_architectures=cuda_architectures, verbose=verbose)
    lib = trt_plugin_file(bdir)
    if not lib.is_file():
        raise PluginBuildError(f"the build finished but {lib} is missing")
    return lib


def trt_plugin_path(build: bool = True, verbose: bool = True) -> Path:
    """Path of libhla_trt_plugin.so, building it when missing or older than its sources (judged by
    the build's stamp file, as for the ONNX Runtime library: CMake leaves an up-to-date library's
    mtime alone, so comparing the library's mtime would re-run CMake on every call)."""
    lib = trt_plugin_file()
    if build and not is_fresh(lib, trt_build_dir(), TRT_PLUGIN_TARGET, trt_build_key("ON")):
        if verbose:
            print(f"[hla-deploy] building {TRT_PLUGIN_LIBRARY} (first use for these sources) from "
                  f"{plugins_source_dir()} into {trt_build_dir()}", file=sys.stderr, flush=True)
        build_trt_plugin(verbose=verbose and details())
    if not lib.is_file():
        raise PluginBuildError(f"TensorRT plugin library not found at {lib}"
                               + ("" if build else " (call trt_plugin_path(build=True) or run "
                                                   "`python -m hla_deploy.native.trt_build`)"))
    return lib


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hla_deploy.native.trt_build",
                                description="Build the TensorRT plugin library libhla_trt_plugin.so")
    p.add_argument("--include-dir", default=None, help="TensorRT headers (default: found or fetched)")
    p.add_argument("--build-dir", default=None,
                   help="CMake build directory (default: $HLA_DEPLOY_BUILD_DIR/trt or <cache>/build/trt-<key>)")
    p.add_argument("--cuda-architectures", default=None, help="e.g. '87;90' (default: 87 and 90)")
    args = p.parse_args(argv)
    try:
        lib = build_trt_plugin(Path(args.include_dir) if args.include_dir else None,
                               build_dir=Path(args.build_dir) if args.build_dir else None,
                               cuda_architectures=args.cuda_architectures)
    except PluginBuildError as e:
        print(f"trt_build: error: {e}", file=sys.stderr)
        return 1
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
