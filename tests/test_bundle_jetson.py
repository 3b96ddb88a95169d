"""The jetson-orin bundle's TensorRT side, without a Jetson (issue 13, item 4c).

- The bundle's OWN copy of the plugin sources (src/plugins/trt_hla, common) compiles against
  TensorRT headers and CUDA 12.6 headers (tests/test_cuda12_build.py's checks, on the bundle's
  files): host code with g++ against the 10.3 headers (/work/trt-headers/release-10.3/include or
  $HLA_TRT_10_3_INCLUDE; skipped with the reason when absent) and against the headers
  hla_deploy.native.trt_build uses (in CI: the kernel-lens 10.14 copy); the device code with NVRTC
  12.6 for sm_87.
- The bundle's build.sh builds build/lib/libhla_trt_plugin.so (nvcc found here, sm_87 only, as
  bundle.env says) and the ORT op; cuobjdump (when found) shows sm_87 code in it.
- engine.sh passes only trtexec flags from ENGINE_TRTEXEC_FLAGS, all in TRTEXEC_10_3_FLAGS, and
  (when NVIDIA's TensorRT repository mirror is here) each is in the help text of trtexec on branch
  release/10.3 (samples/common/sampleOptions.cpp); run against a stand-in trtexec that records its
  arguments, the profile shapes are decode [1, 1] to prefill [1, MAX_SEQ] and ENGINE_INFO is written.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRT_10_3 = Path(os.environ.get("HLA_TRT_10_3_INCLUDE", "/work/trt-headers/release-10.3/include"))
TRT_REPO = Path(os.environ.get("HLA_TRT_REPO", "/work/.mirror/NVIDIA+TensorRT/repo"))


def _cuda12_module():
    spec = importlib.util.spec_from_file_location("_cuda12_build", ROOT / "tests" / "test_cuda12_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cuda12 = _cuda12_module()


_KERNELS_SKIPPED = []  # why the orin bundle has no AOT cubins (no Triton, or ptxas 12.6 not downloadable)


@pytest.fixture(scope="module")
def orin_bundle(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters.bundle.write import write_bundle
    from hla_deploy.native.triton_aot import AOTCompileError
    root = tmp_path_factory.mktemp("orin")
    kw = dict(target="jetson-orin", decode_steps=4, max_seq=512, tarball=False, kernel_dir=root / "kernel-cache")
    if importlib.util.find_spec("triton") is None:
        _KERNELS_SKIPPED.append("Triton is not installed")
        return write_bundle(tiny_ckpt, root / "tiny-orin", kernels=False, **kw)
    try:
        return write_bundle(tiny_ckpt, root / "tiny-orin", **kw)
    except AOTCompileError as e:
        if "could not be fetched" not in str(e):
            raise
        _KERNELS_SKIPPED.append(f"CUDA 12.6's ptxas could not be downloaded: {e}")
        return write_bundle(tiny_ckpt, root / "tiny-orin", kernels=False, **kw)


@pytest.fixture(scope="module")
def cuda126():
    try:
        return cuda12.fetch_cuda126() / "nvidia"
    except RuntimeError as e:
        pytest.skip(f"CUDA 12.6 wheels could not be downloaded with pip (offline?): {e}")


def _headers(which: str) -> Path:
    if which == "10.3":
        if not (TRT_10_3 / "NvInferRuntime.h").is_file():
            pytest.skip(f"NVIDIA's TensorRT 10.3 headers not at {TRT_10_3} (set HLA_TRT_10_3_INCLUDE)")
        return TRT_10_3
    from hla_deploy.native import PluginBuildError, trt_build
    try:
        return trt_build.tensorrt_include_dir(fetch=True, verbose=False)
    except PluginBuildError as e:
        pytest.skip(f"TensorRT headers unavailable: {e}")


@pytest.mark.slow
def test_orin_bundle_manifest(orin_bundle):
    man = json.loads((orin_bundle / "manifest.json").read_text())
    assert man["target"] == "jetson-orin" and man["dtype"] == "fp16"  # fp16 default on GPU targets
    assert man["versions"]["cuda_arch"] == "87" and man["versions"]["tensorrt_target"].startswith("10.3")
    assert man["tolerances"]["rel_rms_err"] == 1e-2
    assert "engine.sh" in man["files"] and "src/plugins/trt_hla/hlaRecurrentStepPlugin.cpp" in man["files"]
    assert 'CUDA_ARCH=${CUDA_ARCH:-"87"}' in (orin_bundle / "bundle.env").read_text()


def test_orin_bundle_ships_sm87_cubins_from_ptxas_12_6(orin_bundle):
    if _KERNELS_SKIPPED:
        pytest.skip(f"no AOT cubins in the bundle: {_KERNELS_SKIPPED[0]}")
    from hla_deploy.native.triton_aot import triton_tool
    man = json.loads((orin_bundle / "manifest.json").read_text())
    rec = man["kernels"]
    assert rec["archs"] == ["sm_87"] and rec["configs"] == ["hla2-n0-c0-d4-dv4-fp16"] and rec["ptxas_version"] == ["12.6.85"]
    kman = json.loads((orin_bundle / "hla_kernels" / "manifest.json").read_text())
    cubins = [k["cubin"] for e in kman["entries"] for k in e["kernels"]]
    assert {e["arch"] for e in kman["entries"]} == {"sm_87"} and cubins
    for c in cubins:
        assert f"hla_kernels/{c}" in man["files"]
        elf = subprocess.run([str(triton_tool("cuobjdump")), "--dump-elf", str(orin_bundle / "hla_kernels" / c)],
                             capture_output=True, text=True).stdout
        assert re.search(r"64bit elf: .*sm=87, toolkit=126", elf), elf[:300]  # JetPack 6's CUDA 12.6


@pytest.mark.parametrize("headers", ["10.3", "trt_build"])
@pytest.mark.parametrize("source", ["hlaRecurrentStepPlugin.cpp", "hlaPluginLibrary.cpp", "hla_trt_runner.cpp"])
@pytest.mark.slow
def test_bundle_plugin_compiles_against_trt_and_cuda_12_6_headers(orin_bundle, cuda126, tmp_path, headers, source):
    inc = _headers(headers)
    src = orin_bundle / "src" / "plugins"
    dep = tmp_path / "deps.d"
    cmd = [cuda12._cxx(), "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", "-o", str(tmp_path / "x.o"),
           "-MD", "-MF", str(dep), f"-I{src / 'common'}", f"-I{src / 'trt_hla'}", "-isystem", str(inc),
           "-isystem", str(cuda126 / "cuda_runtime" / "include"), "-isystem", str(cuda126 / "cuda_nvcc" / "include"),
           str(src / "trt_hla" / source)]
    cuda12._compile_host(cmd, dep, cuda126)
    assert str(inc / "NvInferRuntime.h") in dep.read_text() or source == "hlaPluginLibrary.cpp"


@pytest.mark.slow
def test_bundle_kernels_compile_with_nvrtc_12_6_for_sm87(orin_bundle, cuda126, tmp_path, monkeypatch):
    monkeypatch.setattr(cuda12, "COMMON", orin_bundle / "src" / "plugins" / "common")
    cuda12.check_device_code(cuda126, "sm_87", tmp_path)


@pytest.fixture(scope="module")
def orin_built(orin_bundle, tmp_path_factory):
    """The bundle copied and built by its own build.sh (nvcc here, sm_87, TensorRT 10.3 headers if present)."""
    if shutil.which("cmake") is None or shutil.which("nvcc") is None:
        pytest.skip("cmake and nvcc are needed to run the bundle's build.sh for the TensorRT plugin")
    inc = TRT_10_3 if (TRT_10_3 / "NvInferRuntime.h").is_file() else _headers("trt_build")
    from hla_deploy.native.build import onnxruntime_wheel_library
    b = tmp_path_factory.mktemp("orin_build") / "b"
    shutil.copytree(orin_bundle, b)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HLA_", "TENSORRT", "ONNXRUNTIME"))}
    env.update(JOBS="2", TENSORRT_INCLUDE_DIR=str(inc), CUDACXX=shutil.which("nvcc"),
               ONNXRUNTIME_LIB=str(onnxruntime_wheel_library()))
    proc = subprocess.run(["bash", str(b / "build.sh")], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return b, env, inc


@pytest.mark.slow
def test_bundle_build_sh_builds_the_plugin_for_sm87(orin_built):
    b, _, inc = orin_built
    lib = b / "build" / "lib" / "libhla_trt_plugin.so"
    assert lib.is_file()
    info = (b / "build" / "BUILD_INFO").read_text()
    assert "target jetson-orin" in info and "cuda_arch 87" in info
    ver = re.search(r"^tensorrt (\S+)$", info, re.M).group(1)
    assert ver.split(".")[0] == "10" or ver.split(".")[0] == "11", info
    if inc == TRT_10_3:
        assert ver.startswith("10.3."), info
    if (b / "hla_kernels").is_dir():  # the AOT cubins beside the libraries, where the launcher looks
        cubins = sorted(p.name for p in (b / "hla_kernels").rglob("*.cubin"))
        assert cubins and sorted(p.name for p in (b / "build" / "lib" / "hla_kernels").rglob("*.cubin")) == cubins
        assert f"aot_cubins {len(cubins)}" in info
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:
        out = subprocess.run([cuobjdump, "--list-elf", str(lib)], capture_output=True, text=True).stdout
        archs = set(re.findall(r"sm_(\d+)", out))
        assert archs == {"87"}, out


def _engine_sh_flags(text: str):
    cmd = text[text.index('"$TRTEXEC" --onnx'):]
    cmd = cmd[:cmd.index("2>&1")]
    return [m for m in re.findall(r"(?<![\w-])(--[A-Za-z]+)", cmd)]


def test_engine_sh_flags_are_trtexec_10_3s():
    from hla_deploy.exporters.bundle.scripts import ENGINE_SH, ENGINE_TRTEXEC_FLAGS, TRTEXEC_10_3_FLAGS
    flags = _engine_sh_flags(ENGINE_SH)
    assert sorted(set(flags)) == sorted(ENGINE_TRTEXEC_FLAGS)
    assert set(flags) <= TRTEXEC_10_3_FLAGS


def test_trtexec_10_3_flag_list_matches_nvidias_help_text():
    from hla_deploy.exporters.bundle.scripts import TRTEXEC_10_3_FLAGS
    if not (TRT_REPO / "HEAD").exists() and not (TRT_REPO / ".git").exists():
        pytest.skip(f"NVIDIA/TensorRT repository mirror not at {TRT_REPO} (set HLA_TRT_REPO)")
    proc = subprocess.run(["git", "-C", str(TRT_REPO), "show", "release/10.3:samples/common/sampleOptions.cpp"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"branch release/10.3 not in the mirror: {proc.stderr[-300:]}")
    helped = set(re.findall(r'"  +(--[A-Za-z0-9]+)', proc.stdout))
    assert len(helped) > 80
    assert TRTEXEC_10_3_FLAGS <= helped, sorted(TRTEXEC_10_3_FLAGS - helped)
    assert "--plugins" not in helped  # removed before 10.3: --dynamicPlugins / --staticPlugins


FAKE_TRTEXEC = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_TRTEXEC_ARGS"
for a in "$@"; do case "$a" in --saveEngine=*) echo fake-engine > "${a#--saveEngine=}";; esac; done
echo "[I] TensorRT version: 10.3.0"
"""


@pytest.mark.slow
def test_engine_sh_with_a_stand_in_trtexec(orin_built, tmp_path):
    b, env, _ = orin_built
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    env = dict(env, TRTEXEC=str(fake), FAKE_TRTEXEC_ARGS=str(tmp_path / "args"))
    proc = subprocess.run(["bash", str(b / "engine.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = (tmp_path / "args").read_text().split()
    L, H, N = 2, 2, 32  # tiny_ckpt: hla2, 2 layers, 2 heads, d = dv = 4
    assert args == ["--onnx=model/model.onnx", "--saveEngine=build/model.plan.tmp", "--stronglyTyped",
                    "--dynamicPlugins=build/lib/libhla_trt_plugin.so",
                    f"--minShapes=input_ids:1x1,state:{L}x1x{H}x{N}",
                    f"--optShapes=input_ids:1x128,state:{L}x1x{H}x{N}",
                    f"--maxShapes=input_ids:1x512,state:{L}x1x{H}x{N}",
                    "--timingCacheFile=build/timing.cache", "--skipInference"]
    info = (b / "build" / "ENGINE_INFO").read_text()
    assert (b / "build" / "model.plan").read_text() == "fake-engine\n"
    assert "plugin_sha256 " in info and re.search(r"^tensorrt 10\.3\.0$", info, re.M)
    # check.sh accepts the engine's stamps; the trt backend is then skipped (no tensorrt package here)
    proc = subprocess.run(["bash", str(b / "check.sh")], capture_output=True, text=True,
                          env=dict(env, PATH=f"{Path(sys.executable).parent}:{env['PATH']}"), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^trt .*skipped: TensorRT's Python package not importable", out, re.M), out
