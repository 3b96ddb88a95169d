"""Fixtures shared by the GPU test files of tests/gpu (one definition, one CUDA build per session)."""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/


@pytest.fixture(scope="session")
def capi():
    """plugins/common built with -DHLA_WITH_CUDA=ON (plugins/build-test/capi-cuda), loaded through
    the ctypes test library; skipped without cmake / nvcc.

    $HLA_CAPI_LIB (set by tests/gpu/run_all.sh after it built the library once): load that file
    and build nothing. Otherwise build under an exclusive file lock, so that pytest-xdist workers
    (`-n N`) of one run never run CMake in the same build folder at the same time."""
    from test_native_kernels import load_capi_module
    mod = load_capi_module()
    prebuilt = os.environ.get("HLA_CAPI_LIB")
    if prebuilt:
        if not Path(prebuilt).is_file():
            pytest.fail(f"HLA_CAPI_LIB={prebuilt} is not a file (expected the CUDA build of "
                        f"libhla_kernels_capi.so)")
        lib = mod.load(prebuilt)
    else:
        if shutil.which("cmake") is None or shutil.which("nvcc") is None:
            pytest.skip("cmake or nvcc not on PATH: cannot build the CUDA kernels")
        lock_path = Path(mod.DEFAULT_BUILD_ROOT) / "capi-cuda.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            lib = mod.load(mod.build(cuda=True, jobs=8))
    assert lib.has_cuda, "the CUDA build of plugins/common reports no CUDA (hla_capi has_cuda false)"
    return lib
