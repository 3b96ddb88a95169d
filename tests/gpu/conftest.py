"""Fixtures shared by the GPU test files of tests/gpu (one definition, one CUDA build per session)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/


@pytest.fixture(scope="session")
def capi():
    """plugins/common built with -DHLA_WITH_CUDA=ON (plugins/build-test/capi-cuda), loaded through
    the ctypes test library; skipped without cmake / nvcc."""
    if shutil.which("cmake") is None or shutil.which("nvcc") is None:
        pytest.skip("cmake or nvcc not on PATH: cannot build the CUDA kernels")
    from test_native_kernels import load_capi_module
    mod = load_capi_module()
    lib = mod.load(mod.build(cuda=True, jobs=8))
    assert lib.has_cuda, "the CUDA build of plugins/common reports no CUDA (hla_capi has_cuda false)"
    return lib
