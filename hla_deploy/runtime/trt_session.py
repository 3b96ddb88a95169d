"""Run a TensorRT engine built from an hla-deploy export (exporters/tensorrt/engine.py).

    sess = TrtHLASession("model.plan")                       # loads libhla_trt_plugin.so
    logits, state_out = sess.run(input_ids, state)          # stateless, numpy in/out
    sess.reset(batch_size=1)                                # zero state on the device
    logits = sess.prefill(input_ids)                        # [B, T] -> [B, T, V]
    logits = sess.step(token_ids)                           # [B]    -> [B, V]
    ids = sess.generate(prompt_ids, max_new_tokens=32)      # new token ids (batch 1)

The same interface as OrtHLASession. Engine I/O: input_ids [B, T] int64 (or int32), state
[L, B, H, N] float32 -> logits [B, T, V] float32, state_out [L, B, H, N] float32.

Device buffers are torch CUDA tensors handed to TensorRT by address (set_tensor_address) and run
with execute_async_v3 on a torch CUDA stream. prefill/step keep the state ON THE DEVICE: two
state tensors take turns as `state` (input) and `state_out` (output) — TensorRT does not allow an
output to alias an input, so the state cannot be updated in place. Inputs longer than the
engine's profile (max T) are fed in chunks, carrying the state (exact for a recurrence).

Needs TensorRT's Python package, torch with CUDA and a GPU; each missing piece raises a clear
error naming it. Input checks, state bookkeeping and generate (sampling with
hla_deploy.runtime.sampling) are hla_deploy.runtime.session_base, shared with OrtHLASession.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from .session_base import INPUTS as _INPUTS
from .session_base import OUTPUTS as _OUTPUTS
from .session_base import HLASessionBase
from .trt_plugin import TensorRTUnavailableError, load_plugin_library  # noqa: F401  (re-exported)


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailableError(
            f"TrtHLASession needs TensorRT's Python package (`import tensorrt` failed: {e}); install "
            f"TensorRT >= 10.3 (JetPack 6.1+ ships it; on x86 `pip install tensorrt`), or use "
            f"OrtHLASession") from e
    return trt


def _import_torch_cuda():
    try:
        import torch
    except ImportError as e:
        raise TensorRTUnavailableError(f"TrtHLASession uses torch CUDA tensors as buffers: {e}") from e
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            f"TrtHLASession needs a CUDA GPU and torch built with CUDA (torch {torch.__version__}: "
            f"torch.cuda.is_available() is False)")
    return torch


class TrtHLASession(HLASessionBase):
    """TensorRT session over an hla-deploy engine (see module docstring).

    Input checks, reset/prefill/step bookkeeping and generate come from HLASessionBase."""

    def __init__(self, plan_path: Union[str, Path], plugin_path: Optional[Union[str, Path]] = None, *,
                 device_id: int = 0):
        self.path = Path(plan_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {self.path} (build one with "
                                    f"`hla-deploy build-engine MODEL.onnx -o {self.path.name}`)")
        trt = _import_tensorrt()
        torch = _import_torch_cuda()
        self._trt, self._torch = trt, torch
        self.device = torch.device("cuda", int(device_id))

        if plugin_path is None:
            from hla_deploy.native import trt_plugin_path
            plugin_path = trt_plugin_path(build=True)
        self.plugin_path = Path(plugin_path)
        if not self.plugin_path.is_file():
            raise FileNotFoundError(f"TensorRT plugin library not found: {self.plugin_path}")

        with torch.cuda.device(self.device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._plugin_handle = load_plugin_library(self._runtime.get_plugin_registry(), self.plugin_path)
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not deserialize {self.path} (built with another TensorRT "
                                   f"version or for another GPU? rebuild it on this machine)")
            self._engine = engine
            self._context = engine.create_execution_context()
            if self._context is None:
                raise RuntimeError(f"TensorRT could not create an execution context for {self.path}")
            self._stream = torch.cuda.Stream(device=self.device)
        self._describe()
        super().__init__()

    # ---- engine description ------------------------------------------------------------------------

    def _describe(self) -> None:
        trt, torch, eng = self._trt, self._torch, self._engine
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        ins = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if set(ins) != set(_INPUTS) or set(outs) != set(_OUTPUTS):
            raise ValueError(f"{self.path}: expected inputs {_INPUTS} and outputs {_OUTPUTS} (an hla-deploy "
                             f"engine), got inputs {tuple(ins)} and outputs {tuple(outs)}")
        dtypes = {trt.DataType.INT64: torch.int64, trt.DataType.INT32: torch.int32,
                  trt.DataType.FLOAT: torch.float32}
        ids_t = eng.get_tensor_dtype("input_ids")
        if ids_t not in (trt.DataType.INT64, trt.DataType.INT32):
            raise ValueError(f"{self.path}: input_ids is {ids_t}, expected int64 or int32")
        self._ids_dtype = dtypes[ids_t]
        for name in ("state", "state_out", "logits"):
            if eng.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise ValueError(f"{self.path}: {name} is {eng.get_tensor_dtype(name)}, expected float32")
        s = tuple(eng.get_tensor_shape("state"))        # (L, -1, H, N)
        lg = tuple(eng.get_tensor_shape("logits"))      # (-1, -1, V)
        if len(s) != 4 or min(s[0], s[2], s[3]) < 1 or len(lg) != 3 or lg[2] < 1:
            raise ValueError(f"{self.path}: state {s} / logits {lg} are not [L, B, H, N] / [B, T, V] "
                             f"with static L, H, N, V")
        self.n_layers, self.n_heads, self.state_size, self.vocab_size = int(s[0]), int(s[2]), int(s[3]), int(lg[2])
        mn, _, mx = (tuple(x) for x in eng.get_tensor_profile_shape("input_ids", 0))
        if mn[0] > 1 or mn[1] > 1:
            raise ValueError(f"{self.path}: the profile's smallest input_ids is {mn}; it must allow [1, 1]")
        self.max_batch, self.max_seq = int(mx[0]), int(mx[1])

    # ---- batch limits (the engine's optimisation profile) -----------------------------------------

    def _check_batch_size(self, name: str, batch_size: int) -> None:
        if batch_size > self.max_batch:
            raise ValueError(f"{name} has batch size {batch_size}, but the engine was built for at most "
                             f"{self.max_batch} (rebuild with --max-batch)")

    def _check_reset_batch_size(self, batch_size: int) -> None:
        if int(batch_size) < 1 or int(batch_size) > self.max_batch:
            raise ValueError(f"batch_size must be in [1, {self.max_batch}] (the engine's profile), got {batch_size}")

    # ---- execution ---------------------------------------------------------------------------------

    def _execute(self, ids, state_in, state_out, logits) -> None:
        """One engine call on the session stream: ids [B, T] (device), state_in -> state_out, logits."""
        ctx = self._context
        B, T = int(ids.shape[0]), int(ids.shape[1])
        if not ctx.set_input_shape("input_ids", (B, T)) or not ctx.set_input_shape("state", self.state_shape(B)):
            raise RuntimeError(f"TensorRT rejected input shapes input_ids {(B, T)}, state {self.state_shape(B)}")
        for name, t in (("input_ids", ids), ("state", state_in), ("state_out", state_out), ("logits", logits)):
            if not ctx.set_tensor_address(name, t.data_ptr()):
                raise RuntimeError(f"TensorRT rejected the address of {name}")
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    def _forward(self, ids: np.ndarray, states: list, cur: int) -> Tuple[np.ndarray, int]:
        """Runs ids [B, T] from states[cur] in chunks of max_seq; returns (logits [B, T, V], new cur)."""
        torch = self._torch
        B, T = ids.shape
        out = np.empty((B, T, self.vocab_size), dtype=np.float32)
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            d_ids = torch.from_numpy(ids).to(self.device, self._ids_dtype, non_blocking=False)
            for t0 in range(0, T, self.max_seq):
                t1 = min(T, t0 + self.max_seq)
                chunk = d_ids[:, t0:t1].contiguous()
                logits = torch.empty((B, t1 - t0, self.vocab_size), dtype=torch.float32, device=self.device)
                self._execute(chunk, states[cur], states[1 - cur], logits)
                cur = 1 - cur  # state_out becomes the next chunk's state
                out[:, t0:t1] = logits.cpu().numpy()  # synchronises with the stream
        return out, cur

    def _zeros(self, batch_size: int):
        # Filled on the session stream, which every engine call uses (no cross-stream race).
        torch = self._torch
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            return torch.zeros(self.state_shape(batch_size), dtype=torch.float32, device=self.device)

    # ---- backend hooks (HLASessionBase) ----------------------------------------------------------

    def _run_stateless(self, ids: np.ndarray, state: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            states = [torch.from_numpy(state).to(self.device), self._zeros(ids.shape[0])]
        logits, cur = self._forward(ids, states, 0)
        with torch.cuda.stream(self._stream):
            return logits, states[cur].cpu().numpy()

    def _new_states(self, batch_size: int) -> list:
        return [self._zeros(batch_size), self._zeros(batch_size)]

    def _state_to_host(self, buf) -> np.ndarray:
        with self._torch.cuda.stream(self._stream):
            return buf.cpu().numpy().copy()
