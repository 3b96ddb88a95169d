"""Atomic file output: write to a temp file next to the target, then os.replace it into place.

    with atomic_path(out) as tmp:            # tmp: a fresh Path in out's directory
        writer.save(tmp)                     # any writer that takes a path
    with atomic_path(png, suffix=".png") as tmp: fig.savefig(tmp)
    atomic_write_bytes(out, data)            # bytes or any buffer (memoryview, IHostMemory)
    atomic_write_text(out, text)
    check_output_path(out)                   # before a long job: ValueError if out cannot be made
    missing_parent(out)                      # None, or why out's directory is not there ("'f' is a file")

On success the temp file gets the mode a plain ``open(path, "w")`` would give (0666 & ~umask;
mkstemp creates 0600) and replaces ``path`` in one rename, so a reader sees the old file or the
new one, never a half-written one. On any exception the temp file is removed and ``path`` is left
as it was. The directory must exist (the caller creates it, with a clear error if it should).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output_path", "missing_parent"]


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp file path in ``path``'s directory (ending in ``suffix``, for writers that go by
    the extension); on normal exit rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data) -> Path:
    """Write ``data`` (bytes or a buffer) to ``path`` atomically; returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding) as fh:
            fh.write(text)
    return Path(path)


def check_output_path(path: PathLike, what: str = "output file", directory: bool = False) -> Path:
    """Check, before any work, that ``path`` can be created as a file (or, with ``directory``, a
    directory) by a writer that creates missing parent directories; returns ``Path(path)``.

    Raises ValueError naming ``what`` and the path when it is an existing directory (a file is
    wanted) or an existing non-directory (a directory is wanted), when a parent is a file, or when
    the nearest existing parent directory is not writable.
    """
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        kind = "is a file" if path.is_file() else "exists"
        raise ValueError(f"{what} {str(path)!r} {kind}, not a directory")
    if not directory and path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; expected a file path")
    parent = path.parent if not (directory and path.is_dir()) else path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        kind = "is a file, not a directory" if parent.is_file() else "is not a directory"
        raise ValueError(f"{what} {str(path)!r}: {str(parent)!r} {kind}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r}: directory {str(parent)!r} is not writable")
    return path


def missing_parent(path: PathLike) -> Optional[str]:
    """None when ``path``'s directory exists; else why not, naming the first path component that is
    a file ("'f' is a file, not a directory") or the directory that does not exist."""
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    if parent.is_dir():
        return None
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{str(probe)!r} is a file, not a directory"
    return f"directory {str(parent)!r} does not exist"
