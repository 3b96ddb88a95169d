"""`hla-deploy` command line: one subcommand per user task.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported when the parser is built, so they must keep heavy
imports (torch, onnx, tensorrt) inside their functions.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__

# (name, module, one-line help)
COMMANDS = [
    ("quickstart", "hla_deploy.quickstart",
     "CPU demo: load the shipped model, export it, build the ORT op, check parity, generate text"),
    ("export", "hla_deploy.exporters.cli_export", "export a checkpoint to ONNX (custom HLARecurrentStep op or standard ops)"),
    ("build-plugins", "hla_deploy.plugins",
     "build the ONNX Runtime custom-op library (and the TensorRT plugin) and the AOT prefill kernels (cubins)"),
    ("build-engine", "hla_deploy.exporters.cli_build_engine", "build a TensorRT engine from an exported ONNX model"),
    ("parity", "hla_deploy.parity.cli", "check every backend against the reference model"),
    ("bundle", "hla_deploy.exporters.cli_bundle",
     "write a self-contained device bundle (graphs, native sources, build/engine/check scripts, golden outputs)"),
    ("generate", "hla_deploy.runtime.cli", "generate text from a checkpoint, ONNX model or TensorRT engine"),
    ("serve-repo", "hla_deploy.serving.cli_repo", "write a Triton Inference Server model repository (hla_lm) for a model"),
    ("serve", "hla_deploy.serving.cli_serve", "run Triton Inference Server on a model repository (127.0.0.1 by default)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hla-deploy",
        description="Deploy Higher-order Linear Attention models: export, run, check parity.")
    parser.add_argument("--version", action="version", version=f"hla-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: one clear line, not a traceback
        if os.environ.get("HLA_DEPLOY_DEBUG"):
            raise
        print(f"hla-deploy {args.command}: error: {type(exc).__name__}: {exc} "
              "(set HLA_DEPLOY_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
