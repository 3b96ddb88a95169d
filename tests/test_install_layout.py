"""Where the native sources, builds and downloaded headers are, in a checkout and in an installed
package (simulated here; tests/test_packaging.py installs a real wheel), and the check of which
onnxruntime is installed, against fake dist-info metadata."""
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hla_deploy import ort_install
from hla_deploy.native import PluginBuildError, build, locations, ort_headers, trt_build

ROOT = Path(__file__).resolve().parents[1]


# ---- locations ------------------------------------------------------------------------------------

def test_checkout_locations():
    assert locations.checkout_root() == ROOT
    assert locations.repo_root() == ROOT
    assert locations.plugins_source_dir() == ROOT / "plugins"
    assert locations.deps_dir() == ROOT / ".deps"  # a checkout keeps its .deps/ (ignored by git)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """This code as if installed from a wheel: no checkout, sources in <pkg>/_native/plugins."""
    native = tmp_path / "site" / "hla_deploy" / "_native"
    shutil.copytree(ROOT / "plugins", native / "plugins",
                    ignore=shutil.ignore_patterns("build*", "*.py", "__pycache__"))
    monkeypatch.setattr(locations, "checkout_root", lambda: None)
    monkeypatch.setattr(locations, "INSTALLED_NATIVE_ROOT", native)
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HLA_DEPLOY_BUILD_DIR", raising=False)
    monkeypatch.setenv("HLA_DEPLOY_WITH_CUDA", "OFF")
    return native


def test_installed_locations(installed, tmp_path):
    cache = (tmp_path / "cache").resolve()
    assert locations.repo_root() == installed
    assert locations.plugins_source_dir() == installed / "plugins"
    assert locations.cache_dir() == cache
    # downloaded headers go to the cache, never next to the installed package
    assert locations.deps_dir() == cache / "deps"
    assert ort_headers.deps_dir() == cache / "deps" / "onnxruntime-1.21"
    assert trt_build.kernel_lens_include_dir().is_relative_to(cache / "deps")
    # builds: <cache>/build/<kind>-<16 hex digits>
    for bdir, kind in ((build.build_dir(), "ort"), (trt_build.trt_build_dir(), "trt")):
        assert bdir.parent == cache / "build" and bdir.name.startswith(kind + "-")
        assert len(bdir.name) == len(kind) + 17 and int(bdir.name[-16:], 16) >= 0
        assert not bdir.is_relative_to(installed.parent)
    assert build.build_info()["sources"] == str(installed / "plugins")


def test_build_dir_key_follows_sources_onnxruntime_and_cuda(installed, monkeypatch):
    first = build.build_dir()
    assert build.build_dir() == first  # deterministic
    assert build.build_dir(with_cuda="ON") != first
    with monkeypatch.context() as m:
        m.setattr(build, "onnxruntime_label", lambda: "onnxruntime 1.99.0")
        assert build.build_dir() != first
    assert build.build_dir() == first
    trt_first = trt_build.trt_build_dir()
    src = installed / "plugins" / "common" / "hla_cpu.cpp"
    src.write_text(src.read_text() + "\n// edited\n")
    assert build.build_dir() != first and trt_build.trt_build_dir() != trt_first
    # a file that is not part of the ORT build (TensorRT plugin) leaves the ORT key alone
    edited_ort = build.build_dir()
    trt_src = installed / "plugins" / "trt_hla" / "hlaPluginLibrary.cpp"
    trt_src.write_text(trt_src.read_text() + "\n// edited\n")
    assert build.build_dir() == edited_ort


def _copy_sources(dest: Path) -> Path:
    """plugins/ copied as an installed package holds it: dest/_native/plugins (returns dest/_native)."""
    shutil.copytree(ROOT / "plugins", dest / "_native" / "plugins",
                    ignore=shutil.ignore_patterns("build*", "*.py", "__pycache__"))
    return dest / "_native"


def test_build_key_is_the_content_not_the_path(tmp_path, monkeypatch):
    """Two copies of the sources (two clones, two venvs) share one build directory; an edit in one
    copy gives it another. tests/test_build_cache_reuse.py builds in one copy and reuses from the other."""
    a, b = _copy_sources(tmp_path / "clone_a"), _copy_sources(tmp_path / "venv_b" / "site")
    monkeypatch.setattr(locations, "checkout_root", lambda: None)
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HLA_DEPLOY_BUILD_DIR", raising=False)
    monkeypatch.setenv("HLA_DEPLOY_WITH_CUDA", "OFF")
    dirs = {}
    for name, root in (("a", a), ("b", b)):
        monkeypatch.setattr(locations, "INSTALLED_NATIVE_ROOT", root)
        dirs[name] = (build.build_dir(), trt_build.trt_build_dir(), build.build_info()["sources"])
    assert dirs["a"][:2] == dirs["b"][:2]
    assert dirs["a"][2] != dirs["b"][2]  # BUILD_INFO.txt still says where a build came from
    src = b / "plugins" / "common" / "hla_cpu.cpp"
    src.write_text(src.read_text() + "\n// edited in copy b only\n")
    assert build.build_dir() != dirs["a"][0] and trt_build.trt_build_dir() != dirs["a"][1]


def test_cmake_cache_from_another_copy_is_dropped(tmp_path):
    from hla_deploy.native.cmake import cached_source_dir, forget_other_source_tree
    bdir, src_a, src_b = tmp_path / "build", tmp_path / "a", tmp_path / "b"
    for d in (bdir / "CMakeFiles", bdir / "lib", src_a, src_b):
        d.mkdir(parents=True)
    (bdir / "CMakeCache.txt").write_text(f"# cache\nCMAKE_HOME_DIRECTORY:INTERNAL={src_a}\nX:BOOL=ON\n")
    (bdir / "lib" / "libhla_ort_op.so").write_bytes(b"built")
    assert cached_source_dir(bdir) == str(src_a)
    assert forget_other_source_tree(bdir, src_a) is False and (bdir / "CMakeCache.txt").exists()
    assert forget_other_source_tree(bdir, src_b) is True
    assert not (bdir / "CMakeCache.txt").exists() and not (bdir / "CMakeFiles").exists()
    assert (bdir / "lib" / "libhla_ort_op.so").read_bytes() == b"built"  # outputs stay
    assert cached_source_dir(bdir) is None and forget_other_source_tree(bdir, src_b) is False


def test_build_dir_env_overrides(installed, tmp_path, monkeypatch):
    monkeypatch.setenv("HLA_DEPLOY_BUILD_DIR", str(tmp_path / "mine"))
    assert build.build_dir() == (tmp_path / "mine").resolve()
    assert trt_build.trt_build_dir() == (tmp_path / "mine").resolve() / "trt"


def test_stamp_holds_the_key(tmp_path):
    from hla_deploy.native.cmake import is_fresh, mark_built
    out = tmp_path / "lib.so"
    out.write_bytes(b"x")
    assert not is_fresh(out, tmp_path, "t", "k1")  # never built
    mark_built(tmp_path, "k1", "t")
    assert is_fresh(out, tmp_path, "t", "k1")
    assert not is_fresh(out, tmp_path, "t", "k2")  # sources / onnxruntime / CUDA setting changed
    out.unlink()
    assert not is_fresh(out, tmp_path, "t", "k1")


def test_missing_sources_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(locations, "checkout_root", lambda: None)
    monkeypatch.setattr(locations, "INSTALLED_NATIVE_ROOT", tmp_path / "_native")
    with pytest.raises(PluginBuildError, match=r"native sources not found at .*_native/plugins"):
        locations.plugins_source_dir()
    with pytest.raises(PluginBuildError, match="native sources not found"):
        build.ort_library_path(build=True, verbose=False)


def test_cache_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("HLA_DEPLOY_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert locations.cache_dir() == (tmp_path / "home" / ".cache" / "hla-deploy").resolve()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locations.cache_dir() == (tmp_path / "xdg" / "hla-deploy").resolve()
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(tmp_path / "explicit"))
    assert locations.cache_dir() == (tmp_path / "explicit").resolve()


# ---- which onnxruntime ----------------------------------------------------------------------------

def _fake_dist(site: Path, dirname: str, name: str, version: str) -> None:
    d = site / dirname
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_one_onnxruntime_is_fine(tmp_path):
    _fake_dist(tmp_path, "onnxruntime_gpu-1.30.0.dist-info", "onnxruntime-gpu", "1.30.0")
    _fake_dist(tmp_path, "numpy-2.0.0.dist-info", "numpy", "2.0.0")
    assert ort_install.installed_onnxruntime(path=[str(tmp_path)]) == {"onnxruntime-gpu": "1.30.0"}
    assert ort_install.onnxruntime_label(path=[str(tmp_path)]) == "onnxruntime-gpu 1.30.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ort_install.check_onnxruntime(path=[str(tmp_path)]) is None
    assert ort_install.onnxruntime_label(path=[str(tmp_path / "empty")]) == "none"


def test_cpu_and_gpu_both_installed_says_how_to_fix(tmp_path):
    _fake_dist(tmp_path, "onnxruntime-1.32.0.dist-info", "onnxruntime", "1.32.0")
    _fake_dist(tmp_path, "onnxruntime_gpu-1.30.0.dist-info", "onnxruntime_gpu", "1.30.0")
    assert ort_install.installed_onnxruntime(path=[str(tmp_path)]) == {"onnxruntime": "1.32.0",
                                                                       "onnxruntime-gpu": "1.30.0"}
    with pytest.warns(ort_install.OnnxRuntimeConflictWarning) as rec:
        msg = ort_install.check_onnxruntime(path=[str(tmp_path)])
    assert str(rec[0].message) == msg
    assert "onnxruntime 1.32.0 and onnxruntime-gpu 1.30.0 are all installed" in msg
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in msg
    assert "pip install 'hla-deploy[gpu]'" in msg and "pip install 'hla-deploy[cpu]'" in msg


def test_import_hla_deploy_warns_on_conflict(tmp_path):
    """The check runs at `import hla_deploy` (fake onnxruntime-gpu metadata first on sys.path)."""
    _fake_dist(tmp_path, "onnxruntime-1.32.0.dist-info", "onnxruntime", "1.32.0")
    _fake_dist(tmp_path, "onnxruntime_gpu-1.30.0.dist-info", "onnxruntime-gpu", "1.30.0")
    code = "import sys; sys.path[:0] = sys.argv[1:3]; import hla_deploy; print('imported')"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr
    assert "OnnxRuntimeConflictWarning" in proc.stderr
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in proc.stderr
    clean = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none"), str(ROOT)],
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and "OnnxRuntimeConflictWarning" not in clean.stderr


def test_missing_onnxruntime_names_the_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(ImportError, match=r"hla-deploy\[cpu\].*hla-deploy\[gpu\]"):
        ort_install.require_onnxruntime()
    with pytest.raises(PluginBuildError, match=r"hla-deploy\[cpu\]"):
        build.onnxruntime_wheel_library()


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found (the build checks for it first)")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    monkeypatch.setenv("HLA_DEPLOY_CACHE", str(a_file))
    monkeypatch.delenv("HLA_DEPLOY_BUILD_DIR", raising=False)
    with pytest.raises(PluginBuildError, match=r"cannot create the build directory .*a_file/build/ort-.*HLA_DEPLOY_CACHE"):
        build.ort_library_path(build=True, verbose=False)
