"""CMake plumbing shared by the native builds (build.py: ONNX Runtime op, trt_build.py: TensorRT plugin).

    PluginBuildError                            raised by every build step, with a clear message
    MissingBuildToolError                       CMake (or the compiler) not found: also a
                                                MissingDependencyError (exit 3 in the CLI)
    details() -> bool                           echo the commands? (`-v`: HLA_DEPLOY_VERBOSE=1)
    repo_root() / plugins_source_dir()          the root holding plugins/, and plugins/ (checkout or
                                                installed package: hla_deploy.native.locations)
    require_cmake()                             PluginBuildError when `cmake` is not on PATH
    ensure_build_dir(bdir)                      mkdir, or PluginBuildError naming the folder
    build_lock(bdir)                            context manager: exclusive lock on <bdir>/.build.lock
    run_command(cmd, verbose)                   run; PluginBuildError with the output tail on failure
    configure_and_build(bdir, targets, args, key=...)
                                                cmake -S plugins -B bdir + cmake --build, under the
                                                lock; stamps each target built with ``key`` (see below)
    is_fresh(output, bdir, target, key)         output exists and was built for ``key``
    forget_other_source_tree(bdir, src)         drop a CMake cache configured from another clone's
                                                folder (keys are contents, not paths)

Freshness is judged by a stamp file ``<bdir>/.<target>.built`` written after each successful build
and holding the build's key (a hash of the sources, the onnxruntime version and the CUDA setting:
hla_deploy.native.locations.build_key), not by mtimes: CMake leaves an up-to-date library alone,
and a checkout of older sources would look older than the library.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from hla_deploy.extras import MissingDependencyError

from .locations import SOURCE_SUFFIXES, PluginBuildError, plugins_source_dir, repo_root  # noqa: F401


class MissingBuildToolError(PluginBuildError, MissingDependencyError):
    """`cmake` (or the compiler it runs) is not installed."""


def details() -> bool:
    """True when the build should echo its commands: `hla-deploy ... -v` sets HLA_DEPLOY_VERBOSE=1.
    A first-use build otherwise prints one line (what, from where, into where)."""
    return os.environ.get("HLA_DEPLOY_VERBOSE", "") not in ("", "0")


# ---- running CMake -------------------------------------------------------------------------------

def require_cmake() -> None:
    if shutil.which("cmake") is None:
        raise MissingBuildToolError("`cmake` not found: install CMake (>= 3.18) and a C++17 compiler "
                                    "(e.g. `apt-get install cmake g++` or `pip install cmake`)")


def ensure_build_dir(bdir: Path) -> Path:
    """Create ``bdir``; PluginBuildError naming it (and how to move it) when that fails."""
    try:
        Path(bdir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PluginBuildError(f"cannot create the build directory {bdir} ({e}); point HLA_DEPLOY_CACHE "
                               f"(or HLA_DEPLOY_BUILD_DIR) at a writable folder") from e
    return Path(bdir)


@contextlib.contextmanager
def build_lock(bdir: Path):
    """Serialise builds into ``bdir`` (parallel test processes must not race)."""
    ensure_build_dir(bdir)
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
        raise MissingBuildToolError(f"`{cmd[0]}` not found: install CMake (>= 3.18) and a C++17 compiler") from e
    if proc.returncode != 0:
        raise PluginBuildError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                               f"--- last output ---\n{proc.stdout[-4000:]}")


def configure_and_build(bdir: Path, targets: Sequence[str], cmake_args: Iterable[str] = (), *,
                        key: str = "", verbose: bool = True, jobs: Optional[int] = None) -> Path:
    """Configure ``plugins/`` into ``bdir`` (Release, plus ``cmake_args``) and build ``targets``
    (all when empty), holding the build lock; then stamp each target as built for ``key``.
    Returns ``bdir``."""
    src = plugins_source_dir()
    with build_lock(bdir):
        forget_other_source_tree(bdir, src)
        run_command(["cmake", "-S", str(src), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release", *cmake_args],
                    verbose)
        cmd = ["cmake", "--build", str(bdir), "-j", str(jobs or min(os.cpu_count() or 1, 4))]
        for t in targets:
            cmd += ["--target", t]
        run_command(cmd, verbose)
        mark_built(bdir, key, *targets)
    return bdir


def cached_source_dir(bdir: Path) -> Optional[str]:
    """The source folder ``bdir``'s CMakeCache.txt was configured from (CMAKE_HOME_DIRECTORY), or None."""
    try:
        text = (Path(bdir) / "CMakeCache.txt").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            return line.split("=", 1)[1].strip()
    return None


def forget_other_source_tree(bdir: Path, src: Path) -> bool:
    """Build dirs are keyed by the sources' contents, not their folder, so a second clone or venv
    with the same sources shares one. CMake refuses a build tree configured from another folder:
    drop its cache (CMakeCache.txt, CMakeFiles/) so it reconfigures from ``src``; the outputs and
    stamps stay. Returns True when it did."""
    cached = cached_source_dir(bdir)
    if cached is None or Path(cached).resolve() == Path(src).resolve():
        return False
    (Path(bdir) / "CMakeCache.txt").unlink(missing_ok=True)
    shutil.rmtree(Path(bdir) / "CMakeFiles", ignore_errors=True)
    return True


# ---- freshness -----------------------------------------------------------------------------------

def stamp_file(bdir: Path, target: str) -> Path:
    return Path(bdir) / f".{target}.built"


def mark_built(bdir: Path, key: str, *targets: str) -> None:
    for t in targets:
        stamp_file(bdir, t).write_text(key + "\n")


def is_fresh(output: Path, bdir: Path, target: str, key: str) -> bool:
    """True when ``output`` exists and ``target`` was last built (stamp) for ``key``."""
    stamp = stamp_file(bdir, target)
    try:
        return output.is_file() and stamp.read_text().strip() == key
    except OSError:
        return False
