"""Native plugins: the ONNX Runtime custom-op library (and the TensorRT plugin), built on first use.

    ort_library_path(build=True) -> Path    libhla_ort_op.so (hla_deploy::HLARecurrentStep)
    ort_runner_path(build=True)  -> Path    the C++ runner (plugins/ort_hla/hla_runner.cc)
    trt_plugin_path(build=True)  -> Path    the TensorRT plugin (hla_deploy.native.trt_build)
    build_kernels(configs, archs=(87, 90))  AOT cubins of the Triton prefill kernels + manifest.json in
                                            <cache>/kernels (hla_deploy.native.kernel_dir; needs Triton)
    kernel_configs_of_model(path) -> [KernelConfig]   the configurations of a model's HLARecurrentStep nodes
    plugins_source_dir() -> Path            the native sources (checkout or installed package)
    cache_dir() -> Path                     per-user cache: builds and downloaded headers
    PluginBuildError                        raised with a clear message when a build fails

Builds go to ``$HLA_DEPLOY_BUILD_DIR`` or ``<cache_dir()>/build/<kind>-<key>/`` (the key hashes
the sources, the onnxruntime version and the CUDA setting; see hla_deploy.native.build), never
into the source tree or site-packages.

Also the ``build-plugins`` subcommand of ``hla-deploy`` (``add_arguments`` / ``run``; its AOT-kernel
options are hla_deploy.native.cli_kernels).
Importing this module is cheap: nothing is built or imported until asked for.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from .cli_kernels import UsageError, add_kernel_arguments, kernel_request, run_kernels

from .build import PluginBuildError, build_dir, cmake_build, ort_library_path, ort_runner_path
from .kernel_configs import KernelConfig, kernel_configs_of_model
from .kernel_dir import build_kernels, default_kernel_dir
from .locations import cache_dir, plugins_source_dir

__all__ = ["PluginBuildError", "build_dir", "cache_dir", "cmake_build", "ort_library_path", "ort_runner_path",
           "plugins_source_dir", "trt_plugin_path", "build_kernels", "default_kernel_dir", "KernelConfig",
           "kernel_configs_of_model", "add_arguments", "run"]


def _trt_build_module():
    try:
        return importlib.import_module("hla_deploy.native.trt_build")
    except ImportError as e:
        if e.name not in ("hla_deploy.native.trt_build",):
            raise
        raise PluginBuildError("the TensorRT plugin build is not available in this version "
                               "(module hla_deploy.native.trt_build missing)") from e


def trt_plugin_path(build: bool = True) -> Path:
    """Path of the TensorRT plugin library (implemented in hla_deploy.native.trt_build)."""
    return _trt_build_module().trt_plugin_path(build=build)


# ---- `hla-deploy build-plugins` ------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--build-dir", default=None,
                        help="CMake build directory (default: $HLA_DEPLOY_BUILD_DIR, else a folder per build key "
                             "under $HLA_DEPLOY_CACHE/build, default ~/.cache/hla-deploy/build)")
    parser.add_argument("--with-cuda", choices=["auto", "on", "off"], default=None,
                        help="build the CUDA kernels and the ORT CUDA-EP op (default: on only when nvcc "
                             "and onnxruntime's CUDAExecutionProvider are both present)")
    parser.add_argument("--no-runner", action="store_true", help="do not build the C++ runner hla_runner")
    parser.add_argument("--trt", action="store_true",
                        help="also build the TensorRT plugin (hla_deploy.native.trt_build)")
    parser.add_argument("--quiet", action="store_true",
                        help="do not echo the CMake commands, even with -v (without -v they are not echoed)")
    add_kernel_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Exit status (hla_deploy.exit_codes): 0 built, 1 the build failed, 2 a bad --build-dir or kernel
    option, 3 CMake / onnxruntime missing (or Triton, when kernels were asked for)."""
    try:
        kernels = kernel_request(args)   # bad --config/--arch/--model: before any build
    except UsageError as e:
        print(f"build-plugins: error: {e}", file=sys.stderr)
        return 2
    if not getattr(args, "kernels_only", False):
        rc = _run_native(args)
        if rc:
            return rc
    return run_kernels(kernels) if kernels is not None else 0


def _run_native(args: argparse.Namespace) -> int:
    from hla_deploy._atomic import check_output_path
    from hla_deploy.extras import MissingDependencyError
    if args.build_dir:
        try:
            check_output_path(Path(args.build_dir).expanduser(), "--build-dir", directory=True)
        except ValueError as e:
            print(f"build-plugins: error: {e}", file=sys.stderr)
            return 2
        os.environ["HLA_DEPLOY_BUILD_DIR"] = str(Path(args.build_dir).expanduser().resolve())
    if args.with_cuda:
        os.environ["HLA_DEPLOY_WITH_CUDA"] = args.with_cuda.upper()
    verbose = bool(getattr(args, "verbose", False)) and not args.quiet
    try:
        targets = ["hla_ort_op"] + ([] if args.no_runner else ["hla_runner"])
        bdir = build_dir()
        print(f"sources: {plugins_source_dir()}")
        print(f"build directory: {bdir}" + ("" if os.environ.get("HLA_DEPLOY_BUILD_DIR")
                                            else f" (cache {cache_dir()}; set HLA_DEPLOY_CACHE to move it)"),
              flush=True)
        cmake_build(targets, verbose=verbose)  # stamps the targets (fresh for ort_library_path)
        print(f"ONNX Runtime custom-op library: {ort_library_path(build=False)}")
        if not args.no_runner:
            print(f"C++ runner: {ort_runner_path(build=False)}")
        if args.trt:
            # Hook for the TensorRT plugin build (hla_deploy/native/trt_build.py).
            path = _trt_build_module().build_trt_plugin()
            print(f"TensorRT plugin: {path}")
    except MissingDependencyError:
        raise  # exit 3 with what to install (hla_deploy.cli)
    except PluginBuildError as e:
        print(f"build-plugins: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. --build-dir under a file, or in a read-only place
        print(f"build-plugins: error: cannot use build directory {build_dir()}: {e}", file=sys.stderr)
        return 1
    return 0
