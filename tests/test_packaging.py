"""hla-deploy as users install it: `pip wheel . --no-deps`, installed with its [cpu,export] extras into
a fresh venv (torch 2.13.0 first, as the README installs it), used from another directory with no
checkout on sys.path. The wheel carries the native sources, `hla-deploy quickstart` builds the ORT op
into the per-user cache ($HLA_DEPLOY_CACHE) and passes, a second run reuses the cached library,
nothing is written into site-packages. The sdist carries the native sources too (and a wheel built
from it).

The runtime alone: the wheel with only [cpu] in another fresh venv has no torch, generates from an
exported model, checks parity between exported graphs, and the torch commands exit 3 saying what to
install.

Two venvs per test session (about a minute each to create: torch, numpy, onnx, onnxruntime, ...)."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NATIVE = "hla_deploy/_native/plugins/"
BUILD_OUTPUT_SUFFIXES = (".so", ".o", ".a", ".dylib", ".dll", ".obj", ".plan", ".whl", ".pyc")


def _run(cmd, timeout=600, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _checkout_native_sources():
    """The files of the checkout's plugins/ (what an installed package carries): git's list where
    there is one, else the files on disk outside build folders and __pycache__."""
    try:
        listed = subprocess.run(["git", "ls-files", "plugins"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()
        files = [ROOT / f for f in listed]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in (ROOT / "plugins").rglob("*")
                 if not p.relative_to(ROOT / "plugins").parts[0].startswith("build") and "__pycache__" not in p.parts]
    return sorted(p.relative_to(ROOT / "plugins").as_posix() for p in files if p.is_file())


def _user_env(cache: Path, venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ONNXRUNTIME_INCLUDE_DIR", "HLA_DEPLOY_BUILD_DIR", "VIRTUAL_ENV",
                        "PYTHONHOME", "HLA_DEPLOY_WITH_CUDA")}
    env.update(HLA_DEPLOY_CACHE=str(cache), CUDA_VISIBLE_DEVICES="", PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", out], cwd=ROOT)
    (whl,) = out.glob("hla_deploy-*.whl")
    return whl


@pytest.fixture(scope="session")
def user_venv(tmp_path_factory, wheel):
    """A fresh venv with torch==2.13.0 and the wheel with its [cpu,export] extras: (venv, site-packages)."""
    venv = tmp_path_factory.mktemp("user") / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "torch==2.13.0"])
    _run([py, "-m", "pip", "install", "-q", f"{wheel}[cpu,export]"])
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    return venv, site


def test_wheel_carries_native_sources_and_no_build_outputs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    native = sorted(n[len(NATIVE):] for n in names if n.startswith(NATIVE))
    assert native == _checkout_native_sources()
    assert {"CMakeLists.txt", "cmake/HlaDefaults.cmake", "common/hla_cpu.cpp", "ort_hla/hla_ort_op.cc",
            "trt_hla/hlaRecurrentStepPlugin.cpp", "trt_hla/exports.map"} <= set(native)
    assert not [n for n in names if n.endswith(BUILD_OUTPUT_SUFFIXES) or "CMakeCache" in n or "CMakeFiles" in n]
    assert not [n for n in names if n.split("/")[0] in ("plugins", "exporters", "tests", "build")]


def test_installed_wheel_quickstart_from_another_directory(user_venv, tmp_path):
    venv, site = user_venv
    py, cli = venv / "bin" / "python", venv / "bin" / "hla-deploy"
    cache = tmp_path / "cache"
    # the ORT headers, where the installed package looks for them (<cache>/deps/): as if fetched
    from hla_deploy.native.ort_headers import ORT_HEADERS_DIRNAME, ort_include_dir
    shutil.copytree(ort_include_dir(fetch=True, verbose=False),
                    cache / "deps" / ORT_HEADERS_DIRNAME / "usr" / "include" / "onnxruntime")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _user_env(cache, venv)

    # the installed copy runs, not this checkout, and it finds its sources in site-packages
    probe = ("import json, sys, hla_deploy; from hla_deploy.native import locations as l; "
             "print(json.dumps([hla_deploy.__file__, str(l.checkout_root()), str(l.plugins_source_dir()), sys.path]))")
    mod, checkout, src, path = json.loads(_run([py, "-c", probe], cwd=work, env=env).stdout)
    assert Path(mod).is_relative_to(site) and checkout == "None"
    assert Path(src) == site / "hla_deploy" / "_native" / "plugins"
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(ROOT)]

    record = site / "hla_deploy-0.1.0.dist-info" / "RECORD"
    installed = {line.split(",")[0] for line in record.read_text().splitlines() if line}
    native = sorted(n[len(NATIVE):] for n in installed if n.startswith(NATIVE) and "__pycache__" not in n)
    assert native == _checkout_native_sources()
    assert not [n for n in installed if n.endswith(BUILD_OUTPUT_SUFFIXES) and "__pycache__" not in n]

    def files_under_package():
        return {p.relative_to(site).as_posix() for p in (site / "hla_deploy").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}

    before = files_under_package()
    assert before <= installed

    # first run: builds the library into the cache and passes
    q1 = _run([cli, "quickstart", "--out", work / "out1", "--max-new-tokens", "8", "--decode-steps", "4"],
              cwd=work, env=env)
    assert "quickstart PASS" in q1.stdout, q1.stdout + q1.stderr
    assert "[hla-deploy] building libhla_ort_op.so" in q1.stderr  # the one line saying what is built where
    assert len([ln for ln in q1.stderr.splitlines() if ln.startswith("[hla-deploy")]) == 1, q1.stderr
    lib = Path(next(line.split(": ", 1)[1] for line in q1.stdout.splitlines()
                    if line.strip().startswith("ORT custom-op library:")).strip())
    assert lib.is_file() and lib.is_relative_to(cache.resolve() / "build") and lib.name == "libhla_ort_op.so"
    assert f"{lib} (built" in q1.stdout
    assert str(site / "hla_deploy" / "_native" / "plugins") in (lib.parents[1] / "BUILD_INFO.txt").read_text()
    rep = json.loads((work / "out1" / "parity" / "parity.json").read_text())
    assert rep["summary"]["ok"] is True and rep["summary"]["passed"] == ["torch", "ort-cpu", "onnx-standard"]
    mtime = lib.stat().st_mtime_ns

    # second run: reuses the cached library (not rebuilt)
    q2 = _run([cli, "quickstart", "--out", work / "out2", "--max-new-tokens", "8", "--decode-steps", "4"],
              cwd=work, env=env)
    assert "quickstart PASS" in q2.stdout and f"{lib} (reused from the build cache" in q2.stdout, q2.stdout
    assert "[hla-deploy] building" not in q2.stderr
    assert lib.stat().st_mtime_ns == mtime

    # build-plugins prints where; the C++ runner builds from the installed sources and runs
    bp = _run([cli, "build-plugins", "--quiet", "--no-kernels"], cwd=work, env=env)
    assert f"build directory: {lib.parents[1]} (cache {cache.resolve()}" in bp.stdout
    assert f"ONNX Runtime custom-op library: {lib}" in bp.stdout
    runner = Path(next(line.split(": ", 1)[1] for line in bp.stdout.splitlines()
                       if line.startswith("C++ runner:")).strip())
    assert runner.is_relative_to(cache.resolve())
    gen = _run([runner, "--model", work / "out1" / "model.onnx", "--library", lib, "--prompt", "def ",
                "--max-new-tokens", "4", "--json"], cwd=work, env=env)
    assert len(json.loads(gen.stdout)["generated_ids"]) == 4

    # nothing was written into site-packages
    assert files_under_package() == before


def test_sdist_carries_native_sources(user_venv, tmp_path):
    venv, _ = user_venv
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "setuptools>=64"])
    out = tmp_path / "sdist"
    out.mkdir()
    name = _run([py, "-c", "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))", out],
                cwd=ROOT).stdout.strip().splitlines()[-1]
    sdist = out / name
    with tarfile.open(sdist) as tf:
        files = [m.name for m in tf.getmembers() if m.isfile()]
    top = files[0].split("/")[0]
    native = sorted(m[len(top) + len("/plugins/"):] for m in files if m.startswith(f"{top}/plugins/"))
    assert native == _checkout_native_sources()
    assert not [m for m in files if m.endswith(BUILD_OUTPUT_SUFFIXES) or "CMakeCache" in m]
    # a wheel built from the sdist (what `pip install hla-deploy` does without a wheel) has them too
    whl_dir = tmp_path / "from_sdist"
    _run([py, "-m", "pip", "wheel", "--no-deps", "-q", "-w", whl_dir, sdist], cwd=tmp_path)
    (whl,) = whl_dir.glob("hla_deploy-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert sorted(n[len(NATIVE):] for n in names if n.startswith(NATIVE)) == _checkout_native_sources()


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory, wheel):
    """A fresh venv with the wheel and only its [cpu] extra (the runtime: no torch)."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[cpu]"])
    return venv


def test_runtime_install_has_no_torch_and_generates(runtime_venv, tiny_ckpt, ort_library, tmp_path):
    from hla_deploy.exporters import export_onnx
    from hla_deploy.models import HLALanguageModel, generate, tokenizer
    py, cli = runtime_venv / "bin" / "python", runtime_venv / "bin" / "hla-deploy"
    env = _user_env(tmp_path / "cache", runtime_venv)
    work = tmp_path / "elsewhere"
    work.mkdir()
    pip_list = {line.split("==")[0].lower() for line in
                _run([py, "-m", "pip", "freeze"], cwd=work, env=env).stdout.splitlines()}
    assert not pip_list & {"torch", "onnxscript", "safetensors", "triton"}, sorted(pip_list)
    assert {"onnxruntime", "onnx", "numpy"} <= pip_list
    probe = _run([py, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"], cwd=work, env=env)
    assert probe.stdout.strip() == "True"

    # an exported model (exported here, where torch is) runs there: the tokens equal the torch model's
    custom = export_onnx(tiny_ckpt, None, tmp_path / "model.onnx", op="custom")
    standard = export_onnx(tiny_ckpt, None, tmp_path / "model_standard.onnx", op="standard")
    want = generate(HLALanguageModel.load(tiny_ckpt).eval(), tokenizer.encode("def "), 8)
    gen = _run([cli, "generate", custom, "--library", ort_library, "--prompt", "def ", "--max-new-tokens", "8",
                "--json"], cwd=work, env=env)
    assert json.loads(gen.stdout)["generated_ids"] == want
    # parity between the exported graphs: the float32 standard-op graph is the reference
    par = _run([cli, "parity", "--onnx", custom, "--onnx", standard, "--library", ort_library, "--backends",
                "ort-cpu,onnx-standard", "--decode-steps", "2", "--json", tmp_path / "p.json", "--quiet"],
               cwd=work, env=env)
    assert json.loads((tmp_path / "p.json").read_text())["summary"]["passed"] == ["ort-cpu", "onnx-standard"], par.stdout

    # the torch side says what to install, exit 3
    proc = subprocess.run([str(cli), "export", str(tiny_ckpt), "-o", str(work / "m.onnx")], capture_output=True,
                          text=True, timeout=300, cwd=work, env=env)
    assert proc.returncode == 3 and "pip install 'hla-deploy[export]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (work / "m.onnx").exists()
