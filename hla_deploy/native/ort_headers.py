"""ONNX Runtime C/C++ API headers for building plugins/ort_hla (never committed to the repo).

Resolution order (``ort_include_dir()``):

1. ``$ONNXRUNTIME_INCLUDE_DIR`` when set (must contain ``onnxruntime_cxx_api.h``);
2. ``<deps>/onnxruntime-1.21/usr/include/onnxruntime`` when already unpacked, ``<deps>`` being
   ``.deps/`` of a source checkout, or ``<cache>/deps/`` (``$HLA_DEPLOY_CACHE``, default
   ``~/.cache/hla-deploy``) for an installed package (hla_deploy.native.locations.deps_dir);
3. otherwise download Debian's ``libonnxruntime-dev`` package of suite ``trixie`` (ORT 1.21
   headers) with ``apt-get download``, through the Debian mirror that this machine's apt sources
   already name, using a private apt configuration (temporary sources list, lists and cache
   directories) so that the system's apt state is untouched; then ``dpkg-deb -x`` it into
   ``<deps>/onnxruntime-1.21/`` (ignored by git; never site-packages).

The op library is compiled against the 1.21 API (ORT_API_VERSION 21) and so loads into any
ONNX Runtime >= 1.21. Run as ``python -m hla_deploy.native.ort_headers`` to fetch and print the
include directory.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from . import locations

ORT_HEADERS_SUITE = "trixie"
ORT_HEADERS_PACKAGE = "libonnxruntime-dev"
ORT_HEADERS_DIRNAME = "onnxruntime-1.21"
_MARKER = "onnxruntime_cxx_api.h"
_DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class OrtHeadersError(RuntimeError):
    """The ONNX Runtime headers could not be found or fetched."""


def deps_dir() -> Path:
    return locations.deps_dir() / ORT_HEADERS_DIRNAME


def _unpacked_include(root: Path) -> Optional[Path]:
    for cand in (root / "usr" / "include" / "onnxruntime", root / "usr" / "include"):
        if (cand / _MARKER).is_file():
            return cand
    hits = sorted(root.glob(f"**/{_MARKER}"))
    return hits[0].parent if hits else None


# --- apt sources parsing ------------------------------------------------------------------------

def _parse_one_line_list(text: str) -> List[Tuple[str, List[str], str]]:
    """`deb [opts] URI suite comp...` lines -> (uri, suites, signed_by)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        signed_by = ""
        m = re.match(r"deb\s+\[([^\]]*)\]\s+(.*)", line)
        if m:
            for opt in m.group(1).split():
                if opt.startswith("signed-by="):
                    signed_by = opt.split("=", 1)[1]
            rest = m.group(2).split()
        else:
            rest = line.split()[1:]
        if len(rest) >= 2:
            out.append((rest[0], [rest[1]], signed_by))
    return out


def _parse_deb822(text: str) -> List[Tuple[str, List[str], str]]:
    """deb822 `.sources` stanzas -> (uri, suites, signed_by) for Types: deb."""
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.lstrip().startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, val = line.split(":", 1)
            fields[key.strip().lower()] = val.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append((uri, fields.get("suites", "").split(), fields.get("signed-by", "")))
    return out


def system_apt_sources() -> List[Tuple[str, List[str], str]]:
    """Every (uri, suites, signed_by) named by /etc/apt/sources.list and sources.list.d/."""
    entries = []
    main = Path("/etc/apt/sources.list")
    if main.is_file():
        entries += _parse_one_line_list(main.read_text(errors="replace"))
    for f in sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        entries += _parse_one_line_list(Path(f).read_text(errors="replace"))
    for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        entries += _parse_deb822(Path(f).read_text(errors="replace"))
    return entries


def debian_mirror() -> Tuple[str, str]:
    """(uri, signed_by) of the main Debian archive named by this machine's apt sources."""
    debian_suites = {"bookworm", "trixie", "forky", "sid", "unstable", "testing", "stable",
                     "bullseye", "oldstable"}
    for uri, suites, signed_by in system_apt_sources():
        if any(s in debian_suites for s in suites) and not uri.rstrip("/").endswith("-security"):
            return uri, signed_by
    raise OrtHeadersError(
        "no Debian archive found in /etc/apt/sources.list or /etc/apt/sources.list.d/ "
        "(needed to download libonnxruntime-dev); set ONNXRUNTIME_INCLUDE_DIR to a directory "
        f"holding the ONNX Runtime 1.21+ headers ({_MARKER})")


# --- fetch ---------------------------------------------------------------------------------------

def _run(cmd: List[str], cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise OrtHeadersError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}")
    return proc.stdout


def fetch_ort_headers(dest: Optional[Path] = None, verbose: bool = True) -> Path:
    """Download Debian trixie's libonnxruntime-dev with a private apt config and unpack it.

    Returns the include directory (holding onnxruntime_cxx_api.h).
    """
    dest = Path(dest) if dest else deps_dir()
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise OrtHeadersError(
                f"`{tool}` not found: cannot download Debian's {ORT_HEADERS_PACKAGE}. Install the "
                f"ONNX Runtime 1.21+ C/C++ headers yourself and set ONNXRUNTIME_INCLUDE_DIR to the "
                f"directory holding {_MARKER}")
    uri, signed_by = debian_mirror()
    if not signed_by and Path(_DEBIAN_KEYRING).is_file():
        signed_by = _DEBIAN_KEYRING
    opts = f"[signed-by={signed_by}] " if signed_by else ""
    with tempfile.TemporaryDirectory(prefix="hla-ort-headers-") as tmp:
        tmp = Path(tmp)
        (tmp / "lists" / "partial").mkdir(parents=True)
        (tmp / "cache" / "archives" / "partial").mkdir(parents=True)
        (tmp / "sources.list").write_text(f"deb {opts}{uri} {ORT_HEADERS_SUITE} main\n")
        apt = ["apt-get", "-q",
               "-o", f"Dir::Etc::sourcelist={tmp / 'sources.list'}",
               "-o", "Dir::Etc::sourceparts=-",
               "-o", f"Dir::State::Lists={tmp / 'lists'}",
               "-o", f"Dir::Cache={tmp / 'cache'}",
               "-o", "APT::Get::List-Cleanup=0",
               "-o", "Debug::NoLocking=1"]
        if verbose:
            print(f"[ort-headers] apt-get update ({ORT_HEADERS_SUITE}, private lists in {tmp})",
                  file=sys.stderr)
        _run(apt + ["update"])
        dl = tmp / "download"
        dl.mkdir()
        if verbose:
            print(f"[ort-headers] apt-get download {ORT_HEADERS_PACKAGE}", file=sys.stderr)
        _run(apt + ["download", ORT_HEADERS_PACKAGE], cwd=dl)
        debs = sorted(dl.glob("*.deb"))
        if not debs:
            raise OrtHeadersError(f"apt-get download produced no .deb for {ORT_HEADERS_PACKAGE}")
        staging = Path(tempfile.mkdtemp(prefix=".ort-unpack-", dir=str(dest.parent))) \
            if dest.parent.exists() else None
        if staging is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".ort-unpack-", dir=str(dest.parent)))
        try:
            _run(["dpkg-deb", "-x", str(debs[0]), str(staging)])
            (staging / "SOURCE_PACKAGE").write_text(debs[0].name + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)  # atomic: never a half-unpacked dest
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    inc = _unpacked_include(dest)
    if inc is None:
        raise OrtHeadersError(f"{debs[0].name} unpacked into {dest} but has no {_MARKER}")
    if verbose:
        print(f"[ort-headers] headers in {inc}", file=sys.stderr)
    return inc


def ort_include_dir(fetch: bool = True, verbose: bool = True) -> Path:
    """The ONNX Runtime include directory (see module docstring for the resolution order)."""
    env = os.environ.get("ONNXRUNTIME_INCLUDE_DIR")
    if env:
        p = Path(env)
        if not (p / _MARKER).is_file():
            raise OrtHeadersError(f"ONNXRUNTIME_INCLUDE_DIR={env} does not contain {_MARKER}")
        return p
    if deps_dir().is_dir():
        inc = _unpacked_include(deps_dir())
        if inc is not None:
            return inc
    if not fetch:
        raise OrtHeadersError(f"ONNX Runtime headers not found: set ONNXRUNTIME_INCLUDE_DIR or run "
                              f"`python -m hla_deploy.native.ort_headers`")
    return fetch_ort_headers(verbose=verbose)


def main() -> int:
    try:
        print(ort_include_dir())
    except OrtHeadersError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
