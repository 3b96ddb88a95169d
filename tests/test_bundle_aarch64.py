"""A jetson-orin bundle's ONNX Runtime op and C++ checker, cross-built for aarch64 and run under
qemu-user (issue 13, item 4b: as close to a Jetson as this machine gets).

- toolchain: Debian's g++-aarch64-linux-gnu and qemu-user-static; installed here with apt-get when
  missing and running as root, else the test is skipped with the reason;
- ONNX Runtime: libonnxruntime.so.1.23.2 unpacked from PyPI's aarch64 onnxruntime wheel
  (`pip download --platform manylinux..._aarch64`), cached in $XDG_CACHE_HOME/hla-deploy (or
  ~/.cache/hla-deploy; /tmp when that is not writable);
- the bundle (jetson-orin, fp32 so that the token comparison below is exact arithmetic-wise up to
  float32 rounding) is built by its own build.sh with a CMake toolchain file (HLA_CMAKE_ARGS) and
  ONNXRUNTIME_LIB, HLA_BUILD_TRT=OFF (no aarch64 CUDA / TensorRT here);
- check.sh runs build/bin/hla_golden_check under `qemu-aarch64-static -L /usr/aarch64-linux-gnu`
  (HLA_RUN_PREFIX): the golden check must pass, and its greedy tokens must equal those of the same
  bundle built and checked natively on x86-64.
The times of each phase are printed (pytest -s shows them); measured here: see docs/DEPLOY_JETSON.md.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # qemu: minutes (the quick tier skips it)

pytest.importorskip("onnxruntime")
if shutil.which("cmake") is None:
    pytest.skip("cmake not found: the bundle's build.sh needs it", allow_module_level=True)

ORT_VERSION = "1.23.2"
TRIPLET = "aarch64-linux-gnu"
SYSROOT = Path("/usr") / TRIPLET


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hla-deploy"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path("/tmp") / f"hla-deploy-cache-{os.getuid()}"


def _apt_install(packages) -> str:
    """'' when installed, else the reason it could not be."""
    if os.geteuid() != 0:
        return f"not root: cannot apt-get install {' '.join(packages)}"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(10):  # another process may hold the dpkg lock
        proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                              capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode == 0:
            return ""
        if "lock" not in proc.stderr:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
            proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                                  capture_output=True, text=True, env=env, timeout=900)
            return "" if proc.returncode == 0 else f"apt-get install failed: {proc.stderr[-500:]}"
        time.sleep(15)
    return "the dpkg lock stayed held"


@pytest.fixture(scope="module")
def toolchain():
    need = {f"{TRIPLET}-g++": "g++-aarch64-linux-gnu", "qemu-aarch64-static": "qemu-user-static"}
    missing = [pkg for exe, pkg in need.items() if shutil.which(exe) is None]
    if missing:
        why = _apt_install(missing)
        if why:
            pytest.skip(f"aarch64 cross toolchain / qemu missing ({', '.join(missing)}): {why}")
    return {"cxx": shutil.which(f"{TRIPLET}-g++"), "cc": shutil.which(f"{TRIPLET}-gcc"),
            "qemu": shutil.which("qemu-aarch64-static")}


@pytest.fixture(scope="module")
def aarch64_ort():
    """libonnxruntime.so.1.23.2 of PyPI's aarch64 wheel (downloaded once, cached)."""
    dest = _cache_dir() / f"onnxruntime-{ORT_VERSION}-aarch64"
    lib = dest / f"libonnxruntime.so.{ORT_VERSION}"
    if lib.is_file():
        return lib
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--platform", "manylinux2014_aarch64", "--platform",
           "manylinux_2_27_aarch64", "--platform", "manylinux_2_28_aarch64", "--python-version", "3.10",
           "-d", str(wheels), f"onnxruntime=={ORT_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"pip could not download the aarch64 onnxruntime wheel (offline?): {proc.stderr[-800:]}")
    (whl,) = list(wheels.glob("onnxruntime-*.whl"))
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so."))
        tmp = lib.with_suffix(".part")
        tmp.write_bytes(z.read(name))
        os.replace(tmp, lib)
    shutil.rmtree(wheels, ignore_errors=True)
    return lib


@pytest.fixture(scope="module")
def bundle_dir(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters.bundle.write import write_bundle
    return write_bundle(tiny_ckpt, tmp_path_factory.mktemp("bundle") / "tiny-orin", target="jetson-orin",
                        dtype="fp32", decode_steps=8, tarball=False,
                        kernels=False)  # the AOT cubins: tests/test_bundle_jetson.py, test_bundle_kernels.py


def _run(cmd, env, timeout=900):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    return proc, time.perf_counter() - t0


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONNXRUNTIME", "HLA_", "CXX", "CC"))}
    env.update(JOBS="2", HLA_BUILD_TRT="OFF", HLA_CHECK_RUNNER="cpp", **extra)
    return env


def _tokens(out: str):
    (row,) = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    return row


def test_aarch64_bundle_under_qemu_matches_x86(toolchain, aarch64_ort, bundle_dir, tmp_path):
    from hla_deploy.native.build import onnxruntime_wheel_library

    # ---- x86-64, natively ----
    x86 = tmp_path / "x86"
    shutil.copytree(bundle_dir, x86)
    env = _clean_env(ONNXRUNTIME_LIB=str(onnxruntime_wheel_library()))
    proc, t_x86_build = _run(["bash", str(x86 / "build.sh")], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc, _ = _run(["bash", str(x86 / "check.sh"), "--json"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    x86_row = _tokens(proc.stdout)

    # ---- aarch64: cross-built, run under qemu-user ----
    arm = tmp_path / "arm"
    shutil.copytree(bundle_dir, arm)
    tc = tmp_path / "aarch64.cmake"
    tc.write_text("set(CMAKE_SYSTEM_NAME Linux)\nset(CMAKE_SYSTEM_PROCESSOR aarch64)\n"
                  f"set(CMAKE_CXX_COMPILER {toolchain['cxx']})\n"
                  + (f"set(CMAKE_C_COMPILER {toolchain['cc']})\n" if toolchain["cc"] else "")
                  + f"set(CMAKE_FIND_ROOT_PATH {SYSROOT})\n"
                  "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\nset(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)\n"
                  "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)\n")
    env = _clean_env(ONNXRUNTIME_LIB=str(aarch64_ort), HLA_CMAKE_ARGS=f"-DCMAKE_TOOLCHAIN_FILE={tc}",
                     HLA_RUN_PREFIX=f"{toolchain['qemu']} -L {SYSROOT}")
    proc, t_arm_build = _run(["bash", str(arm / "build.sh")], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for f in ("build/lib/libhla_ort_op.so", "build/bin/hla_golden_check", "build/bin/hla_runner"):
        head = (arm / f).read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183, f"{f} is not aarch64"
    proc, t_arm_check = _run(["bash", str(arm / "check.sh"), "--json"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    arm_row = _tokens(proc.stdout)
    assert arm_row["ok"] and arm_row["rel_rms_err"] < 1e-5, arm_row
    assert arm_row["tokens"] == x86_row["tokens"]
    proc, _ = _run(["bash", str(arm / "check.sh")], env)  # the table, for the log
    print(f"\naarch64 (qemu) check:\n{proc.stdout}\ntimes: x86 build {t_x86_build:.1f} s, aarch64 cross build "
          f"{t_arm_build:.1f} s, aarch64 check under qemu {t_arm_check:.1f} s")
