"""A fixed-target Triton driver, so that Triton compiles for a GPU this machine does not have.

    with fixed_target_driver(90):        # triton.runtime.driver.active is the stub inside
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options=...)

Triton (3.2 to 3.9) asks its active driver for the current target, device and the C type of a
signature entry even when triton.compile is given a target; with no GPU the real CUDA driver
fails ("0 active drivers"). The stub answers those three questions for one compute capability and
refuses anything that would need a device (launching, benchmarking, torch tensors). The previous
active driver (usually none yet) is put back on exit. Used by hla_deploy.native.triton_aot in its
compile worker processes; see /work/shared/gpu/TRITON_AOT.md ("GPU-less compile").
"""
from __future__ import annotations

import contextlib


class FixedTargetDriver:
    """The part of triton.backends.driver.DriverBase that compilation touches, for one arch."""

    def __init__(self, arch: int, warp_size: int = 32):
        self.arch = int(arch)
        self.warp_size = warp_size

    @staticmethod
    def is_active() -> bool:
        return True

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", self.arch, self.warp_size)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def map_python_to_cpp_type(self, ty: str) -> str:
        from triton.backends.nvidia.driver import ty_to_cpp
        return ty_to_cpp(ty)

    def _no_device(self, *args, **kwargs):
        raise RuntimeError(f"hla-deploy's fixed-target Triton driver (sm_{self.arch}, no GPU) cannot run kernels; "
                           f"it only compiles them")

    get_active_torch_device = get_benchmarker = get_device_interface = get_empty_cache_for_benchmark = _no_device


@contextlib.contextmanager
def fixed_target_driver(arch: int):
    """Make a FixedTargetDriver(arch) Triton's active driver for the block; restore the previous one."""
    from triton.runtime import driver
    previous = getattr(driver, "_active", None)   # None: no driver chosen yet (asking would fail here)
    driver.set_active(FixedTargetDriver(arch))
    try:
        yield driver.active
    finally:
        driver.set_active(previous)
