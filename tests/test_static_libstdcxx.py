"""A toolchain that links libstdc++ statically must not break our shared libraries (issue #19).

The GPU machine's g++ (/opt/gcc, GCC 13) links libstdc++ into every shared library. Its symbols
were exported, so in a process that already had libstdc++.so.6 (numpy, torch, onnxruntime) half of
the launcher's std::ostringstream calls bound to the process's copy: the configuration name in the
AOT warning came out truncated here ('hla2-n') and the same call segfaulted on the H200 (inside
hla::aot::Config::name(), from the ORT CUDA op and from the capi). plugins/common/CMakeLists.txt
now keeps a static runtime private (--exclude-libs). This builds the capi with -static-libstdc++
on purpose and runs the call that crashed, in a subprocess, after torch and numpy are loaded.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_native_kernels import load_capi_module

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "plugins" / "build-test" / "capi-static-libstdcxx"

CHILD = r"""
import sys
import numpy
try:
    import torch  # brings its own libstdc++.so.6 dependency, as in the crash on the GPU machine
except ImportError:
    pass
sys.path.insert(0, sys.argv[2])
import hla_capi
lib = hla_capi.load(sys.argv[1])
for dt in ("float16", "bfloat16", "float32"):
    print("workspace", dt, lib.aot_workspace_bytes("hla2", 2, 64, 3, 64, 64, dtype_name=dt), flush=True)
"""


def _static_libstdcxx_available() -> bool:
    cxx = shlex.split(os.environ.get("CXX") or shutil.which("g++") or "")  # CXX may be "ccache g++"
    if not cxx:
        return False
    try:
        r = subprocess.run([*cxx, "-print-file-name=libstdc++.a"], stdout=subprocess.PIPE, text=True)
    except OSError:
        return False
    return r.returncode == 0 and os.path.isabs(r.stdout.strip())


@pytest.fixture(scope="module")
def static_lib():
    if not sys.platform.startswith("linux"):
        pytest.skip("--exclude-libs is a GNU ld option (Linux only)")
    if not _static_libstdcxx_available():
        pytest.skip("the C++ compiler has no libstdc++.a (cannot link libstdc++ statically)")
    mod = load_capi_module()
    try:
        lib = mod.build(BUILD, cuda=False, fake_driver=True,
                        extra_args=["-DCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++ -static-libgcc"])
    except mod.CapiBuildError as e:
        pytest.fail(f"building plugins/common with -static-libstdc++ failed: {e}")
    return mod, lib


def test_static_libstdcxx_is_linked_in_and_not_exported(static_lib):
    mod, lib = static_lib
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    defined = subprocess.run([nm, "-C", "--defined-only", str(lib)], stdout=subprocess.PIPE,
                             text=True, check=True).stdout
    exported = subprocess.run([nm, "-D", "-C", "--defined-only", str(lib)], stdout=subprocess.PIPE,
                              text=True, check=True).stdout
    # the precondition: libstdc++'s out-of-line std::ostream code really is inside the library
    assert "std::ostream::_M_insert<long>" in defined, "libstdc++ was not linked statically"
    # the fix: none of it is visible to the dynamic linker
    assert "std::ostream::_M_insert<long>" not in exported
    assert "std::locale::classic()" not in exported
    assert "std::ios_base::Init::Init()" not in exported


def test_launcher_strings_survive_a_process_with_libstdcxx_loaded(static_lib, tmp_path):
    mod, lib = static_lib
    env = {k: v for k, v in os.environ.items() if k != "HLA_DEPLOY_KERNEL_DIR"}
    env.update(HLA_DEPLOY_CUDA_DRIVER=str(mod.fake_driver_path(lib)),
               HLA_DEPLOY_CACHE=str(tmp_path / "cache"))  # no kernels: each configuration warns once
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHILD, str(lib),
                        str(ROOT / "plugins" / "common")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"child died (rc {r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}"
    assert r.stdout.count("workspace ") == 3, r.stdout
    # each configuration's name is built with std::ostringstream: it must come out whole
    for name in ("hla2-n0-c0-d64-dv64-fp16", "hla2-n0-c0-d64-dv64-bf16"):
        assert f"configuration {name} on sm_90" in r.stderr, r.stderr
