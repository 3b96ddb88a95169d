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

TF32 (device="cuda" only): ONNX Runtime's CUDA EP runs MatMul/Gemm in TF32 (10-bit mantissa) on
Ampere and newer unless its provider option ``use_tf32`` is "0". On the shipped demo model that
moves the logits by 9.1e-4 relative RMS from the CPU EP's (5.7e-7 with TF32 off, H200,
onnxruntime-gpu 1.31.1). Exactness against the trained model is what this toolkit promises, so
``tf32=False`` is the default: the session passes ``use_tf32="0"``. ``tf32=True`` passes "1" for
the faster, less exact matmuls (opt in: ``hla-deploy generate --device cuda --tf32``). The
HLARecurrentStep op itself never uses TF32 (float32 FMA kernels, plugins/common).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from hla_deploy import OP_CONTRACT_VERSION
from hla_deploy.extras import MissingDependencyError

from .session_base import INPUTS as _INPUTS
from .session_base import OUTPUTS as _OUTPUTS
from .session_base import HLASessionBase

#: Op contract versions this runtime implements (docs/OP_CONTRACT.md).
KNOWN_CONTRACT_VERSIONS = (str(OP_CONTRACT_VERSION),)


def cuda_provider_options(device_id: int = 0, tf32: bool = False) -> Dict[str, str]:
    """CUDAExecutionProvider options of an OrtHLASession: the device and ``use_tf32`` "0"/"1"
    (see the module docstring for why TF32 is off unless asked for)."""
    return {"device_id": str(int(device_id)), "use_tf32": "1" if tf32 else "0"}


class CudaProviderMissingError(RuntimeError, MissingDependencyError):
    """device="cuda" with an onnxruntime that has no CUDAExecutionProvider (onnxruntime-gpu is the
    optional dependency: exit status 3 in the CLI)."""


class OrtHLASession(HLASessionBase):
    """ONNX Runtime session over an exported hla-deploy model (see module docstring).

    device "cpu" | "cuda"; device_id the CUDA device; tf32 (cuda only, default False) lets the
    CUDA EP run MatMul in TF32. Input checks, reset/prefill/step bookkeeping and generate come
    from HLASessionBase."""

    def __init__(self, onnx_path: Union[str, Path], device: str = "cpu",
                 library: Optional[Union[str, Path]] = None, *, device_id: int = 0,
                 intra_op_num_threads: Optional[int] = None, tf32: bool = False):
        from hla_deploy.ort_install import require_onnxruntime
        ort = require_onnxruntime()  # an ImportError naming the extra ([cpu] / [gpu]) when missing

        self.path = Path(onnx_path)
        if self.path.is_dir():
            raise IsADirectoryError(f"ONNX model {self.path} is a directory; expected an exported .onnx file")
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if not isinstance(tf32, bool):
            raise TypeError(f"tf32 must be True or False, got {tf32!r}")
        if tf32 and device != "cuda":
            raise ValueError("tf32=True applies only to device='cuda' (the CUDA EP's MatMul); "
                             f"got device={device!r}")
        self.device = device
        self.device_id = int(device_id)
        self.tf32 = tf32

        if library is None:
            from hla_deploy.native import ort_library_path
            library = ort_library_path(build=True)
        # absolute: a bare file name would make the loader (dlopen) search the system library path
        # instead of the current directory, and possibly load another library of the same name
        self.library = Path(library).absolute()
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
                raise CudaProviderMissingError(
                    f"device='cuda' needs onnxruntime's CUDAExecutionProvider, but this onnxruntime "
                    f"({ort.__version__}) offers only {available}; install onnxruntime-gpu instead "
                    f"(`pip uninstall -y onnxruntime && pip install 'hla-deploy[gpu]'`), or use device='cpu'")
            providers = [("CUDAExecutionProvider", cuda_provider_options(self.device_id, tf32)),
                         "CPUExecutionProvider"]
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
        super().__init__()

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
            from hla_deploy.state_layout import state_size  # torch-free (hla_deploy.ops imports torch)
            self.state_size = int(state_size(cfg["variant"], cfg["head_dim"], cfg["value_dim"],
                                             bool(cfg.get("normalize", False)), float(cfg.get("ridge", 0.0))))
        lshape = outs["logits"].shape
        self.vocab_size = lshape[2] if isinstance(lshape[2], int) and lshape[2] > 0 else int(cfg["vocab_size"])

    @property
    def providers(self) -> List[str]:
        return self._sess.get_providers()

    # ---- backend hooks (HLASessionBase) ----------------------------------------------------------

    def _run_stateless(self, ids: np.ndarray, state: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        logits, state_out = self._sess.run(list(_OUTPUTS), {"input_ids": ids, "state": state})
        return logits, state_out

    def _new_states(self, batch_size: int) -> list:
        zeros = self.init_state(batch_size)
        ov = self._ort.OrtValue.ortvalue_from_numpy
        return [ov(zeros, self._ort_device, self.device_id), ov(zeros, self._ort_device, self.device_id)]

    def _state_to_host(self, buf) -> np.ndarray:
        return buf.numpy().copy()

    def _forward(self, ids: np.ndarray, states: list, cur: int) -> Tuple[np.ndarray, int]:
        """One IOBinding call: ids [B, T] from states[cur] into states[1 - cur]; (logits [B, T, V], 1 - cur)."""
        io = self._sess.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_ortvalue_input("state", states[cur])
        io.bind_output("logits", "cpu")
        io.bind_ortvalue_output("state_out", states[1 - cur])
        self._sess.run_with_iobinding(io)
        logits = io.get_outputs()[0].numpy()
        return logits, 1 - cur
