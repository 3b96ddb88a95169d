"""`hla-deploy` command line: one subcommand per user task.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported when the parser is built, so they must keep heavy
imports (torch, onnx, tensorrt) inside their functions.

Exit status, the same for every subcommand (hla_deploy.exit_codes): 0 success, 1 a failure while
running, 2 usage or bad input (arguments, files the user named, checkpoints), 3 an optional
dependency missing, 130 interrupted. A subcommand returns its status; an exception escaping it is
mapped here: UsageError (CheckpointError included) 2, MissingDependencyError (or a
ModuleNotFoundError of a module an extra installs) 3, KeyboardInterrupt 130, anything else 1
with one line on stderr. Every subcommand takes ``-v`` (details, e.g. the CMake commands).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings

from . import __version__, exit_codes
from .exit_codes import UsageError
from .extras import MissingDependencyError, from_module_not_found

#: set to 1 by `-v` while a subcommand runs: details such as the CMake commands of a build
VERBOSE_ENV = "HLA_DEPLOY_VERBOSE"

# (name, module, one-line help)
COMMANDS = [
    ("quickstart", "hla_deploy.quickstart",
     "CPU demo: load the shipped model, export it, build the ORT op, check parity, generate text"),
    ("export", "hla_deploy.exporters.onnx.cli_export", "export a checkpoint to ONNX (custom HLARecurrentStep op or standard ops)"),
    ("build-plugins", "hla_deploy.native",
     "build the ONNX Runtime custom-op library (and the TensorRT plugin) and the AOT prefill kernels (cubins)"),
    ("build-engine", "hla_deploy.exporters.tensorrt.cli_build_engine", "build a TensorRT engine from an exported ONNX model"),
    ("parity", "hla_deploy.parity.cli", "check every backend against the reference model"),
    ("bundle", "hla_deploy.exporters.bundle.cli_bundle",
     "write a self-contained device bundle (graphs, native sources, build/engine/check scripts, golden outputs)"),
    ("generate", "hla_deploy.runtime.cli", "generate text from a checkpoint, ONNX model or TensorRT engine"),
    ("serve-repo", "hla_deploy.serving.cli_repo", "write a Triton Inference Server model repository (hla_lm) for a model"),
    ("serve", "hla_deploy.serving.cli_serve", "run Triton Inference Server on a model repository (127.0.0.1 by default)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hla-deploy",
        description="Deploy Higher-order Linear Attention models: export, run, check parity.",
        epilog="exit status (every subcommand): 0 success, 1 failure while running, 2 usage or bad input "
               "(arguments, files, checkpoints), 3 optional dependency missing, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"hla-deploy {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="print details (e.g. the CMake commands of a first-use build)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


@contextlib.contextmanager
def _verbose(on: bool):
    """HLA_DEPLOY_VERBOSE=1 while a subcommand runs with -v (read by hla_deploy.native.build)."""
    old = os.environ.get(VERBOSE_ENV)
    if on:
        os.environ[VERBOSE_ENV] = "1"
    try:
        yield
    finally:
        if on:
            if old is None:
                os.environ.pop(VERBOSE_ENV, None)
            else:
                os.environ[VERBOSE_ENV] = old


@contextlib.contextmanager
def _warnings_as_lines(name: str):
    """hla-deploy's own warnings as one line `hla-deploy CMD: warning: ...` (no source line)."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("hla_deploy"):
            print(f"{name}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            shown(message, category, filename, lineno, file, line)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _error(name: str, exc: BaseException, with_type: bool = False) -> None:
    what = f"{type(exc).__name__}: {exc}" if with_type else str(exc)
    print(f"{name}: error: {what}", file=sys.stderr)


def main(argv=None) -> int:
    """Run `hla-deploy ARGV`; returns the exit status (hla_deploy.exit_codes)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0), or a usage error argparse has printed (2)
        return e.code if isinstance(e.code, int) else (exit_codes.OK if e.code is None else exit_codes.USAGE)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return exit_codes.OK
    name = f"hla-deploy {args.command}"
    with _verbose(getattr(args, "verbose", False)), _warnings_as_lines(name):
        try:
            return int(args._run(args) or 0)
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            return exit_codes.INTERRUPTED
        except MissingDependencyError as exc:
            _error(name, exc)
            return exit_codes.MISSING_DEPENDENCY
        except ModuleNotFoundError as exc:  # e.g. `import torch` deep inside, without the [export] extra
            missing = from_module_not_found(exc, name)
            if missing is None:
                return _last_resort(name, exc)
            _error(name, missing)
            return exit_codes.MISSING_DEPENDENCY
        except UsageError as exc:  # CheckpointError included
            _error(name, exc)
            return exit_codes.USAGE
        except Exception as exc:
            return _last_resort(name, exc)


def _last_resort(name: str, exc: Exception) -> int:
    """One clear line, not a traceback (HLA_DEPLOY_DEBUG=1 re-raises)."""
    if os.environ.get("HLA_DEPLOY_DEBUG"):
        raise exc
    print(f"{name}: error: {type(exc).__name__}: {exc} (set HLA_DEPLOY_DEBUG=1 for the traceback)",
          file=sys.stderr)
    return exit_codes.FAILURE


if __name__ == "__main__":
    sys.exit(main())
