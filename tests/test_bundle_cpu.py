"""`hla-deploy bundle --target cpu` end to end, as on a device (issue 13, item 4a).

The bundle's .tar.gz is unpacked ALONE into a temp dir and run with a fresh venv holding only
onnxruntime and numpy from the package index (`python -m venv` + pip; skipped with the reason when
pip cannot install them), first on PATH as python3: no torch, no hla-deploy checkout. build.sh then
check.sh must pass (Python checker on ort-cpu and onnx-standard, plus the C++ checker), their
numbers within the fp32 tolerances against golden outputs from the torch model. Then each failure
of issue 13 item 3 must be a FAIL of check.sh naming the file: one byte of the model flipped,
a missing library, build/ from another bundle, an engine from another bundle, golden files of
another model, golden logits out of tolerance.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
if shutil.which("cmake") is None:
    pytest.skip("cmake not found: the bundle's build.sh needs it", allow_module_level=True)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory):
    """A fresh venv with only onnxruntime + numpy (what a device has); its bin dir."""
    venv = tmp_path_factory.mktemp("device") / "venv"
    proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:  # e.g. Debian's python3 without python3-venv (ensurepip)
        pytest.skip(f"`python -m venv` failed here: {proc.stderr[-500:]}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
           "onnxruntime", "numpy"]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"pip could not install onnxruntime + numpy into a fresh venv (offline?): {proc.stderr[-800:]}")
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True)
    assert check.returncode != 0, "the device venv must not have torch"
    return venv / "bin"


@pytest.fixture(scope="module")
def bundle_tar(tiny_ckpt, tmp_path_factory):
    from hla_deploy.exporters.bundle.write import write_bundle
    out = write_bundle(tiny_ckpt, tmp_path_factory.mktemp("bundle") / "tiny-cpu", target="cpu", decode_steps=8)
    return out.with_name(out.name + ".tar.gz")


def _unpack(tar: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(dest)
    (d,) = list(dest.iterdir())
    return d


def _env(venv_bin: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "ONNXRUNTIME"))}
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}"
    env["JOBS"] = "2"
    return env


def _sh(bundle: Path, script: str, env: dict, *args, timeout=600):
    return subprocess.run(["bash", str(bundle / script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd="/")


@pytest.fixture(scope="module")
def built(bundle_tar, device_venv, tmp_path_factory):
    b = _unpack(bundle_tar, tmp_path_factory.mktemp("device_copy"))
    env = _env(device_venv)
    proc = _sh(b, "build.sh", env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "build.sh: OK" in proc.stdout
    return b, env


@pytest.mark.slow
def test_cpu_bundle_layout(bundle_tar):
    b = _unpack(bundle_tar, bundle_tar.parent / "layout")
    man = json.loads((b / "manifest.json").read_text())
    files = set(man["files"])
    for f in ("build.sh", "check.sh", "hla_check.py", "model/model.onnx", "model/model_standard.onnx",
              "golden/index.txt", "src/plugins/CMakeLists.txt", "src/plugins/ort_hla/hla_golden_check.cc",
              "src/plugins/common/hla_cpu.cpp", "src/onnxruntime/include/onnxruntime_cxx_api.h", "README.md"):
        assert f in files, f
    assert "engine.sh" not in files and not any(f.startswith("src/plugins/trt_hla") for f in files)
    assert all(_sha(b / f) == h for f, h in man["files"].items())
    assert man["target"] == "cpu" and man["dtype"] == "fp32" and man["versions"]["op_contract"] == 1
    assert man["tolerances"]["rel_rms_err"] == 1e-4 and man["reference"]["form"] == "chunk"
    assert man["kernels"] is None and not (b / "hla_kernels").exists()  # no AOT cubins on the cpu target


@pytest.mark.slow
def test_golden_outputs_are_the_torch_models(tiny_ckpt, bundle_tar):
    """golden/ holds what the torch model gives (independent: the recurrent form, one token at a time)."""
    import torch
    from hla_deploy.models import HLALanguageModel
    b = _unpack(bundle_tar, bundle_tar.parent / "golden_check")
    model = HLALanguageModel.load(tiny_ckpt, map_location="cpu").eval()
    model.attn_backend = "recurrent"
    ids = np.fromfile(b / "golden" / "case0.ids.i64", "<i8")
    fed = np.fromfile(b / "golden" / "case0.tokens.i64", "<i8")
    ref = np.fromfile(b / "golden" / "case0.logits.f32", "<f4").reshape(ids.size + fed.size, 256)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(np.concatenate([ids, fed]))[None], model.init_state(1))
    np.testing.assert_allclose(ref, logits[0].numpy(), rtol=0, atol=2e-5)
    assert list(fed) == [int(t) for t in np.argmax(ref[ids.size - 1:-1], axis=-1)]  # greedy tokens


@pytest.mark.slow
def test_build_then_check_pass_on_a_device_copy(built):
    b, env = built
    proc = _sh(b, "check.sh", env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "manifest: " in out and "files verified" in out
    for row in ("ort-cpu ", "onnx-standard", "ort-cpu (C++)"):
        line = next(ln for ln in out.splitlines() if ln.startswith(row))
        assert line.rstrip().endswith("PASS"), line
    assert "check: PASS (cpu, fp32)" in out
    proc = _sh(b, "check.sh", env, "--json")
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    by = {r["backend"]: r for r in rows}
    assert by["ort-cpu"]["rel_rms_err"] < 1e-5 and by["ort-cpu (C++)"]["rel_rms_err"] < 1e-5
    assert by["ort-cpu"]["tokens"] == by["ort-cpu (C++)"]["tokens"]


def _copy(built, tmp_path) -> Path:
    b, _ = built
    c = tmp_path / "bundle"
    shutil.copytree(b, c, symlinks=True)
    return c


def _rehash(b: Path, *rels: str) -> None:
    """What a bundle assembled from mixed parts looks like: the manifest agrees with its files."""
    man = json.loads((b / "manifest.json").read_text())
    for r in rels:
        man["files"][r] = _sha(b / r)
    (b / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    info = (b / "build" / "BUILD_INFO").read_text().splitlines()  # as if build.sh ran again
    (b / "build" / "BUILD_INFO").write_text("\n".join([f"bundle_id {_sha(b / 'manifest.json')}"] + info[1:]) + "\n")


def _check_fails(b: Path, env: dict, *needles: str):
    proc = _sh(b, "check.sh", env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for n in needles:
        assert n in out, out
    return out


@pytest.mark.slow
def test_flipped_model_byte_fails_naming_the_model(built, tmp_path):
    c = _copy(built, tmp_path)
    data = bytearray((c / "model" / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (c / "model" / "model.onnx").write_bytes(bytes(data))
    _check_fails(c, built[1], "manifest: CHANGED model/model.onnx")


@pytest.mark.slow
def test_missing_file_is_named(built, tmp_path):
    c = _copy(built, tmp_path)
    (c / "golden" / "case1.state.f32").unlink()
    _check_fails(c, built[1], "manifest: MISSING golden/case1.state.f32")


@pytest.mark.slow
def test_missing_library_is_named(built, tmp_path):
    c = _copy(built, tmp_path)
    (c / "build" / "lib" / "libhla_ort_op.so").unlink()
    _check_fails(c, built[1], "missing library build/lib/libhla_ort_op.so")


@pytest.mark.slow
def test_build_from_another_bundle_is_named(built, tmp_path):
    c = _copy(built, tmp_path)
    info = (c / "build" / "BUILD_INFO").read_text().splitlines()
    info[0] = "bundle_id " + "0" * 64
    (c / "build" / "BUILD_INFO").write_text("\n".join(info) + "\n")
    _check_fails(c, built[1], "build/BUILD_INFO: build/ was built from another bundle")


@pytest.mark.slow
def test_engine_from_another_bundle_is_named(built, tmp_path):
    c = _copy(built, tmp_path)
    (c / "build" / "model.plan").write_bytes(b"not an engine")
    (c / "build" / "ENGINE_INFO").write_text("bundle_id " + "1" * 64 + "\ntensorrt 10.3.0\n")
    _check_fails(c, built[1], "build/model.plan was built from another bundle")


@pytest.mark.slow
def test_golden_of_another_model_is_named(built, tmp_path, tiny_ckpt):
    """golden/ replaced by another model's (manifest updated to match): the checkers name golden/index.txt."""
    from hla_deploy.exporters.bundle.golden import record_golden
    from hla_deploy.models import HLALanguageModel
    from hla_deploy.models.checkpoint import load_config
    from hla_deploy.parity.tolerances import default_tolerances
    import torch
    c = _copy(built, tmp_path)
    torch.manual_seed(7)
    other = HLALanguageModel(load_config(tiny_ckpt)).save(tmp_path / "other")
    shutil.rmtree(c / "golden")
    ids = [list(np.fromfile(built[0] / "golden" / f"case{i}.ids.i64", "<i8")) for i in (0, 1)]
    record_golden(other, load_config(other), c / "golden", ids, 8,
                  default_tolerances("fp32"), "fp32", "f" * 64)
    _rehash(c, *[str(p.relative_to(c)) for p in (c / "golden").iterdir()])
    out = _check_fails(c, built[1], "golden/index.txt was recorded from model ffff")
    assert out.count("golden files of another model") >= 2  # the Python and the C++ checker


@pytest.mark.slow
def test_golden_logits_out_of_tolerance_fail(built, tmp_path):
    c = _copy(built, tmp_path)
    p = c / "golden" / "case0.logits.f32"
    a = np.fromfile(p, "<f4")
    a[: a.size // 2] *= 1.01  # 1 % off: far outside fp32's 1e-4
    a.tofile(p)
    _rehash(c, "golden/case0.logits.f32")
    out = _check_fails(c, built[1], "out of tolerance: rel_rms_err", "check: FAIL")
    assert "ort-cpu (C++)" in out


def test_no_partial_bundle_on_failure(tiny_ckpt, tmp_path, monkeypatch):
    from hla_deploy.exporters.bundle import golden as bundle_golden, write as bundle
    def boom(*a, **k):
        raise RuntimeError("reference failed")
    monkeypatch.setattr(bundle_golden, "record_golden", boom)
    with pytest.raises(RuntimeError, match="reference failed"):
        bundle.write_bundle(tiny_ckpt, tmp_path / "b", target="cpu")
    assert list(tmp_path.iterdir()) == []  # no bundle, no .tar.gz, no temp dir


def test_bundle_cli_errors(tiny_ckpt, tmp_path):
    from hla_deploy.cli import main
    # bad input: exit 2 (hla_deploy/exit_codes.py)
    assert main(["bundle", str(tmp_path / "nope"), "-o", str(tmp_path / "b"), "--target", "cpu"]) == 2
    (tmp_path / "exists").mkdir()
    assert main(["bundle", str(tiny_ckpt), "-o", str(tmp_path / "exists"), "--target", "cpu"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


def test_bundle_check_passes_with_a_library_built_elsewhere(tiny_ckpt, ort_library, tmp_path):
    """The quick tier's bundle test: a cpu bundle written (no tarball), the ORT op this checkout built
    put where build.sh would put it (same sources), and the bundle's hla_check.py (numpy + onnxruntime
    only) passes ort-cpu and onnx-standard against the golden outputs. build.sh itself, check.sh and
    the failures it names are the slow tests above."""
    from hla_deploy.exporters.bundle.write import write_bundle
    b = write_bundle(tiny_ckpt, tmp_path / "b", target="cpu", decode_steps=4, tarball=False)
    (b / "build" / "lib").mkdir(parents=True)
    shutil.copy(ort_library, b / "build" / "lib" / "libhla_ort_op.so")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    proc = subprocess.run([sys.executable, str(b / "hla_check.py"), "--backends", "ort-cpu,onnx-standard", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["backend"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert rows["ort-cpu"]["result"] == rows["onnx-standard"]["result"] == "PASS"
    assert rows["ort-cpu"]["rel_rms_err"] < 1e-5
