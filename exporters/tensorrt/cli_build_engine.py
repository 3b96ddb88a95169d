"""`hla-deploy build-engine MODEL.onnx -o MODEL.plan [--fp16] [--max-batch N] [--max-seq T] [--plugin PATH]`.

Builds a TensorRT engine from an exported hla-deploy ONNX model (exporters/tensorrt/engine.py)
and prints the equivalent trtexec command. Without TensorRT's Python package the command is still
printed, with a clear message, and the exit status is 3. Exit status: 0 built, 1 build failed,
2 bad arguments or model, 3 TensorRT not installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", metavar="MODEL.onnx", help="exported hla-deploy ONNX model")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.plan", help="engine file to write")
    parser.add_argument("--fp16", action="store_true",
                        help="the model is an fp16 export (the network is strongly typed: precision follows "
                             "the ONNX graph; this checks it)")
    parser.add_argument("--max-batch", type=int, default=1, metavar="N", help="largest batch size (default: 1)")
    parser.add_argument("--max-seq", type=int, default=2048, metavar="T",
                        help="largest tokens per call (prefill chunk; default: 2048)")
    parser.add_argument("--plugin", default=None, metavar="PATH",
                        help="libhla_trt_plugin.so (default: hla_deploy.native.trt_plugin_path(), built on first "
                             "use into the build cache)")


def run(args: argparse.Namespace) -> int:
    from .engine import (EngineBuildError, TensorRTUnavailableError, build_engine, onnx_model_info,
                                  profile_shapes, trtexec_command)

    from hla_deploy._atomic import check_output_path

    try:
        info = onnx_model_info(args.onnx)
        check_output_path(args.output, "engine file")
        shapes = profile_shapes(info.num_layers, info.num_heads, info.state_size,
                                max_batch=args.max_batch, max_seq=args.max_seq)
        if args.fp16 and info.dtype != "fp16":
            raise ValueError(f"--fp16 given but {args.onnx} is a {info.dtype} export; re-export with "
                             f"`hla-deploy export --dtype fp16` (the network is strongly typed)")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    plugin = None
    if info.op != "standard":
        plugin = args.plugin
        if plugin is None:
            from hla_deploy.native.trt_build import trt_plugin_file
            plugin = str(trt_plugin_file())
    print("equivalent trtexec command:")
    print("  " + trtexec_command(args.onnx, args.output, shapes, plugin))

    if importlib.util.find_spec("tensorrt") is None:
        print("error: TensorRT's Python package is not installed (`import tensorrt` fails), so no engine was "
              "built. Install TensorRT >= 10.3 (JetPack 6.1+ ships it; on x86 `pip install tensorrt`), or run "
              "the trtexec command above on a machine with TensorRT"
              + ("" if plugin is None else " after building the plugin (`python -m hla_deploy.native.trt_build`)")
              + ".", file=sys.stderr)
        return 3
    try:
        path = build_engine(args.onnx, args.output, fp16=args.fp16, max_batch=args.max_batch,
                            max_seq=args.max_seq, plugin_path=args.plugin)
    except TensorRTUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (EngineBuildError, OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
