"""The AOT prefill kernels a device bundle ships: ``hla_kernels/`` (manifest.json + sm_XX/*.cubin).

    ship_kernels(model_onnx, bundle_dir, target, kernel_dir=None, verbose=True) -> dict | None
        the configurations of the exported graph's HLARecurrentStep nodes, built on this host for the
        target's arch (into the kernel cache, reused when present) and copied into
        bundle_dir/hla_kernels; returns manifest.json's "kernels" record (None for the cpu target)

The bundle's build.sh copies hla_kernels/ to build/lib/hla_kernels/, beside libhla_ort_op.so and
libhla_trt_plugin.so, where the launcher looks (docs/AOT_KERNELS.md §4); the device needs no Triton.
A node whose configuration the Triton kernels do not serve (hla3, head dims > 128) is listed under
"skipped" and runs the token-serial CUDA kernel on the device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

#: The CUDA archs whose cubins each target ships (the TensorRT plugin's own archs: bundle.CUDA_ARCH).
KERNEL_ARCHS = {"jetson-orin": (87,), "x86-cuda": (90,), "cpu": ()}
KERNELS_DIRNAME = "hla_kernels"


def ship_kernels(model_onnx, bundle_dir, target: str, kernel_dir=None, verbose: bool = True) -> Optional[dict]:
    from hla_deploy.native.kernel_configs import arch_dir, kernel_configs_of_model
    from hla_deploy.native.kernel_dir import build_kernels, copy_kernels

    archs = KERNEL_ARCHS[target]
    if not archs:
        return None
    skipped = []
    configs = kernel_configs_of_model(model_onnx, skipped=skipped)
    dest = Path(bundle_dir) / KERNELS_DIRNAME
    record = {"dir": KERNELS_DIRNAME, "archs": [arch_dir(a) for a in archs], "configs": [c.name for c in configs],
              "skipped": skipped}
    if not configs:
        return record
    report = build_kernels(configs, archs, kernel_dir, verbose=verbose, skip_unsupported=True)
    built = [c for c in configs if all((c.name, arch_dir(a)) in report.compiled + report.reused for a in archs)]
    record["configs"] = [c.name for c in built]
    record["skipped"] += report.skipped
    if not built:
        return record
    entries = copy_kernels(report.kernel_dir, dest, built, archs)
    record["triton_version"] = sorted({e["triton_version"] for e in entries})
    record["ptxas_version"] = sorted({e["ptxas_version"] for e in entries})
    record["cubins"] = sum(len(e["kernels"]) for e in entries)
    return record
