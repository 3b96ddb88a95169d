"""`hla-deploy export CHECKPOINT -o OUT.onnx [--op custom|standard] [--dtype fp32|fp16] [--kernels [ARCHS]]`.

Exports a checkpoint directory (config.json + model.safetensors) to ONNX; needs the [export]
extra. Exit status (hla_deploy.exit_codes): 2 for a missing, corrupt or damaged checkpoint, an
unsupported option or an output that cannot be created (all checked before the export); 1 when
the export or the write fails while running; 3 without the [export] extra (or, with --kernels,
without Triton). Every error is one `error: ...` line on stderr, and no output file is left behind
(the file is written to a temp file beside OUT and renamed at the end). ``--kernels`` then builds
the AOT prefill cubins of exactly the exported graph's HLARecurrentStep configurations (off by
default: an export is also the CPU path and must stay fast; `hla-deploy bundle` builds them for its
GPU target); a failed compile exits 1 (the .onnx is kept: it is complete).
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
    parser.add_argument("--kernels", nargs="?", const="87,90", default=None, metavar="ARCHS",
                        help="also build the AOT prefill kernels (cubins) of the exported graph's HLARecurrentStep "
                             "configurations, for ARCHS (comma-separated; 87,90 when given without a value) into "
                             "the kernel cache, where the ORT CUDA op and the TensorRT plugin find them; needs "
                             "Triton ([triton] extra). Default: not built (an export stays a fast CPU job)")
    parser.add_argument("--kernel-dir", default=None,
                        help="with --kernels: the kernel directory to write (default <cache>/kernels)")


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
    from hla_deploy.native.cli_kernels import UsageError
    try:
        kernels = _check_kernel_options(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if kernels is not None:  # Triton missing: say so before the export, not after
        from hla_deploy.native.triton_aot import TritonMissingError, triton_package_dir
        try:
            triton_package_dir()
        except TritonMissingError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
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
    if kernels is not None:
        return _build_model_kernels(path, kernels, getattr(args, "kernel_dir", None))
    return 0


def _check_kernel_options(args):
    """The --kernels request (arch list) validated before the export, or None; UsageError names the flag."""
    from hla_deploy.native.cli_kernels import parse_arch_list
    value = getattr(args, "kernels", None)
    if value is None:
        if getattr(args, "kernel_dir", None):
            from hla_deploy.native.cli_kernels import UsageError
            raise UsageError("--kernel-dir needs --kernels")
        return None
    if getattr(args, "op", "custom") != "custom":
        from hla_deploy.native.cli_kernels import UsageError
        raise UsageError("--kernels applies to --op custom (a standard-op graph runs no HLA kernels)")
    return parse_arch_list([value], "--kernels")


def _build_model_kernels(path, archs, kernel_dir) -> int:
    from hla_deploy.native.cli_kernels import KernelRequest, run_kernels
    from hla_deploy.native.kernel_configs import ConfigError, kernel_configs_of_model
    skipped = []
    try:
        configs = kernel_configs_of_model(path, skipped=skipped)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in skipped:
        print(f"AOT kernels: skipped {line} (it runs the token-serial CUDA kernel)")
    if not configs:
        print(f"AOT kernels: {path} has no HLARecurrentStep configuration the Triton kernels serve: none built")
        return 0
    return run_kernels(KernelRequest(configs, archs, kernel_dir, None, explicit=True, skip_unsupported=True), prefix="export")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hla-deploy export", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
