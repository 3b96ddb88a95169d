"""The AOT-kernel options of `hla-deploy build-plugins` (and the helpers export/bundle share).

    add_kernel_arguments(parser)        --arch --config --model --config-set --no-kernels --kernels-only
                                        --kernel-dir --jobs
    kernel_request(args) -> KernelRequest | None   validated before any build; UsageError naming the flag
    run_kernels(request) -> int         0 built, 1 a compile failed, 3 Triton missing (kernels asked for)
    parse_arch_list(values, flag) -> [87, 90]

Exit status 3 is the project's "optional dependency missing". With no kernel option at all the
default set is built when Triton is importable, and skipped with one line when it is not (the ONNX
Runtime library never needs Triton); likewise an arch whose ptxas cannot be had (sm_87's CUDA 12.6
ptxas on a machine without network access) is one line, not a failure.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .kernel_configs import CONFIG_SETS, ConfigError, KernelConfig, kernel_configs_of_model, parse_arch

DEFAULT_ARCHS = "87,90"


class UsageError(ValueError):
    """A bad command-line value (the message names the flag); exit status 2."""


@dataclass
class KernelRequest:
    configs: List[KernelConfig]
    archs: List[int]
    kernel_dir: Optional[Path]
    jobs: Optional[int]
    explicit: bool          # a kernel option was given: Triton missing is then an error (exit 3)
    skip_unsupported: bool = False   # a configuration without a launch plan: a line, not an error (export)
    verbose: bool = True


def add_kernel_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "AOT prefill kernels (cubins of the Triton forward kernels, for the ORT CUDA op and the TensorRT plugin; "
        "need Triton here, never on the device)")
    g.add_argument("--arch", action="append", metavar="LIST",
                   help=f"CUDA archs to build cubins for, comma-separated or repeated (default {DEFAULT_ARCHS}: "
                        f"sm_87 Jetson Orin, assembled with CUDA 12.6's ptxas, and sm_90 Hopper, which Triton "
                        f"emits as sm_90a)")
    g.add_argument("--config", action="append", metavar="NAME",
                   help="a configuration VARIANT-nN-cC-dD-dvDV-DTYPE, e.g. hla2-n1-c0-d64-dv64-bf16 (repeatable)")
    g.add_argument("--model", action="append", metavar="MODEL.onnx",
                   help="build the configurations of this model's HLARecurrentStep nodes (repeatable)")
    g.add_argument("--config-set", choices=sorted(CONFIG_SETS),
                   help="default: every variant/option (hla2 normalize x ridge, ahla normalize) at d = dv = 64 "
                        "in fp16, bf16 and fp32, which holds the shipped model's hla2-n0-c0-d64-dv64 "
                        "(18 configurations, built when no --config/--model/--config-set is given); matrix: the "
                        "same at d = dv = 32, 64, 128 (45)")
    g.add_argument("--no-kernels", action="store_true", help="do not build AOT kernels")
    g.add_argument("--kernels-only", action="store_true",
                   help="build only the AOT kernels (not the ONNX Runtime library / runner / TensorRT plugin)")
    g.add_argument("--kernel-dir", metavar="DIR",
                   help="kernel directory to write (manifest.json + sm_XX/*.cubin; default <cache>/kernels, "
                        "where the launcher looks; $HLA_DEPLOY_KERNEL_DIR directories are searched first)")
    g.add_argument("--jobs", type=int, metavar="N", help="compile processes (default: the CPU count)")


def parse_arch_list(values: Optional[Sequence[str]], flag: str = "--arch") -> List[int]:
    out: List[int] = []
    for value in values or [DEFAULT_ARCHS]:
        for part in str(value).split(","):
            if not part.strip():
                continue
            try:
                a = parse_arch(part)
            except ConfigError as e:
                raise UsageError(f"{flag} {part.strip()!r}: {e}") from None
            if a not in out:
                out.append(a)
    if not out:
        raise UsageError(f"{flag}: no arch given (expected e.g. {DEFAULT_ARCHS})")
    return out


def kernel_request(args: argparse.Namespace) -> Optional[KernelRequest]:
    """The kernels to build, validated (UsageError naming the flag), or None with --no-kernels."""
    explicit = bool(args.arch or args.config or args.model or args.config_set or args.kernel_dir
                    or args.kernels_only)
    if args.no_kernels:
        if explicit:
            raise UsageError("--no-kernels contradicts --arch/--config/--model/--config-set/--kernel-dir/--kernels-only")
        return None
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    archs = parse_arch_list(args.arch)
    configs: List[KernelConfig] = []
    for name in args.config or []:
        try:
            configs.append(KernelConfig.parse(name))
        except ConfigError as e:
            raise UsageError(f"--config {name!r}: {e}") from None
    for model in args.model or []:
        try:
            found = kernel_configs_of_model(model)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        if not found:
            print(f"build-plugins: --model {model}: no HLARecurrentStep node (a standard-op export?): no kernels "
                  f"for it", file=sys.stderr)
        configs += found
    if args.config_set:
        configs += CONFIG_SETS[args.config_set]
    if not (args.config or args.model or args.config_set):
        configs += CONFIG_SETS["default"]
    unique = list(dict.fromkeys(configs))
    kdir = Path(args.kernel_dir).expanduser() if args.kernel_dir else None
    if kdir is not None and kdir.exists() and not kdir.is_dir():
        raise UsageError(f"--kernel-dir {kdir}: exists and is not a directory")
    return KernelRequest(unique, archs, kdir, args.jobs, explicit, verbose=not getattr(args, "quiet", False))


def run_kernels(req: KernelRequest, prefix: str = "build-plugins") -> int:
    from .kernel_dir import build_kernels
    from .triton_aot import AOTCompileError, TritonMissingError, triton_package_dir
    try:
        triton_package_dir()
    except TritonMissingError as e:
        if req.explicit:
            print(f"{prefix}: error: {e}", file=sys.stderr)
            return 3
        print(f"AOT kernels: not built: {e}")
        return 0
    if not req.configs:
        print("AOT kernels: no configurations to build")
        return 0
    archs = list(req.archs)
    if not req.explicit:  # the implicit default set: an arch whose ptxas is unavailable is a line, not a failure
        from .triton_aot import toolchain
        for a in list(archs):
            try:
                toolchain(a)
            except AOTCompileError as e:
                print(f"AOT kernels sm_{a}: not built: {e}")
                archs.remove(a)
        if not archs:
            return 0
    try:
        report = build_kernels(req.configs, archs, req.kernel_dir, jobs=req.jobs,
                               skip_unsupported=req.skip_unsupported, verbose=req.verbose)
    except AOTCompileError as e:
        print(f"{prefix}: error: {e}", file=sys.stderr)
        return 1
    for line in report.skipped:
        print(f"AOT kernels: skipped {line} (it runs the token-serial CUDA kernel)")
    for a in archs:
        print(report.summary(a))
    return 0
