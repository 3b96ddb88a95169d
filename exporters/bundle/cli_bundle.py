"""`hla-deploy bundle CKPT -o DIR --target {jetson-orin,x86-cuda,cpu} [--dtype fp16|fp32]`.

Writes a self-contained device bundle DIR and DIR.tar.gz (hla_deploy.exporters.bundle.write): the exported
graphs, native sources, build.sh / engine.sh / check.sh, golden outputs, the AOT prefill cubins of the
graph's configurations (GPU targets) and manifest.json; needs the [export] extra. Errors print
`bundle: error: ...` and leave no partial bundle. Exit status (hla_deploy.exit_codes): 2 a bad
checkpoint, option or output; 1 a failure while writing (export, headers, a kernel that does not
compile, disk); 3 without the [export] extra, or without Triton on a GPU target (pass --no-kernels
to ship no cubins).
"""
from __future__ import annotations

import argparse
import sys

TARGETS = ("jetson-orin", "x86-cuda", "cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("-o", "--output", required=True, help="bundle directory to create (and DIR.tar.gz)")
    parser.add_argument("--target", required=True, choices=TARGETS,
                        help="jetson-orin: JetPack 6.1/6.2 (CUDA 12.6, TensorRT 10.3), TensorRT plugin and AOT "
                             "prefill cubins for sm_87; x86-cuda: TENSORRT_ROOT, TensorRT plugin for sm_80/86/89/90, "
                             "AOT cubins for sm_90 only (elsewhere the prefill runs token-serial); cpu: ONNX "
                             "Runtime only, no cubins")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default=None,
                        help="export precision (default: fp16 on GPU targets, fp32 on cpu); state stays float32")
    parser.add_argument("--decode-steps", type=int, default=16, help="greedy decode steps per golden prompt (default 16)")
    parser.add_argument("--max-seq", type=int, default=2048, help="engine.sh profile: longest prefill T (default 2048)")
    parser.add_argument("--max-batch", type=int, default=1, help="engine.sh profile: largest batch (default 1)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    parser.add_argument("--no-tar", action="store_true", help="do not write DIR.tar.gz")
    parser.add_argument("--no-kernels", action="store_true",
                        help="GPU targets: ship no AOT prefill cubins (default: compile the graph's "
                             "HLARecurrentStep configurations for the target's arch here, which needs Triton, "
                             "the [triton] extra; the device never does)")
    parser.add_argument("--kernel-dir", default=None,
                        help="kernel cache the cubins are built into / reused from (default <cache>/kernels)")


def run(args: argparse.Namespace) -> int:
    from hla_deploy.extras import require_extra
    require_extra("export", "hla-deploy bundle")  # MissingDependencyError: exit 3 (hla_deploy.cli)
    from hla_deploy.models import CheckpointError
    from hla_deploy.native.triton_aot import AOTCompileError, TritonMissingError
    from ..onnx.errors import ExportError
    from .write import BundleError, write_bundle
    try:
        out = write_bundle(args.checkpoint, args.output, target=args.target, dtype=args.dtype,
                           decode_steps=args.decode_steps, max_seq=args.max_seq, max_batch=args.max_batch,
                           force=args.force, tarball=not args.no_tar, kernels=not args.no_kernels,
                           kernel_dir=args.kernel_dir)
    except TritonMissingError as e:
        print(f"bundle: error: {e}", file=sys.stderr)
        return 3
    except (BundleError, CheckpointError) as e:  # the checkpoint, an option or the output
        print(f"bundle: error: {e}", file=sys.stderr)
        return 2
    except (ExportError, AOTCompileError, OSError, RuntimeError, ValueError) as e:  # while writing
        print(f"bundle: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote bundle {out}/" + ("" if args.no_tar else f" and {out}.tar.gz")
          + f" (target {args.target}); on the device: ./build.sh && "
          + ("./engine.sh && " if args.target != "cpu" else "") + "./check.sh")
    return 0
