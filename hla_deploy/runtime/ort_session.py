"""Run an exported hla-deploy ONNX model with ONNX Runtime (CPU or CUDA EP) and our custom op.

    sess = OrtHLASession("model.onnx", device="cpu")       # builds/loads libhla_ort_op.so
    logits, state_out = sess.run(input_ids, state)          # stateless, numpy in/out
    sess.reset(batch_size=1)                                # zero state on the device
    logits = sess.prefill(input_ids)                        # [B, T] -> [B, T, V]
    logits = sess.step(token_ids)                           # [B]    -> [B, V]
    ids = sess.generate(prompt_ids, max_new_tokens=32)      # new token ids (batch 1)

Graph interface (exporters): inputs input_ids [B, T] int64, state [L, B, H, N] float32; outputs
logits [B, T, V] float32, state_out [L, B, H, N] float32.

prefill/step keep the recurrent state ON THE DEVICE between calls with IOBinding: two
pre-allocated OrtValues take turns as `state` (input) and `state_out` (output), so no state
bytes cross to the host during decoding. Only input_ids go in and logits come out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .sampling import check_sampling_args, make_rng, sample_next

from hla_deploy import OP_CONTRACT_VERSION

#: Op contract versions this runtime implements (docs/OP_CONTRACT.md).
KNOWN_CONTRACT_VERSIONS = (str(OP_CONTRACT_VERSION),)

_INPUTS = ("input_ids", "state")
_OUTPUTS = ("logits", "state_out")


class OrtHLASession:
    """ONNX Runtime session over an exported hla-deploy model (see module docstring)."""

    def __init__(self, onnx_path: Union[str, Path], device: str = "cpu",
                 library: Optional[Union[str, Path]] = None, *, device_id: int = 0,
                 intra_op_num_threads: Optional[int] = None):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.device_id = int(device_id)

        if library is None:
            from hla_deploy.plugins import ort_library_path
            library = ort_library_path(build=True)
        self.library = Path(library)
        if not self.library.is_file():
            raise FileNotFoundError(f"HLARecurrentStep custom-op library not found: {self.library} "
                                    f"(build it with `hla-deploy build-plugins`, or pass library=None "
                                    f"to build it automatically)")

        so = ort.SessionOptions()
        if intra_op_num_threads is not None:
            so.intra_op_num_threads = int(intra_op_num_threads)
        try:
            so.register_custom_ops_library(str(self.library))
        except Exception as e:  # onnxruntime raises its own exception types
            raise RuntimeError(f"could not load the custom-op library {self.library}: {e}") from e

        if device == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise RuntimeError(
                    f"device='cuda' needs onnxruntime's CUDAExecutionProvider, but this onnxruntime "
                    f"({ort.__version__}) offers only {available}; install onnxruntime-gpu, or use device='cpu'")
            providers = [("CUDAExecutionProvider", {"device_id": self.device_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self._sess = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:
            raise RuntimeError(f"ONNX Runtime could not load {self.path}: {e}") from e
        if device == "cuda" and "CUDAExecutionProvider" not in self._sess.get_providers():
            raise RuntimeError(f"the CUDA execution provider could not be initialised for {self.path} "
                               f"(session providers: {self._sess.get_providers()})")
        self._ort = ort
        self._ort_device = "cuda" if device == "cuda" else "cpu"

        self.metadata: Dict[str, str] = dict(self._sess.get_modelmeta().custom_metadata_map)
        self._check_metadata()
        self.config: dict = json.loads(self.metadata["hla_deploy.config"])
        self._check_interface()
        self._states: Optional[List] = None
        self._cur = 0
        self.batch_size: Optional[int] = None

    # ---- model description -------------------------------------------------------------------

    def _check_metadata(self) -> None:
        version = self.metadata.get("hla_deploy.op_contract_version")
        if version is None:
            raise ValueError(f"{self.path} has no 'hla_deploy.op_contract_version' metadata: not an "
                             f"hla-deploy export (re-export it with `hla-deploy export`)")
        if version not in KNOWN_CONTRACT_VERSIONS:
            raise ValueError(f"{self.path} uses op contract version {version}; this runtime knows "
                             f"{', '.join(KNOWN_CONTRACT_VERSIONS)} (upgrade hla-deploy or re-export)")
        if "hla_deploy.config" not in self.metadata:
            raise ValueError(f"{self.path} has no 'hla_deploy.config' metadata (model configuration)")

    def _check_interface(self) -> None:
        ins = {i.name: i for i in self._sess.get_inputs()}
        outs = {o.name: o for o in self._sess.get_outputs()}
        if set(ins) != set(_INPUTS) or set(outs) != set(_OUTPUTS):
            raise ValueError(f"{self.path}: expected inputs {_INPUTS} and outputs {_OUTPUTS}, "
                             f"got inputs {tuple(ins)} and outputs {tuple(outs)}")
        cfg = self.config
        shape = ins["state"].shape  # [L, B, H, N]
        static = [s if isinstance(s, int) and s > 0 else None for s in shape]
        self.n_layers = static[0] or int(cfg["n_layers"])
        self.n_heads = static[2] or int(cfg["n_heads"])
        if static[3] is not None:
            self.state_size = static[3]
        else:
            from hla_deploy.ops import state_size
            self.state_size = int(state_size(cfg["variant"], cfg["head_dim"], cfg["value_dim"],
                                             bool(cfg.get("normalize", False)), float(cfg.get("ridge", 0.0))))
        lshape = outs["logits"].shape
        self.vocab_size = lshape[2] if isinstance(lshape[2], int) and lshape[2] > 0 else int(cfg["vocab_size"])

    @property
    def providers(self) -> List[str]:
        return self._sess.get_providers()

    def state_shape(self, batch_size: int) -> Tuple[int, int, int, int]:
        """[L, B, H, N]."""
        return (self.n_layers, int(batch_size), self.n_heads, self.state_size)

    # ---- input checks --------------------------------------------------------------------------

    def _check_ids(self, input_ids, name: str = "input_ids", rank: int = 2) -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
        if ids.ndim != rank:
            want = "[B, T]" if rank == 2 else "[B]"
            raise ValueError(f"{name} must have rank {rank} {want}, got shape {ids.shape}")
        if ids.size == 0:
            raise ValueError(f"{name} is empty (shape {ids.shape}); need B >= 1 and T >= 1")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"{name} has ids outside [0, {self.vocab_size}): min {ids.min()}, max {ids.max()}")
        return np.ascontiguousarray(ids, dtype=np.int64)

    def _check_state(self, state, batch_size: int) -> np.ndarray:
        st = np.asarray(state)
        want = self.state_shape(batch_size)
        if st.dtype != np.float32:
            raise TypeError(f"state must be float32 (the recurrent state is float32 always), got {st.dtype}")
        if st.shape != want:
            raise ValueError(f"state has shape {st.shape}, expected [L, B, H, N] = {list(want)}")
        return np.ascontiguousarray(st)

    # ---- stateless -------------------------------------------------------------------------------

    def init_state(self, batch_size: int = 1) -> np.ndarray:
        """Zero state [L, B, H, N] float32 (numpy, host)."""
        return np.zeros(self.state_shape(batch_size), dtype=np.float32)

    def run(self, input_ids, state=None) -> Tuple[np.ndarray, np.ndarray]:
        """Stateless call: input_ids [B, T] int, state [L, B, H, N] float32 (None: zeros)
        -> (logits [B, T, V] float32, state_out [L, B, H, N] float32)."""
        ids = self._check_ids(input_ids)
        st = self.init_state(ids.shape[0]) if state is None else self._check_state(state, ids.shape[0])
        logits, state_out = self._sess.run(list(_OUTPUTS), {"input_ids": ids, "state": st})
        return logits, state_out

    # ---- stateful, state kept on the device --------------------------------------------------------

    def reset(self, batch_size: int = 1) -> None:
        """Start fresh sequences: zero state for `batch_size` rows, allocated on the device."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        zeros = self.init_state(batch_size)
        ov = self._ort.OrtValue.ortvalue_from_numpy
        # Two buffers: one is the state read by the next call, the other receives state_out.
        self._states = [ov(zeros, self._ort_device, self.device_id), ov(zeros, self._ort_device, self.device_id)]
        self._cur = 0
        self.batch_size = int(batch_size)

    def get_state(self) -> np.ndarray:
        """Copy of the current device state [L, B, H, N] to the host (for inspection/tests)."""
        if self._states is None:
            raise RuntimeError("no state yet: call reset(batch_size) or prefill() first")
        return self._states[self._cur].numpy().copy()

    def _bound_call(self, ids: np.ndarray) -> np.ndarray:
        if self._states is None:
            self.reset(ids.shape[0])
        elif ids.shape[0] != self.batch_size:
            raise ValueError(f"input has batch size {ids.shape[0]} but the session state holds "
                             f"{self.batch_size} rows; call reset({ids.shape[0]}) first")
        io = self._sess.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_ortvalue_input("state", self._states[self._cur])
        io.bind_output("logits", "cpu")
        io.bind_ortvalue_output("state_out", self._states[1 - self._cur])
        self._sess.run_with_iobinding(io)
        logits = io.get_outputs()[0].numpy()
        self._cur = 1 - self._cur  # state_out becomes the next state
        return logits

    def prefill(self, input_ids) -> np.ndarray:
        """Run [B, T] tokens from the current state (fresh after reset); returns logits [B, T, V]."""
        return self._bound_call(self._check_ids(input_ids))

    def step(self, token_ids) -> np.ndarray:
        """Run one token per row [B]; returns logits [B, V]."""
        ids = self._check_ids(token_ids, name="token_ids", rank=1)
        return self._bound_call(ids[:, None])[:, 0, :]

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: Optional[int] = None, seed: Optional[int] = None) -> List[int]:
        """Batch-1 generation: one prefill of the prompt, then one step per new token.
        Returns ONLY the new token ids (like hla_deploy.models.generate)."""
        prompt = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
        if not prompt:
            raise ValueError("generate: prompt_ids must hold at least one token")
        if max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
        check_sampling_args(temperature, top_k)
        rng = make_rng(seed)
        out: List[int] = []
        if max_new_tokens == 0:
            return out
        self.reset(1)
        logits = self.prefill(np.asarray([prompt], dtype=np.int64))[:, -1, :]  # [1, V]
        for i in range(max_new_tokens):
            nxt = int(sample_next(logits[0], temperature, top_k, rng))
            out.append(nxt)
            if i + 1 == max_new_tokens:
                break
            logits = self.step(np.asarray([nxt], dtype=np.int64))
        return out
