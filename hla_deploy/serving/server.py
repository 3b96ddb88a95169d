"""Start Triton Inference Server on a model repository, Python backend set up for this interpreter.

    with TritonServer(repo, grpc_port=None, http_port=None, address="127.0.0.1") as srv:  # free ports
        srv.grpc_url, srv.http_url                      # "127.0.0.1:PORT"

The server's temporary folder (/tmp/hla_triton_*: the private backend directory, the log when no
`log` stream is given) is removed by stop(), after a failed start, and on the context exit; the
log's text stays readable through log_text(). For a repository whose instances are KIND_CPU the
server gets --pinned-memory-pool-byte-size=0 (no pinned host memory is needed, and no CUDA call is
made for it: on a machine without a GPU that call printed a CUDA driver error line).

By default the tritonserver that the nvidia-pytriton wheel carries (`pip install 'hla-deploy[serve]'`).
As pytriton itself does (pytriton/triton.py, _prepare_triton_inference_server), the Python backend
is copied into a private backend directory together with the stub built for THIS interpreter's
Python version (pytriton/tritonserver/python_backend_stubs/X.Y/triton_python_backend_stub); the
server gets LD_LIBRARY_PATH = this interpreter's libpython directory + nvidia_pytriton.libs, and
HLA_DEPLOY_SITE_DIRS = this interpreter's site-packages (read by the repository's model.py), so
the served model imports hla_deploy and onnxruntime from the current environment.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import List, Optional


class ServerError(RuntimeError):
    """tritonserver failed to start or did not become ready; the message says which."""


class ServerMissingError(ServerError):
    """No tritonserver: the nvidia-pytriton wheel is not installed (an optional dependency)."""


class ServerInterrupted(ServerError):
    """The start was cancelled (the `cancel` event was set, e.g. by SIGINT / SIGTERM)."""


def check_port(port: int, flag: str = "port") -> int:
    """port as an int in 1..65535, else ValueError naming `flag` and the value."""
    try:
        p = int(port)
    except (TypeError, ValueError):
        p = None
    if p is None or isinstance(port, (bool, float)) or not 1 <= p <= 65535:
        raise ValueError(f"{flag} must be a TCP port number in 1..65535, got {port}")
    return p


def pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerMissingError("no tritonserver: the nvidia-pytriton wheel is not installed (pip install "
                                 "'hla-deploy[serve]'), and no --tritonserver PATH was given")
    return Path(list(spec.submodule_search_locations)[0])


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _backend_dir(root: Path, dest: Path) -> Path:
    """dest/python = the wheel's Python backend + the stub for this Python; returns dest."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = root / "tritonserver" / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no Python backend stub for Python {ver} ({stub} missing; "
                          f"it ships 3.8-3.13)")
    shutil.copytree(root / "tritonserver" / "backends", dest, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, dest / "python" / "triton_python_backend_stub")
    return dest


def server_env(root: Optional[Path]) -> dict:
    env = os.environ.copy()
    libs = [sysconfig.get_config_var("LIBDIR") or ""]  # the libpython the stub must use: ours
    if root is not None:
        libs.append(str(root.parent / "nvidia_pytriton.libs"))
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["HLA_DEPLOY_SITE_DIRS"] = os.pathsep.join(d for d in site.getsitepackages() if os.path.isdir(d))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class TritonServer:
    """A tritonserver child process (see module docstring); stop() or the context exit ends it."""

    def __init__(self, repo, *, grpc_port: Optional[int] = None, http_port: Optional[int] = None,
                 address: str = "127.0.0.1", tritonserver: Optional[str] = None,
                 extra_args: Optional[List[str]] = None, ready_timeout_s: float = 120.0, log=None,
                 cancel: Optional[threading.Event] = None):
        self.repo = Path(repo).absolute()
        config = self.repo / "hla_lm" / "config.pbtxt"
        if not config.is_file():
            raise FileNotFoundError(f"{self.repo} is not a model repository written by `hla-deploy serve-repo` "
                                    f"(no hla_lm/config.pbtxt)")
        self.address = address
        self.grpc_port = free_port(address) if grpc_port is None else check_port(grpc_port, "--grpc-port")
        self.http_port = free_port(address) if http_port is None else check_port(http_port, "--http-port")
        if self.grpc_port == self.http_port:
            raise ValueError(f"--grpc-port and --http-port are both {self.grpc_port}; they must differ")
        root = None
        if tritonserver is None:
            root = pytriton_root()
            binary = root / "tritonserver" / "bin" / "tritonserver"
        else:
            binary = Path(tritonserver)
            if not binary.is_file():
                raise FileNotFoundError(f"--tritonserver {binary}: no such file")
        self.proc = None
        self._log_text = ""
        self._tmp = Path(tempfile.mkdtemp(prefix="hla_triton_"))
        self.log_path = self._tmp / "tritonserver.log"
        self._log, self._own_log = None, log is None
        try:
            backends = _backend_dir(root, self._tmp / "backends") if root is not None else None
            cmd = [str(binary), f"--model-repository={self.repo}", f"--grpc-address={address}",
                   f"--grpc-port={self.grpc_port}", f"--http-address={address}", f"--http-port={self.http_port}",
                   "--allow-metrics=false", "--exit-on-error=true", "--strict-readiness=true",
                   "--disable-auto-complete-config", "--log-verbose=0"]
            if "KIND_GPU" not in config.read_text():
                cmd.append("--pinned-memory-pool-byte-size=0")
            if backends is not None:
                cmd.append(f"--backend-directory={backends}")
            cmd += list(extra_args or [])
            self.cmd = cmd
            self._log = open(self.log_path, "wb") if log is None else log
            self.proc = subprocess.Popen(cmd, env=server_env(root), stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            self._wait_ready(ready_timeout_s, cancel)
        except BaseException:
            self.stop()
            raise

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    def log_text(self) -> str:
        """The server's log (when no `log` stream was given), also after stop() removed the file."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self._log_text

    def _wait_ready(self, timeout_s: float, cancel: Optional[threading.Event]) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                raise ServerInterrupted("interrupted before tritonserver was ready")
            if self.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.proc.returncode} before it was ready; "
                                  f"log:\n{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise ServerError(f"tritonserver not ready after {timeout_s:g} s; log:\n{self.log_text()[-4000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> Optional[int]:
        """SIGINT (Triton's graceful shutdown), then SIGKILL after timeout_s; removes the temporary
        folder; returns the exit code (None if the process never started)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._own_log and self._log is not None:
            self._log.close()
        if self._tmp.exists():
            self._log_text = self.log_text()[-200_000:]
            shutil.rmtree(self._tmp, ignore_errors=True)
        return None if self.proc is None else self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
