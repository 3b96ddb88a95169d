"""A second clone or venv reuses the ONNX Runtime op's build (issue 22): the build key is the
sources' content, the onnxruntime version, the CUDA setting and the platform, never a path. Real
builds from two copies of plugins/ into one fresh cache: the second copy finds the library built by
the first (no build line, same file, same mtime), and a target the first never built (the C++
runner) builds from the second copy although CMake's cache was configured from the first."""
import shutil
from pathlib import Path

import pytest

from hla_deploy.native import build, locations

pytestmark = pytest.mark.slow  # two CMake builds (about 30 s on 2 cores)

ROOT = Path(__file__).resolve().parents[1]


def test_second_copy_reuses_the_build(tmp_path, monkeypatch, capfd):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found (the build needs it)")
    from hla_deploy.native.ort_headers import ort_include_dir
    # the ORT headers this checkout uses (fetched into .deps/ if need be), as the user would have them
    monkeypatch.setenv("ONNXRUNTIME_INCLUDE_DIR", str(ort_include_dir(fetch=True, verbose=False)))
    copies = {}
    for name in ("clone_a", "clone_b"):
        native = tmp_path / name / "_native"
        shutil.copytree(ROOT / "plugins", native / "plugins", ignore=shutil.ignore_patterns("build*", "__pycache__"))
        copies[name] = native
    monkeypatch.setattr(locations, "checkout_root", lambda: None)
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HLA_DEPLOY_BUILD_DIR", raising=False)
    monkeypatch.delenv("HLA_DEPLOY_VERBOSE", raising=False)
    monkeypatch.setenv("HLA_DEPLOY_WITH_CUDA", "OFF")

    monkeypatch.setattr(locations, "INSTALLED_NATIVE_ROOT", copies["clone_a"])
    lib = build.ort_library_path(build=True)
    err = capfd.readouterr().err
    building = [ln for ln in err.splitlines() if ln.strip()]
    assert len(building) == 1 and building[0].startswith("[hla-deploy] building libhla_ort_op.so"), err
    assert str(copies["clone_a"] / "plugins") in building[0]  # the one line: what, from where, into where
    mtime = lib.stat().st_mtime_ns

    monkeypatch.setattr(locations, "INSTALLED_NATIVE_ROOT", copies["clone_b"])
    assert build.ort_library_fresh()
    assert build.ort_library_path(build=True) == lib and lib.stat().st_mtime_ns == mtime
    assert "[hla-deploy] building" not in capfd.readouterr().err

    runner = build.ort_runner_path(build=True)  # CMake's cache names clone_a: re-pointed at clone_b
    assert runner.is_file() and runner.parent.parent == lib.parent.parent
    cache = (lib.parent.parent / "CMakeCache.txt").read_text()
    assert f"CMAKE_HOME_DIRECTORY:INTERNAL={copies['clone_b'] / 'plugins'}" in cache
    assert build.ort_library_path(build=True) == lib
