"""CMake plumbing shared by the native builds (build.py: ONNX Runtime op, trt_build.py: TensorRT plugin).

    PluginBuildError                            raised by every build step, with a clear message
    repo_root() / plugins_source_dir()          <repo> and <repo>/plugins (holding CMakeLists.txt)
    require_cmake()                             PluginBuildError when `cmake` is not on PATH
    build_lock(bdir)                            context manager: exclusive lock on <bdir>/.build.lock
    run_command(cmd, verbose)                   run; PluginBuildError with the output tail on failure
    configure_and_build(bdir, targets, args)    cmake -S plugins -B bdir + cmake --build, under the
                                                lock; stamps each target built (see below)
    newest_source_mtime(subdirs)                newest native source under plugins/<subdirs>
    is_fresh(output, bdir, target, subdirs)     output exists and was built after its sources changed

Freshness is judged by a stamp file ``<bdir>/.<target>.built`` touched after each successful build,
not by the output's mtime: CMake leaves an up-to-date library alone, so after a source edit that
does not change the library its mtime would stay old and every call would re-run CMake.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

#: File suffixes that count as native sources (CMake scripts and the linker version script included).
SOURCE_SUFFIXES = (".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh", ".txt", ".cmake", ".map")


class PluginBuildError(RuntimeError):
    """A native plugin could not be built or found."""


# ---- locations -----------------------------------------------------------------------------------

def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def plugins_source_dir() -> Path:
    src = repo_root() / "plugins"
    if not (src / "CMakeLists.txt").is_file():
        raise PluginBuildError(
            f"native sources not found at {src} (plugins/CMakeLists.txt): build from a source checkout "
            f"of hla-deploy (pip install -e .), or pass the library path explicitly")
    return src


# ---- running CMake -------------------------------------------------------------------------------

def require_cmake() -> None:
    if shutil.which("cmake") is None:
        raise PluginBuildError("`cmake` not found: install CMake (>= 3.18) and a C++17 compiler "
                               "(e.g. `apt-get install cmake g++` or `pip install cmake`)")


@contextlib.contextmanager
def build_lock(bdir: Path):
    """Serialise builds into ``bdir`` (parallel test processes must not race)."""
    bdir.mkdir(parents=True, exist_ok=True)
    with open(bdir / ".build.lock", "w") as fh:
        try:
            import fcntl
            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # non-POSIX: no lock
            pass
        yield


def run_command(cmd: List[str], verbose: bool) -> None:
    if verbose:
        print("[hla-deploy build] " + " ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as e:
        raise PluginBuildError(f"`{cmd[0]}` not found: install CMake (>= 3.18) and a C++17 compiler") from e
    if proc.returncode != 0:
        raise PluginBuildError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                               f"--- last output ---\n{proc.stdout[-4000:]}")


def configure_and_build(bdir: Path, targets: Sequence[str], cmake_args: Iterable[str] = (), *,
                        verbose: bool = True, jobs: Optional[int] = None) -> Path:
    """Configure ``plugins/`` into ``bdir`` (Release, plus ``cmake_args``) and build ``targets``
    (all when empty), holding the build lock; then stamp each target as built. Returns ``bdir``."""
    src = plugins_source_dir()
    with build_lock(bdir):
        run_command(["cmake", "-S", str(src), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release", *cmake_args],
                    verbose)
        cmd = ["cmake", "--build", str(bdir), "-j", str(jobs or min(os.cpu_count() or 1, 4))]
        for t in targets:
            cmd += ["--target", t]
        run_command(cmd, verbose)
        mark_built(bdir, *targets)
    return bdir


# ---- freshness -----------------------------------------------------------------------------------

def newest_source_mtime(subdirs: Sequence[str]) -> float:
    """Newest modification time of plugins/CMakeLists.txt and the sources under plugins/<subdirs>."""
    src = plugins_source_dir()
    newest = (src / "CMakeLists.txt").stat().st_mtime
    for sub in subdirs:
        if not (src / sub).is_dir():
            continue
        for p in (src / sub).rglob("*"):
            if p.is_file() and p.suffix in SOURCE_SUFFIXES:
                newest = max(newest, p.stat().st_mtime)
    return newest


def stamp_file(bdir: Path, target: str) -> Path:
    return Path(bdir) / f".{target}.built"


def mark_built(bdir: Path, *targets: str) -> None:
    for t in targets:
        stamp_file(bdir, t).touch()


def is_fresh(output: Path, bdir: Path, target: str, subdirs: Sequence[str]) -> bool:
    """True when ``output`` exists and ``target``'s stamp is not older than its newest source."""
    stamp = stamp_file(bdir, target)
    return output.is_file() and stamp.is_file() and stamp.stat().st_mtime >= newest_source_mtime(subdirs)
