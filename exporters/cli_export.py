"""`hla-deploy export CHECKPOINT -o OUT.onnx [--op custom|standard] [--dtype fp32|fp16]`.

Exports a checkpoint directory (config.json + model.safetensors) to ONNX; needs the [export]
extra. Exit status (hla_deploy.exit_codes): 2 for a missing, corrupt or damaged checkpoint, an
unsupported option or an output that cannot be created (all checked before the export); 1 when
the export or the write fails while running; 3 without the [export] extra. Every error is one `error: ...` line on
stderr, and no output file is left behind (the file is written to a temp file beside OUT and
renamed at the end).
"""
from __future__ import annotations

import argparse
import sys

OPS = ("custom", "standard")
DTYPES = ("fp32", "fp16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("-o", "--output", required=True, help="output .onnx file")
    parser.add_argument("--op", default="custom", choices=OPS,
                        help="custom: one hla_deploy::HLARecurrentStep node per layer (needs the hla-deploy "
                             "ORT library / TensorRT plugin); standard: standard ONNX ops only (default: custom)")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES,
                        help="weights/activations dtype; state and logits stay float32 (default: fp32)")


def run(args: argparse.Namespace) -> int:
    op, dtype = getattr(args, "op", "custom"), getattr(args, "dtype", "fp32")
    if op not in OPS:
        print(f"error: unsupported --op {op!r}; expected one of {', '.join(OPS)}", file=sys.stderr)
        return 2
    if dtype not in DTYPES:
        print(f"error: unsupported --dtype {dtype!r}; expected one of {', '.join(DTYPES)}", file=sys.stderr)
        return 2
    from hla_deploy.extras import require_extra
    require_extra("export", "hla-deploy export")  # MissingDependencyError: exit 3 (hla_deploy.cli)
    from hla_deploy._atomic import check_output_path, missing_parent
    problem = missing_parent(args.output)
    try:
        if problem:
            raise ValueError(f"output file {args.output!r}: {problem}")
        check_output_path(args.output, "output file")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from hla_deploy.models import CheckpointError
    from .export import ExportError, export_onnx
    try:
        path = export_onnx(args.checkpoint, None, args.output, op=op, dtype=dtype)
    except CheckpointError as e:  # missing, corrupt or damaged (digest) checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ExportError, OSError) as e:  # the export or the write failed while running
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:   # e.g. a config the exporter or the op contract rejects
        print(f"error: cannot export {args.checkpoint!r}: {e}", file=sys.stderr)
        return 1
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB, op={op}, dtype={dtype})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hla-deploy export", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
