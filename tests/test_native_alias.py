"""hla_deploy.plugins is a deprecated alias of hla_deploy.native for one release (issue 23): the old
imports users were shown keep working, give the same objects, and warn once naming the new module."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import hla_deploy.native as native
    import hla_deploy.native.locations
    assert not caught, [str(w.message) for w in caught]       # the new name: no warning
    from hla_deploy.plugins import ort_library_path, PluginBuildError, cache_dir
    import hla_deploy.plugins.build
    import hla_deploy.plugins.locations as old_locations
    from hla_deploy.plugins.kernel_dir import default_kernel_dir
    from hla_deploy.plugins import triton_aot, kernel_configs
    import hla_deploy.plugins as old
    loc_attr = old.locations
import hla_deploy.native.build, hla_deploy.native.kernel_dir, hla_deploy.native.triton_aot
dep = [w for w in caught if issubclass(w.category, DeprecationWarning)]
assert len(dep) == 1, [str(w.message) for w in dep]
assert "hla_deploy.native" in str(dep[0].message), dep[0].message
assert dep[0].filename == "<string>", dep[0].filename             # points at the importer
assert ort_library_path is native.ort_library_path and PluginBuildError is native.PluginBuildError
assert hla_deploy.plugins.build is hla_deploy.native.build
assert old_locations is loc_attr is hla_deploy.native.locations
assert default_kernel_dir is hla_deploy.native.kernel_dir.default_kernel_dir
assert triton_aot is hla_deploy.native.triton_aot
try:
    import hla_deploy.plugins.no_such_module
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("a missing module imported")
print("ok")
"""


def test_old_name_works_and_warns_once():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_package_code_names_only_the_new_module():
    """Internal code, docs, scripts and the C++ comments say hla_deploy.native (the alias alone
    names the old one; this test and the alias's own test do; a line of a document may name it to
    say that it is the deprecated alias)."""
    skip = {ROOT / "hla_deploy" / "plugins" / "__init__.py", Path(__file__).resolve(),
            ROOT / "tests" / "test_import_graph.py"}   # it lets the alias warn while importing every module
    found = []
    for folder in ("hla_deploy", "exporters", "plugins", "docs", "examples", "benchmarks", "tests", ".ci"):
        for f in sorted((ROOT / folder).rglob("*")):
            if f in skip or not f.is_file() or f.suffix not in (".py", ".md", ".cc", ".cpp", ".h", ".txt", ".sh", ".cmake", ".toml", ".yml", ".yaml"):
                continue
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
            for n, line in enumerate(lines, 1):
                if f.suffix == ".md" and "deprecated alias" in line:
                    continue
                for old in ("hla_deploy.plugins", "hla_deploy/plugins"):
                    if old in line:
                        found.append(f"{f.relative_to(ROOT)}:{n}: {old}")
    assert not found, found


def test_old_dash_m_entry_point_runs_the_new_module():
    """`python -m hla_deploy.plugins.aot_worker` (docs once showed `python -m hla_deploy.plugins.*`):
    the worker of hla_deploy.native runs and, with nothing on stdin, ends with status 0."""
    out = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-m", "hla_deploy.plugins.aot_worker"],
                         capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("DeprecationWarning") == 1 and "hla_deploy.native" in out.stderr, out.stderr
