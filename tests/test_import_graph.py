"""No import circles among hla_deploy's modules (issue 23), and every module imports.

The graph is read from the sources with ast: one node per module of the packages pyproject.toml
lists (their folders from its package-dir mapping: exporters/ is hla_deploy.exporters), one edge
per `import` / `from ... import` of another hla_deploy module anywhere in the file, function-level
(lazy) imports included: a lazy import back is still a circle between two modules, only hidden
until run time. `from pkg import name` is an edge to pkg.name when that is a module, else to pkg.
A submodule's implicit import of its parent package is not an edge (Python's own doing).
"""
from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject(root: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))


def source_modules(root: Path = ROOT) -> Dict[str, Path]:
    """{module name: source file} of every Python module the install ships (pyproject's packages,
    the native sources' packages hla_deploy._native.* left out: C++ with a ctypes helper)."""
    tool = _pyproject(root)["tool"]["setuptools"]
    dirs = tool.get("package-dir", {})
    out: Dict[str, Path] = {}
    for pkg in tool["packages"]:
        if pkg.startswith("hla_deploy._native"):
            continue
        top = max((p for p in dirs if pkg == p or pkg.startswith(p + ".")), key=len, default=None)
        folder = root / (Path(dirs[top], *pkg[len(top) + 1:].split(".")) if top and pkg != top else
                         Path(dirs[top]) if top else Path(*pkg.split(".")))
        for f in sorted(folder.glob("*.py")):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def import_graph(modules: Dict[str, Path]) -> Dict[str, Set[str]]:
    """{module: the hla_deploy modules it imports (anywhere in the file)}."""
    def known(name: str) -> str:
        while name and name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules else ""

    graph: Dict[str, Set[str]] = {}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        edges: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges.update(known(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for a in node.names:
                    edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else known(base))
        graph[mod] = {e for e in edges if e and e != mod}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle as [a, b, ..., a], or [] when the graph is acyclic."""
    state: Dict[str, int] = {}   # 1: on the current path, 2: done
    path: List[str] = []

    def visit(m: str) -> List[str]:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = 2
        path.pop()
        return []

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def test_no_import_cycle():
    modules = source_modules()
    assert "hla_deploy.exporters" in modules and "hla_deploy.ops.api" in modules, sorted(modules)[:20]
    cycle = find_cycle(import_graph(modules))
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_find_cycle_sees_a_lazy_import_back():
    """The check can fail: a function-level import back is a circle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_every_package_folder_is_listed():
    """A sub-package missing from pyproject.toml's packages would be left out of the wheel."""
    modules = source_modules()
    listed = {m for m, p in modules.items() if p.name == "__init__.py"}
    folders = {p.parent for p in modules.values()}
    for folder in sorted(folders):
        for sub in sorted(folder.iterdir()):
            if (sub / "__init__.py").is_file() and sub not in folders:
                pytest.fail(f"{sub.relative_to(ROOT)} is a package but pyproject.toml's packages omit it "
                            f"(listed: {sorted(listed)})")


#: modules importable only inside a host program: the module it provides there
ONLY_INSIDE = {"hla_deploy.serving.python_model": "triton_python_backend_utils"}   # Triton's Python backend


@pytest.mark.parametrize("name", sorted(m for m in source_modules() if not m.endswith(".__main__")))
def test_every_module_imports(name):
    if name.startswith("hla_deploy.ops.triton"):
        pytest.importorskip("triton")
    if name in ONLY_INSIDE:
        pytest.importorskip(ONLY_INSIDE[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # hla_deploy.plugins: tests/test_native_alias.py
        importlib.import_module(name)
