"""CUDA 12.x build check: the native CUDA code must build with CUDA 12.6 (Jetson Orin, JetPack 6,
sm_87) as well as with the nvcc 13 installed here.

NVIDIA's CUDA 12 wheels on PyPI are fetched with pip into the ignored folder .deps/cuda-12.6/
(hla_deploy.native.cuda126.fetch_cuda126, also used by the AOT compiler for ptxas 12.6; skipped
when already there; the test is skipped WITH the reason when pip cannot download them).
PyPI's nvidia-cuda-nvcc-cu12 wheels hold ptxas, libnvvm and the crt/ headers but NOT the nvcc
driver, cicc or cudafe++, so a full `nvcc 12.6` cannot be run from them. What is checked instead:

- device code: plugins/common/hla_cuda.cu compiled for sm_87 by NVRTC 12.6 (nvidia-cuda-nvrtc-cu12,
  CUDA 12.6's device compiler: the same front end, NVVM and ptxas as nvcc 12.6) to a cubin, every
  kernel instantiation the launcher uses (4 x float32/float16/bfloat16 x state in smem or not);
  the host half of the file is hidden from NVRTC by `#ifndef __CUDACC_RTC__`;
- host code against the CUDA 12.6 headers (cuda_runtime_api.h, crt/): the TensorRT plugin sources
  and the ONNX Runtime op built with CUDA (g++), and the host half of hla_cuda.cu (nvcc 13 with the
  12.6 cuda_runtime/include first on the include path), so no CUDA-13-only runtime API is used.

By hand, for sm_90 too (what this file runs, one arch at a time):
    python tests/test_cuda12_build.py sm_87 sm_90
"""
from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hla_deploy.native.cuda126 import fetch_cuda126  # pip download into .deps/cuda-12.6

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "plugins" / "common"
TRT = ROOT / "plugins" / "trt_hla"
ORT = ROOT / "plugins" / "ort_hla"

# Every kernel instantiation hla_cuda.cu's dispatch() launches (the token-serial kernel; prefills
# of hla2 / ahla run AOT-compiled Triton cubins through the plugin-independent launcher).
KERNELS = [f"hla::hla_forward_kernel<{vec}, {t}, {smem}>"
           for vec in (1, 4) for t in ("float", "__half", "__nv_bfloat16") for smem in ("true", "false")]

# NVRTC 12.6 has no <cstdint>/<cstddef> of its own: map them to libcu++ (cccl), as the kernels need.
SHIM_CSTDINT = """#pragma once
#include <cuda/std/cstdint>
using cuda::std::int8_t; using cuda::std::int16_t; using cuda::std::int32_t; using cuda::std::int64_t;
using cuda::std::uint8_t; using cuda::std::uint16_t; using cuda::std::uint32_t; using cuda::std::uint64_t;
using cuda::std::uintptr_t;
"""
SHIM_CSTDDEF = "#pragma once\n#include <cuda/std/cstddef>\n"


@pytest.fixture(scope="module")
def cuda126() -> Path:
    try:
        root = fetch_cuda126()
    except RuntimeError as e:
        pytest.skip(f"CUDA 12.6 wheels could not be downloaded with pip (offline?): {e}")
    return root / "nvidia"


def nvrtc_compile(nv: Path, arch: str, shim_dir: Path):
    """Compiles hla_cuda.cu with NVRTC for `arch`; returns (rc, log, cubin bytes, lowered names)."""
    lib = ctypes.CDLL(str(nv / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"))
    major, minor = ctypes.c_int(), ctypes.c_int()
    assert lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) == 0
    assert (major.value, minor.value) == (12, 6), f"NVRTC {major.value}.{minor.value}, expected 12.6"
    (shim_dir / "cstdint").write_text(SHIM_CSTDINT)
    (shim_dir / "cstddef").write_text(SHIM_CSTDDEF)
    src = (COMMON / "hla_cuda.cu").read_bytes()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"hla_cuda.cu", 0, None, None) == 0
    try:
        for name in KERNELS:
            assert lib.nvrtcAddNameExpression(prog, name.encode()) == 0
        opts = [f"--gpu-architecture={arch}", "-std=c++17", "-default-device",
                f"-I{shim_dir}", f"-I{nv / 'cuda_runtime' / 'include'}", f"-I{nv / 'cuda_cccl' / 'include'}",
                f"-I{nv / 'cuda_nvcc' / 'include'}",
                f"-I{COMMON}"]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts]))
        n = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetProgramLog(prog, log)
        cubin, lowered = b"", []
        if rc == 0:
            assert lib.nvrtcGetCUBINSize(prog, ctypes.byref(n)) == 0
            buf = ctypes.create_string_buffer(n.value)
            assert lib.nvrtcGetCUBIN(prog, buf) == 0
            cubin = buf.raw
            for name in KERNELS:
                p = ctypes.c_char_p()
                assert lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(p)) == 0
                lowered.append(p.value)
        return rc, log.value.decode(errors="replace"), cubin, lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def check_device_code(nv: Path, arch: str, tmp: Path) -> None:
    rc, log, cubin, lowered = nvrtc_compile(nv, arch, tmp)
    assert rc == 0, f"NVRTC 12.6 failed to compile hla_cuda.cu for {arch}:\n{log}"
    ours = [line for line in log.splitlines() if line.startswith("hla_cuda.cu(") or str(COMMON) in line]
    assert not ours, "NVRTC 12.6 warnings in our sources:\n" + "\n".join(ours)
    assert cubin[:4] == b"\x7fELF", "NVRTC did not return an ELF cubin"
    sm = struct.unpack_from("<I", cubin, 48)[0] & 0xFF  # e_flags: low byte = SM version
    assert sm == int(arch.split("_")[1]), f"cubin is for sm_{sm}, expected {arch}"
    missing = [k for k, name in zip(KERNELS, lowered) if not name or name not in cubin]
    assert not missing, f"kernels missing from the {arch} cubin: {missing}"


@pytest.mark.slow
def test_kernels_compile_with_nvrtc_12_6_for_sm87(cuda126, tmp_path):
    check_device_code(cuda126, "sm_87", tmp_path)


def _cxx() -> str:
    for cxx in ("g++-12", "g++", "c++"):
        if shutil.which(cxx):
            return cxx
    pytest.skip("no C++ compiler (g++) found")


def _compile_host(cmd, depfile: Path, nv: Path) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, " ".join(map(str, cmd)) + "\n" + proc.stdout[-6000:]
    deps = depfile.read_text()
    want = str(nv / "cuda_runtime" / "include" / "cuda_runtime_api.h")
    assert want in deps, f"{cmd[-1] if cmd else ''} did not use the CUDA 12.6 cuda_runtime_api.h ({want})"


def _trt_include() -> Path:
    for cand in (os.environ.get("TENSORRT_INCLUDE_DIR"), "/work/deps/trt-10.3/include"):
        if cand and (Path(cand) / "NvInferRuntime.h").is_file():
            return Path(cand)
    from hla_deploy.native import PluginBuildError, trt_build
    try:
        return trt_build.tensorrt_include_dir(fetch=True, verbose=False)
    except PluginBuildError as e:
        pytest.skip(f"TensorRT headers unavailable: {e}")


@pytest.mark.parametrize("source", ["hlaRecurrentStepPlugin.cpp", "hlaPluginLibrary.cpp", "hla_trt_runner.cpp"])
def test_tensorrt_plugin_compiles_against_cuda_12_6_headers(cuda126, tmp_path, source):
    inc = _trt_include()
    dep = tmp_path / "deps.d"
    cmd = [_cxx(), "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", "-o", str(tmp_path / "x.o"),
           "-MD", "-MF", str(dep), f"-I{COMMON}", f"-I{TRT}", "-isystem", str(inc),
           "-isystem", str(cuda126 / "cuda_runtime" / "include"), "-isystem", str(cuda126 / "cuda_nvcc" / "include"),
           str(TRT / source)]
    _compile_host(cmd, dep, cuda126)


def test_ort_op_with_cuda_compiles_against_cuda_12_6_headers(cuda126, tmp_path):
    from hla_deploy.native import ort_headers
    try:
        inc = ort_headers.ort_include_dir(fetch=True, verbose=False)
    except Exception as e:  # OrtHeadersError: no headers and no network
        pytest.skip(f"ONNX Runtime headers unavailable: {e}")
    dep = tmp_path / "deps.d"
    # The op calls hla::forward_cuda through hla_kernels.h; include the CUDA runtime API first so the
    # check fails if the op (or a header it pulls in) ever needs a CUDA-13-only declaration.
    cmd = [_cxx(), "-std=c++17", "-Wall", "-Wextra", "-Werror", "-DHLA_WITH_CUDA", "-c",
           "-o", str(tmp_path / "x.o"), "-MD", "-MF", str(dep), "-include", "cuda_runtime_api.h",
           f"-I{COMMON}", "-isystem", str(inc),
           "-isystem", str(cuda126 / "cuda_runtime" / "include"), "-isystem", str(cuda126 / "cuda_nvcc" / "include"),
           str(ORT / "hla_ort_op.cc")]
    _compile_host(cmd, dep, cuda126)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: the host half of hla_cuda.cu needs nvcc")
@pytest.mark.slow
def test_cuda_host_code_uses_only_cuda_12_6_runtime_api(cuda126, tmp_path):
    # nvcc 13's own front end (the 12.6 crt/ headers do not match it), the 12.6 runtime headers
    # first; PTX only (no ptxas run): this checks the runtime API calls, not the device code.
    dep = tmp_path / "deps.d"
    cmd = ["nvcc", "-std=c++17", "-c", "-o", str(tmp_path / "x.o"), "-gencode", "arch=compute_87,code=compute_87",
           "-MD", "-MF", str(dep), f"-I{cuda126 / 'cuda_runtime' / 'include'}", f"-I{COMMON}",
           str(COMMON / "hla_cuda.cu")]
    if shutil.which("g++-12"):
        cmd[1:1] = ["-ccbin", "g++-12"]
    _compile_host(cmd, dep, cuda126)


if __name__ == "__main__":  # python tests/test_cuda12_build.py [sm_87 sm_90 ...]
    import tempfile
    nv = fetch_cuda126() / "nvidia"
    for arch in sys.argv[1:] or ["sm_87"]:
        with tempfile.TemporaryDirectory() as d:
            check_device_code(nv, arch, Path(d))
        print(f"hla_cuda.cu: NVRTC 12.6 {arch}: OK ({len(KERNELS)} kernels)")
