"""NVIDIA's CUDA 12.6 wheels from PyPI (JetPack 6's CUDA), fetched with pip into the deps folder.

    fetch_cuda126(names=None, verbose=False) -> Path   <deps>/cuda-12.6 holding nvidia/<component>/...
    ptxas_126(verbose=False) -> Path                   <deps>/cuda-12.6/nvidia/cuda_nvcc/bin/ptxas
    tool_version(path) -> str                          "12.6.85" from `<tool> --version`
    CudaFetchError                                     pip could not download / unpack a wheel

``<deps>`` is hla_deploy.native.locations.deps_dir(): ``.deps/`` of a source checkout, else
``<cache>/deps/`` of an installed package. Each wheel is downloaded once (``pip download --no-deps
--only-binary=:all:``) into ``<deps>/cuda-12.6/wheels/`` and unpacked; a marker file per wheel says
it is complete, so a later call (or another process after the lock) does nothing.

Users: the AOT compiler (ptxas 12.6 for sm_87, so JetPack 6's driver loads the cubins:
hla_deploy.native.triton_aot) and tests/test_cuda12_build.py (NVRTC, runtime headers, cccl).
PyPI's nvidia-cuda-nvcc-cu12 holds ptxas, libnvvm and crt/ headers, but not the nvcc driver.
"""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Optional

from .cmake import build_lock
from .locations import PluginBuildError, deps_dir

#: PyPI name -> version (CUDA 12.6 update 2/3, as in JetPack 6.1/6.2)
WHEELS = {
    "nvidia-cuda-nvrtc-cu12": "12.6.77",
    "nvidia-cuda-runtime-cu12": "12.6.77",
    "nvidia-cuda-nvcc-cu12": "12.6.85",
    "nvidia-cuda-cccl-cu12": "12.6.77",
}


class CudaFetchError(PluginBuildError):
    """The CUDA 12.6 wheels could not be downloaded or unpacked (pip's output in the message)."""


def cuda126_dir() -> Path:
    return deps_dir() / "cuda-12.6"


def _marker(dest: Path, name: str) -> Path:
    return dest / f".{name}-{WHEELS[name]}.complete"


def fetch_cuda126(names: Optional[Iterable[str]] = None, verbose: bool = False) -> Path:
    """Download and unpack the wheels ``names`` (default: all of WHEELS) into cuda126_dir(); returns it.
    Raises CudaFetchError with pip's output when a download fails."""
    names = list(WHEELS) if names is None else list(names)
    unknown = [n for n in names if n not in WHEELS]
    if unknown:
        raise ValueError(f"unknown CUDA 12.6 wheel(s) {unknown}; known: {', '.join(WHEELS)}")
    dest = cuda126_dir()
    if all(_marker(dest, n).is_file() for n in names):
        return dest
    wheels = dest / "wheels"
    try:
        wheels.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CudaFetchError(f"cannot create {wheels} ({e}); point HLA_DEPLOY_CACHE at a writable folder") from e
    with build_lock(dest):
        todo = [n for n in names if not _marker(dest, n).is_file()]
        missing = [f"{n}=={WHEELS[n]}" for n in todo
                   if not list(wheels.glob(f"{n.replace('-', '_')}-{WHEELS[n]}-*.whl"))]
        if missing:
            if verbose:
                print(f"[hla-deploy] downloading {', '.join(missing)} (pip) into {wheels}", file=sys.stderr, flush=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", str(wheels), *missing]
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
            except subprocess.TimeoutExpired as e:
                raise CudaFetchError(f"pip download of {', '.join(missing)} timed out after {e.timeout} s") from e
            if proc.returncode != 0:
                raise CudaFetchError(" ".join(cmd) + " failed:\n" + proc.stdout[-2000:])
        for n in todo:
            whl = sorted(wheels.glob(f"{n.replace('-', '_')}-{WHEELS[n]}-*.whl"))
            if not whl:
                raise CudaFetchError(f"pip reported success but no {n}=={WHEELS[n]} wheel is in {wheels}")
            try:
                with zipfile.ZipFile(whl[-1]) as z:
                    z.extractall(dest)
            except (zipfile.BadZipFile, OSError) as e:
                raise CudaFetchError(f"cannot unpack {whl[-1]} ({e}); delete it and retry") from e
            for exe in (dest / "nvidia" / "cuda_nvcc" / "bin").glob("*"):
                exe.chmod(0o755)
            _marker(dest, n).write_text(f"{n}=={WHEELS[n]}\n")
    return dest


def ptxas_126(verbose: bool = False) -> Path:
    """ptxas of CUDA 12.6 (nvidia-cuda-nvcc-cu12), fetched on first use."""
    exe = fetch_cuda126(["nvidia-cuda-nvcc-cu12"], verbose=verbose) / "nvidia" / "cuda_nvcc" / "bin" / "ptxas"
    if not exe.is_file():
        raise CudaFetchError(f"{exe} missing after unpacking nvidia-cuda-nvcc-cu12=={WHEELS['nvidia-cuda-nvcc-cu12']}")
    return exe


def tool_version(path) -> str:
    """The full version ("12.6.85") printed by ``<path> --version`` (ptxas, nvcc, cuobjdump)."""
    try:
        out = subprocess.run([str(path), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PluginBuildError(f"cannot run {path} --version ({e})") from e
    m = re.search(r"\bV(\d+\.\d+\.\d+)", out) or re.search(r"release (\d+\.\d+)", out)
    if not m:
        raise PluginBuildError(f"{path} --version printed no version:\n{out[-500:]}")
    return m.group(1)
