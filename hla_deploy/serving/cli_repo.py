"""`hla-deploy serve-repo MODEL -o REPO [--backend python|onnxruntime|tensorrt] [--device cpu|cuda]
[--max-sequences N] [--instances K] [--idle-timeout S] [--strategy oldest|direct]`."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported .onnx (or a TensorRT .plan for --backend python)")
    parser.add_argument("-o", "--out", required=True, help="model repository directory to write (new or empty)")
    parser.add_argument("--backend", choices=["python", "onnxruntime", "tensorrt"], default="python")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--max-sequences", type=int, default=64, help="live sequences per instance (default 64)")
    parser.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="seconds after which an idle sequence is reclaimed (default 60)")
    parser.add_argument("--strategy", choices=["oldest", "direct"], default="oldest",
                        help="sequence batching strategy of the python backend (default oldest)")
    parser.add_argument("--library", default=None, help="ORT custom-op library (default: the built one)")


def run(args: argparse.Namespace) -> int:
    from .repository import write_repository
    try:
        repo = write_repository(args.model, args.out, backend=args.backend, device=args.device,
                                max_sequences=args.max_sequences, instances=args.instances,
                                idle_timeout_s=args.idle_timeout, strategy=args.strategy, op_library=args.library)
    except (OSError, ValueError) as e:
        print(f"serve-repo: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote model repository {repo} (model hla_lm, {args.backend} backend); see {repo}/README.md")
    return 0
