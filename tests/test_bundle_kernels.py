"""Device bundles carry the AOT prefill cubins of their graph (issue 18, item 6): `--target x86-cuda`
ships sm_90 ones, `--target jetson-orin` sm_87 ones (tests/test_bundle_jetson.py checks that bundle's
build), `cpu` none (tests/test_bundle_cpu.py). Here: the x86-cuda bundle of the tiny checkpoint holds
hla_kernels/ with exactly its nodes' configuration for sm_90, manifest.json hashes every cubin, and
build.sh (ONNX Runtime op only, HLA_BUILD_TRT=OFF: no nvcc needed) copies them beside the libraries
with no Triton on PATH; check.sh verifies the hashes first and notices a stale copy."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("onnxruntime")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def x86_bundle(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters.bundle.write import write_bundle
    root = tmp_path_factory.mktemp("x86")
    return write_bundle(tiny_ckpt, root / "tiny-x86", target="x86-cuda", decode_steps=2, max_seq=64,
                        tarball=False, kernel_dir=root / "kernel-cache")


def test_x86_bundle_ships_sm90_cubins_of_its_nodes(x86_bundle):
    from hla_deploy.native.kernel_configs import kernel_configs_of_model
    from hla_deploy.native.triton_aot import cubin_arch
    man = json.loads((x86_bundle / "manifest.json").read_text())
    want = [c.name for c in kernel_configs_of_model(x86_bundle / "model" / "model.onnx")]
    assert want == ["hla2-n0-c0-d4-dv4-fp16"]  # tiny_ckpt: hla2, d = dv = 4, exported in fp16
    rec = man["kernels"]
    assert rec["dir"] == "hla_kernels" and rec["archs"] == ["sm_90"] and rec["configs"] == want and not rec["skipped"]
    kman = json.loads((x86_bundle / "hla_kernels" / "manifest.json").read_text())
    assert [(e["arch"], e["config"]["d"], e["config"]["dtype"]) for e in kman["entries"]] == [("sm_90", 4, "fp16")]
    cubins = [k["cubin"] for e in kman["entries"] for k in e["kernels"]]
    assert rec["cubins"] == len(cubins) >= 2
    on_disk = sorted(p.relative_to(x86_bundle / "hla_kernels").as_posix()
                     for p in (x86_bundle / "hla_kernels").rglob("*.cubin"))
    assert on_disk == sorted(cubins)
    for e in kman["entries"]:
        for k in e["kernels"]:
            f = f"hla_kernels/{k['cubin']}"
            assert man["files"][f] == _sha(x86_bundle / f) == k["sha256"]
            assert cubin_arch((x86_bundle / f).read_bytes()) == 90
    assert man["files"]["hla_kernels/manifest.json"] == _sha(x86_bundle / "hla_kernels" / "manifest.json")


def test_bundle_help_says_which_archs_each_target_gets(capsys):
    from hla_deploy.cli import main
    assert main(["bundle", "--help"]) == 0   # cli.main returns argparse's status
    text = " ".join(capsys.readouterr().out.split())
    assert "cubins for sm_87" in text and "AOT cubins for sm_90 only" in text and "cpu: ONNX Runtime only, no cubins" in text


def test_bundle_without_triton_is_exit_3_before_any_work(capsys, monkeypatch, tiny_ckpt, tmp_path):
    import hla_deploy.exporters as exporters
    from hla_deploy.cli import main
    from hla_deploy.native import triton_aot

    def missing():
        raise triton_aot.TritonMissingError("needs Triton: `pip install 'hla-deploy[triton]'` (test)")
    monkeypatch.setattr(triton_aot, "triton_package_dir", missing)
    monkeypatch.setattr(exporters, "export_onnx", lambda *a, **k: pytest.fail("exported without Triton"))
    rc = main(["bundle", str(tiny_ckpt), "-o", str(tmp_path / "b"), "--target", "jetson-orin"])
    err = capsys.readouterr().err
    assert rc == 3 and "[triton]" in err and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def x86_built(x86_bundle, tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found: the bundle's build.sh needs it")
    from hla_deploy.native.build import onnxruntime_wheel_library
    b = tmp_path_factory.mktemp("x86_build") / "b"
    shutil.copytree(x86_bundle, b)
    # the device has no Triton: python3 (this interpreter, for onnxruntime + numpy) cannot import it
    shim, blocker = b.parent / "bin", b.parent / "no_triton" / "triton"
    shim.mkdir()
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no Triton on the device')\n")
    (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HLA_", "TENSORRT", "ONNXRUNTIME", "TRITON"))}
    env.update(JOBS="2", HLA_BUILD_TRT="OFF", ONNXRUNTIME_LIB=str(onnxruntime_wheel_library()),
               PATH=f"{shim}:{env['PATH']}", PYTHONPATH=str(blocker.parent))
    proc = subprocess.run(["bash", str(b / "build.sh")], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return b, env


def test_build_sh_puts_the_cubins_beside_the_libraries(x86_built):
    b, _ = x86_built
    lib = b / "build" / "lib"
    assert (lib / "libhla_ort_op.so").is_file()
    src = sorted(p.relative_to(b / "hla_kernels").as_posix() for p in (b / "hla_kernels").rglob("*") if p.is_file())
    dst = sorted(p.relative_to(lib / "hla_kernels").as_posix() for p in (lib / "hla_kernels").rglob("*") if p.is_file())
    assert src == dst and "manifest.json" in src
    assert all(_sha(b / "hla_kernels" / f) == _sha(lib / "hla_kernels" / f) for f in src)
    info = (b / "build" / "BUILD_INFO").read_text()
    assert f"aot_cubins {sum(f.endswith('.cubin') for f in src)}\n" in info


def test_check_sh_verifies_cubin_hashes_and_the_copy(x86_built, tmp_path):
    b0, env = x86_built
    b = tmp_path / "b"
    shutil.copytree(b0, b, symlinks=True)
    proc = subprocess.run(["bash", str(b / "check.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = next((b / "build" / "lib" / "hla_kernels").rglob("*.cubin"))
    copy.write_bytes(copy.read_bytes() + b"\0")
    proc = subprocess.run(["bash", str(b / "check.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1 and "build/lib/hla_kernels differs from hla_kernels/" in proc.stderr, proc.stderr
    orig = b / "hla_kernels" / copy.relative_to(b / "build" / "lib" / "hla_kernels")
    orig.write_bytes(orig.read_bytes()[:-1] + bytes([orig.read_bytes()[-1] ^ 1]))
    proc = subprocess.run(["bash", str(b / "check.sh")], capture_output=True, text=True, env=env, timeout=600)
    rel = orig.relative_to(b).as_posix()
    assert proc.returncode == 1 and f"manifest: CHANGED {rel}" in proc.stderr, proc.stderr
