"""ctypes access to the plugins/common kernels through the `hla_kernels_capi` test library.

Used by tests/test_native_kernels.py, tests/gpu/test_cuda_kernels.py and
benchmarks/bench_native_decode.py; not part of the deployed runtime (the ORT op and the TensorRT
plugin link the static `hla_common` / `hla_common_cuda` libraries directly).

    lib = load(build())                      # CPU only; build(cuda=True) adds the CUDA kernels
    o, state = lib.forward_cpu(q, k, v, state, variant="hla2", decay=[0.9, 1.0])

Shapes (numpy, C-contiguous): q, k [B, T, H, d], v [B, T, H, dv] float32/float16/bfloat16
(bfloat16 as a uint16 array with dtype_name="bfloat16"), state [B, H, N] float32.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

COMMON_DIR = Path(__file__).resolve().parent
DEFAULT_BUILD_ROOT = COMMON_DIR.parent / "build-test"
VARIANT_CODES = {"hla2": 0, "ahla": 1, "hla3": 2}
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


class CapiBuildError(RuntimeError):
    """cmake / the compiler failed or is missing."""


def build(build_dir: Optional[os.PathLike] = None, cuda: bool = False, jobs: int = 2,
          extra_args: Sequence[str] = (), fake_driver: bool = False) -> Path:
    """Configure + build `hla_kernels_capi` with CMake (incremental); returns the .so path.
    fake_driver: also build the mocked CUDA driver (fake_driver_path(lib) finds it)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise CapiBuildError("cmake not found on PATH (needed to build plugins/common)")
    bdir = Path(build_dir) if build_dir else DEFAULT_BUILD_ROOT / ("capi-cuda" if cuda else "capi-cpu")
    bdir.mkdir(parents=True, exist_ok=True)
    cfg = [cmake, "-S", str(COMMON_DIR), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release",
           f"-DHLA_WITH_CUDA={'ON' if cuda else 'OFF'}", *extra_args]
    targets = ["hla_kernels_capi"] + (["hla_fake_cuda_driver"] if fake_driver else [])
    for cmd in (cfg, [cmake, "--build", str(bdir), "--target", *targets, "-j", str(jobs)]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise CapiBuildError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-4000:]}")
    lib = bdir / "libhla_kernels_capi.so"
    if not lib.exists():
        raise CapiBuildError(f"build finished but {lib} is missing")
    return lib


def fake_driver_path(lib: os.PathLike) -> Path:
    """The mocked CUDA driver (tests/fake_cuda_driver.cpp) built beside the capi library `lib`."""
    return Path(lib).parent / "libhla_fake_cuda_driver.so"


_NUMPY_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
                 "bfloat16": np.dtype(np.uint16)}  # bfloat16: raw bits in a uint16 array


def _check_io(kernels, q, k, v, state, o, state_out, variant, normalize, eps, ridge, dec, *, dtype_of,
              float32, contiguous):
    """Checks ranks, shapes, dtypes and contiguity of every tensor the C function will touch (it
    only gets raw pointers). Skipped when the parameters are invalid: the C function then returns
    -1 without touching memory. Returns (B, T, H, d, dv)."""
    if len(q.shape) != 4:
        raise ValueError(f"'q' must have rank 4 [B, T, H, d], got shape {tuple(q.shape)}")
    B, T, H, d = (int(x) for x in q.shape)
    dv = int(v.shape[-1]) if len(v.shape) == 4 else -1
    if kernels.validate(variant, B, T, H, d, max(dv, 1), normalize, eps, ridge, dec) is not None:
        return B, T, H, d, dv
    N = kernels.state_size(variant, d, dv, normalize, ridge)
    expected = {"k": tuple(q.shape), "v": (B, T, H, dv), "state": (B, H, N), "o": (B, T, H, dv),
                "state_out": (B, H, N)}
    for name, a in (("k", k), ("v", v), ("state", state), ("o", o), ("state_out", state_out)):
        if a is None:
            continue
        shape = tuple(int(x) for x in a.shape)
        if name == "v" and (len(shape) != 4 or shape[:3] != (B, T, H)):
            raise ValueError(f"'v' has shape {shape}, expected ({B}, {T}, {H}, dv)")
        if shape != expected[name]:
            what = "q's shape " if name == "k" else ""
            raise ValueError(f"'{name}' has shape {shape}, expected {what}{expected[name]}"
                             + (f" (N = state_size for variant={variant}, d={d}, dv={dv}, normalize={int(bool(normalize))}, "
                                f"ridge={ridge})" if name.startswith("state") else ""))
        want = float32 if name.startswith("state") else dtype_of(q)
        if dtype_of(a) != want:
            raise TypeError(f"'{name}' has dtype {dtype_of(a)}, expected {want}")
    for name, a in (("q", q), ("k", k), ("v", v), ("state", state), ("o", o), ("state_out", state_out)):
        if a is not None and not contiguous(a):
            raise ValueError(f"'{name}' must be C-contiguous")
    return B, T, H, d, dv


def _ptr(a) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data if isinstance(a, np.ndarray) else int(a))


class Kernels:
    """Thin wrapper over the extern "C" functions of hla_capi.cpp."""

    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        L = self.lib = ctypes.CDLL(str(self.path))
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        L.hla_capi_state_size.restype = ctypes.c_int64
        L.hla_capi_state_size.argtypes = [i, i, i, i, f]
        L.hla_capi_parse_variant.restype = i
        L.hla_capi_parse_variant.argtypes = [ctypes.c_char_p]
        L.hla_capi_validate.restype = ctypes.c_char_p
        L.hla_capi_validate.argtypes = [i, i, i, i, i, i, i, f, f, p, i]
        L.hla_capi_forward_cpu.restype = i
        L.hla_capi_forward_cpu.argtypes = [i, i, i, i, i, i, i, f, f, p, i, i, p, p, p, p, p, p, i]
        L.hla_capi_convert.restype = i
        L.hla_capi_convert.argtypes = [i, i, ctypes.c_int64, p, p]
        L.hla_capi_has_cuda.restype = i
        L.hla_capi_capture_log.argtypes = [i]
        L.hla_capi_take_log.restype = ctypes.c_char_p
        L.hla_capi_aot_search_dirs.restype = ctypes.c_char_p
        L.hla_capi_sha256.argtypes = [p, ctypes.c_int64, p]
        L.hla_capi_aot_workspace_bytes.restype = ctypes.c_int64
        L.hla_capi_aot_workspace_bytes.argtypes = [i, i, i, i, i, i, i, f, f, p, i, i]
        L.hla_capi_aot_prefill.restype = i
        L.hla_capi_aot_prefill.argtypes = [i, i, i, i, i, i, i, f, f, p, i, i, p, p, p, p, p, p, p, p,
                                           ctypes.c_char_p, i]
        self.has_cuda = bool(L.hla_capi_has_cuda())
        if self.has_cuda:
            L.hla_capi_last_error.restype = ctypes.c_char_p
            L.hla_capi_cuda_prefill_aot.restype = i
            L.hla_capi_cuda_prefill_aot.argtypes = [i, i, i, i, i, i, i, f, f, p, i, i]
            L.hla_capi_cuda_workspace_size.restype = ctypes.c_int64
            L.hla_capi_cuda_workspace_size.argtypes = [i, i, i, i, i, i, i, f, f, p, i, i]
            L.hla_capi_forward_cuda.restype = i
            L.hla_capi_forward_cuda.argtypes = [i, i, i, i, i, i, i, f, f, p, i, i,
                                                p, p, p, p, p, p, p, p]

    # -- helpers ---------------------------------------------------------------------------
    def state_size(self, variant: str, d: int, dv: int, normalize=False, ridge=0.0) -> int:
        return int(self.lib.hla_capi_state_size(VARIANT_CODES[variant], d, dv, int(normalize), ridge))

    def validate(self, variant, B, T, H, d, dv, normalize=False, eps=1e-6, ridge=0.0, decay=None):
        """None when valid, else the message (str). `variant` may be a str or a raw int code."""
        code = VARIANT_CODES[variant] if isinstance(variant, str) else int(variant)
        dec = None if decay is None else np.ascontiguousarray(decay, dtype=np.float32)
        msg = self.lib.hla_capi_validate(code, B, T, H, d, dv, int(normalize), eps, ridge,
                                         None if dec is None else _ptr(dec),
                                         0 if dec is None else dec.size)
        return None if msg is None else msg.decode()

    def convert(self, dtype_name: str, to_float: bool, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape, np.float32 if to_float else np.uint16)
        rc = self.lib.hla_capi_convert(DTYPE_CODES[dtype_name], 0 if to_float else 1, x.size,
                                       _ptr(x), _ptr(out))
        if rc != 0:
            raise ValueError(f"hla_capi_convert returned {rc}")
        return out

    # -- the AOT launcher (hla_aot_launcher.h) --------------------------------------------------
    def capture_log(self, capture: bool = True) -> None:
        """Send plugins/common's warnings/errors to a buffer (take_log) instead of stderr."""
        self.lib.hla_capi_capture_log(int(capture))

    def take_log(self):
        """[(level 'W'|'E', message)] logged since the last call."""
        text = self.lib.hla_capi_take_log().decode()
        return [(ln[0], ln[2:]) for ln in text.splitlines() if ln]

    def sha256(self, data: bytes) -> str:
        out = ctypes.create_string_buffer(65)
        self.lib.hla_capi_sha256(data, len(data), out)
        return out.value.decode()

    def aot_reset(self) -> None:
        self.lib.hla_capi_aot_reset()

    def aot_search_dirs(self):
        return self.lib.hla_capi_aot_search_dirs().decode().splitlines()

    def aot_workspace_bytes(self, variant, B, T, H, d, dv, normalize=False, ridge=0.0, dtype_name="float32",
                            eps=1e-6, decay=None) -> int:
        dec = None if decay is None else np.ascontiguousarray(np.atleast_1d(decay), dtype=np.float32)
        n = int(self.lib.hla_capi_aot_workspace_bytes(VARIANT_CODES[variant], B, T, H, d, dv, int(normalize), eps,
                                                      ridge, None if dec is None else _ptr(dec),
                                                      0 if dec is None else dec.size, DTYPE_CODES[dtype_name]))
        if n < 0:
            raise ValueError(f"aot_workspace_bytes({variant}, B={B}, T={T}, H={H}, d={d}, dv={dv}): invalid parameters")
        return n

    def aot_prefill(self, variant, B, T, H, d, dv, ptrs, workspace, stream=0, normalize=False, ridge=0.0,
                    dtype_name="float32", eps=1e-6, decay=None):
        """hla::aot::prefill with raw device addresses (ints): ptrs = (q, k, v, state_in, o, state_out).
        Returns ("launched" | "token-serial" | "error", message)."""
        dec = None if decay is None else np.ascontiguousarray(np.atleast_1d(decay), dtype=np.float32)
        msg = ctypes.create_string_buffer(4096)
        rc = self.lib.hla_capi_aot_prefill(VARIANT_CODES[variant], B, T, H, d, dv, int(normalize), eps, ridge,
                                           None if dec is None else _ptr(dec), 0 if dec is None else dec.size,
                                           DTYPE_CODES[dtype_name], *[ctypes.c_void_p(x) for x in ptrs],
                                           ctypes.c_void_p(workspace), ctypes.c_void_p(stream), msg, len(msg))
        if rc < 0:
            raise ValueError(f"aot_prefill({variant}, B={B}, T={T}, H={H}, d={d}, dv={dv}): invalid parameters")
        return {0: "launched", 1: "token-serial", 2: "error"}[rc], msg.value.decode()

    def cuda_workspace_size(self, variant, B, T, H, d, dv, normalize=False, ridge=0.0, dtype_name="float32",
                            decay=None):
        """Bytes of CUDA workspace forward_cuda needs (hla::cuda_workspace_size)."""
        if not self.has_cuda:
            raise RuntimeError(f"{self.path} was built without CUDA")
        dec = None if decay is None else np.ascontiguousarray(np.atleast_1d(decay), dtype=np.float32)
        return int(self.lib.hla_capi_cuda_workspace_size(
            VARIANT_CODES[variant], B, T, H, d, dv, int(normalize), 1e-6, ridge,
            None if dec is None else _ptr(dec), 0 if dec is None else dec.size, DTYPE_CODES[dtype_name]))

    def prefill_aot(self, variant, B, T, H, d, dv, normalize=False, ridge=0.0, dtype_name="float32"):
        """True when forward_cuda (aot=True) runs the AOT prefill on the current device."""
        if not self.has_cuda:
            return False
        return bool(self.lib.hla_capi_cuda_prefill_aot(VARIANT_CODES[variant], B, T, H, d, dv, int(normalize),
                                                           1e-6, ridge, None, 0, DTYPE_CODES[dtype_name]))

    # -- forward ---------------------------------------------------------------------------
    def forward_cpu(self, q, k, v, state, *, variant="hla2", decay=None, normalize=False,
                    eps=1e-6, ridge=0.0, dtype_name=None, num_threads=0, state_out=None,
                    o=None):
        """Returns (o, state_out). state_out may be `state` itself (in place)."""
        dtype_name = dtype_name or str(q.dtype)
        if dtype_name not in _NUMPY_DTYPES:
            raise TypeError(f"dtype_name must be one of {sorted(_NUMPY_DTYPES)}, got {dtype_name!r}")
        want = _NUMPY_DTYPES[dtype_name]
        if np.dtype(q.dtype) != want:
            raise TypeError(f"'q' has dtype {q.dtype}, expected {want} for dtype_name={dtype_name!r}")
        dec = None if decay is None else np.ascontiguousarray(np.atleast_1d(decay), dtype=np.float32)
        B, T, H, d, dv = _check_io(self, q, k, v, state, o, state_out, variant, normalize, eps, ridge, dec,
                                   dtype_of=lambda a: np.dtype(a.dtype), float32=np.dtype(np.float32),
                                   contiguous=lambda a: isinstance(a, np.ndarray) and a.flags.c_contiguous)
        if o is None:
            o = np.empty((B, T, H, dv), dtype=q.dtype)
        if state_out is None:
            state_out = np.empty_like(state)
        rc = self.lib.hla_capi_forward_cpu(
            VARIANT_CODES[variant], B, T, H, d, dv, int(normalize), eps, ridge,
            None if dec is None else _ptr(dec), 0 if dec is None else dec.size,
            DTYPE_CODES[dtype_name], _ptr(q), _ptr(k), _ptr(v), _ptr(state), _ptr(o),
            _ptr(state_out), num_threads)
        if rc != 0:
            msg = self.validate(variant, B, T, H, d, dv, normalize, eps, ridge, dec)
            raise ValueError(f"hla_capi_forward_cpu returned {rc}: {msg}")
        return o, state_out

    def forward_cuda(self, q, k, v, state, *, variant="hla2", decay=None, normalize=False,
                     eps=1e-6, ridge=0.0, state_out=None, o=None, stream=None, aot=True, workspace=None):
        """torch CUDA tensors in/out (contiguous). Launches on `stream` (default: torch's
        current stream). Returns (o, state_out); raises RuntimeError with the CUDA code.
        aot=False passes no workspace, which makes a prefill (T > 1) take the token-serial
        kernel. `workspace`: a CUDA uint8 tensor of at least cuda_workspace_size bytes to reuse
        (CUDA-graph capture); None allocates one per call."""
        import torch
        if not self.has_cuda:
            raise RuntimeError(f"{self.path} was built without CUDA")
        codes = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
        if q.dtype not in codes:
            raise TypeError(f"'q' has dtype {q.dtype}, expected torch.float32, float16 or bfloat16")
        dec = None if decay is None else np.ascontiguousarray(np.atleast_1d(decay), dtype=np.float32)
        for name, a in (("q", q), ("k", k), ("v", v), ("state", state), ("o", o), ("state_out", state_out)):
            if a is not None and (not a.is_cuda or a.device != q.device):
                raise ValueError(f"'{name}' must be a CUDA tensor on {q.device}, got {a.device}")
        B, T, H, d, dv = _check_io(self, q, k, v, state, o, state_out, variant, normalize, eps, ridge, dec,
                                   dtype_of=lambda a: a.dtype, float32=torch.float32,
                                   contiguous=lambda a: a.is_contiguous())
        if o is None:
            o = torch.empty((B, T, H, dv), dtype=q.dtype, device=q.device)
        if state_out is None:
            state_out = torch.empty_like(state)
        args = (VARIANT_CODES[variant], B, T, H, d, dv, int(normalize), eps, ridge,
                None if dec is None else _ptr(dec), 0 if dec is None else dec.size, codes[q.dtype])
        ws_bytes = int(self.lib.hla_capi_cuda_workspace_size(*args))
        if workspace is not None:
            nbytes = workspace.numel() * workspace.element_size()
            if not workspace.is_cuda or workspace.device != q.device or not workspace.is_contiguous() \
                    or nbytes < ws_bytes:
                raise ValueError(f"'workspace' must be a contiguous CUDA tensor on {q.device} of >= {ws_bytes} "
                                 f"bytes, got {nbytes} bytes on {workspace.device}")
            ws = workspace
        else:
            ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=q.device)
        ws_ptr = _ptr(ws.data_ptr()) if aot else None
        if stream is None:
            stream = torch.cuda.current_stream(q.device).cuda_stream
        rc = self.lib.hla_capi_forward_cuda(
            *args, _ptr(q.data_ptr()), _ptr(k.data_ptr()), _ptr(v.data_ptr()),
            _ptr(state.data_ptr()), _ptr(o.data_ptr()), _ptr(state_out.data_ptr()),
            ws_ptr, ctypes.c_void_p(int(stream)))
        if rc != 0:
            raise RuntimeError(f"hla_capi_forward_cuda returned {rc}: {self.lib.hla_capi_last_error().decode()}")
        return o, state_out


def load(path: Optional[os.PathLike] = None, cuda: bool = False) -> Kernels:
    """Load the capi library at `path`, building it first when no path is given."""
    return Kernels(path if path is not None else build(cuda=cuda))
