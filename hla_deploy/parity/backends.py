"""One small adapter per backend, all returning the same thing for a batch of prompts.

Each adapter's ``run(prompt_ids [B, T] int64, feed_tokens [B, N] int64) -> RunOutput``:

- runs the prefill on ``prompt_ids`` from a zero state -> ``prefill_logits`` [B, T, V] float32;
- then N decode steps, step i feeding ``feed_tokens[:, i]`` (the reference's greedy tokens,
  so positions stay aligned whatever the backend predicts) with the previous step's state fed
  back -> ``decode_logits`` [B, N, V] float32;
- and returns the state after the last step -> ``final_state`` [L, B, H, N] float32.

``prepare(ctx)`` raises :class:`BackendSkipped` (with the reason) when the backend cannot run
on this machine (no CUDA; onnxruntime or tensorrt not installed); any other exception is a backend
error and counts as a failure.

Backends: ``torch`` (the model, attn_backend="recurrent"), ``triton`` (the model on CUDA,
attn_backend="triton"), ``ort-cpu`` / ``ort-cuda`` (custom-op ONNX in
``hla_deploy.runtime.OrtHLASession``), ``onnx-standard`` (standard-op ONNX in stock
onnxruntime, no custom library), ``trt`` (``hla_deploy.runtime.TrtHLASession``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .backend_names import BACKEND_NAMES

TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class BackendSkipped(Exception):
    """The backend cannot run on this machine; ``str(exc)`` is the reason."""


@dataclass
class RunOutput:
    prefill_logits: np.ndarray  # [B, T, V] float32
    decode_logits: np.ndarray   # [B, N, V] float32
    final_state: np.ndarray     # [L, B, H, N] float32

    def logits(self) -> np.ndarray:
        """Prefill and decode logits side by side: [B, T + N, V]."""
        return np.concatenate([self.prefill_logits, self.decode_logits], axis=1)


# step(ids [B, t] int64 numpy, state native) -> (logits [B, t, V] numpy float32, state native)
StepFn = Callable[[np.ndarray, object], Tuple[np.ndarray, object]]


def teacher_forced(step: StepFn, state0, prompt_ids: np.ndarray, feed_tokens: np.ndarray,
                   state_to_numpy: Callable[[object], np.ndarray]) -> RunOutput:
    """Prefill then decode ``feed_tokens`` one step at a time, feeding the state back."""
    logits, state = step(prompt_ids, state0)
    prefill = np.asarray(logits, dtype=np.float32)
    B, V = prefill.shape[0], prefill.shape[-1]
    decode = []
    for i in range(feed_tokens.shape[1]):
        lg, state = step(np.ascontiguousarray(feed_tokens[:, i:i + 1]), state)
        lg = np.asarray(lg, dtype=np.float32)
        if lg.shape != (B, 1, V):
            raise ValueError(f"decode step {i}: logits have shape {lg.shape}, expected {(B, 1, V)}")
        decode.append(lg[:, 0])
    dec = np.stack(decode, axis=1) if decode else np.zeros((B, 0, V), np.float32)
    return RunOutput(prefill, dec, np.asarray(state_to_numpy(state), dtype=np.float32))


def greedy_reference(step: StepFn, state0, prompt_ids: np.ndarray, decode_steps: int,
                     state_to_numpy: Callable[[object], np.ndarray]) -> Tuple[RunOutput, np.ndarray]:
    """The reference run: prefill, then ``decode_steps`` greedy steps (argmax fed back).

    Returns the run and the tokens it fed [B, N] (the teacher-forcing tokens for the backends).
    """
    logits, state = step(prompt_ids, state0)
    prefill = np.asarray(logits, dtype=np.float32)
    B, V = prefill.shape[0], prefill.shape[-1]
    last = prefill[:, -1]
    feed, decode = [], []
    for _ in range(decode_steps):
        tok = np.argmax(last, axis=-1).astype(np.int64)  # [B]
        feed.append(tok)
        lg, state = step(tok[:, None], state)
        last = np.asarray(lg, dtype=np.float32)[:, 0]
        decode.append(last)
    dec = np.stack(decode, axis=1) if decode else np.zeros((B, 0, V), np.float32)
    fed = np.stack(feed, axis=1) if feed else np.zeros((B, 0), np.int64)
    return RunOutput(prefill, dec, np.asarray(state_to_numpy(state), dtype=np.float32)), fed


class ParityContext:
    """What the adapters share: the checkpoint, dtype, ONNX artifacts, a scratch dir."""

    def __init__(self, checkpoint: Optional[Path], config, dtype: str, workdir: Path,
                 onnx_given: Optional[Dict[str, Path]] = None, library: Optional[Path] = None,
                 max_batch: int = 1, max_seq: int = 2048):
        self.checkpoint = None if checkpoint is None else Path(checkpoint)  # None: exported graphs only
        self.config = config
        self.dtype = dtype
        self.workdir = Path(workdir)
        self.onnx_given = dict(onnx_given or {})
        self.library = library
        self.max_batch = max_batch
        self.max_seq = max_seq
        self._exported: Dict[Tuple[str, str], Path] = {}
        self._export_errors: Dict[Tuple[str, str], BaseException] = {}

    # -- model ---------------------------------------------------------------------------
    def load_model(self):
        if self.checkpoint is None:
            raise BackendSkipped("needs the checkpoint (this run compares exported graphs only)")
        from hla_deploy.models import HLALanguageModel
        model = HLALanguageModel.load(self.checkpoint, map_location="cpu")
        model.eval()
        return model

    def zero_state(self, batch: int) -> np.ndarray:
        c = self.config
        return np.zeros((c.n_layers, batch, c.n_heads, c.state_size), dtype=np.float32)

    # -- ONNX artifacts ------------------------------------------------------------------
    def onnx_path(self, op: str) -> Path:
        """The ONNX graph for ``op`` ("custom" or "standard"): the one given, else exported."""
        if op in self.onnx_given:
            return self.onnx_given[op]
        if self.onnx_given:
            given = ", ".join(f"{k}-op graph {p}" for k, p in self.onnx_given.items())
            raise BackendSkipped(f"needs a {op}-op ONNX graph; --onnx gave only the {given}")
        if self.dtype not in ("fp32", "fp16"):
            raise BackendSkipped(f"ONNX export supports fp32 and fp16, not {self.dtype}")
        key = (op, self.dtype)
        if key in self._export_errors:
            raise self._export_errors[key]
        if key not in self._exported:
            out = self.workdir / f"model_{op}_{self.dtype}.onnx"
            try:
                from hla_deploy.exporters import export_onnx
                self._exported[key] = Path(export_onnx(self.checkpoint, None, out, op=op, dtype=self.dtype))
            except Exception as exc:  # a real export failure: an error, not a skip
                err = RuntimeError(f"export_onnx(op={op!r}, dtype={self.dtype!r}) failed: "
                                   f"{type(exc).__name__}: {exc}")
                self._export_errors[key] = err
                raise err from exc
        return self._exported[key]

    def ort_library(self) -> Path:
        if self.library is not None:
            return Path(self.library)
        from hla_deploy.native import ort_library_path
        self.library = Path(ort_library_path(build=True))
        return self.library


def _import_or_skip(name: str):
    """Import a third-party runtime (onnxruntime, tensorrt); BackendSkipped with the reason when it
    is not installed. (A failing import of hla-deploy's own modules is an error, not a skip.)"""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendSkipped(f"{name} not importable ({exc})") from None


def _cuda_available() -> Tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:  # torch is the [export] extra: parity between exported graphs runs without it
        return False, f"torch not importable ({exc})"
    if not torch.cuda.is_available():
        return False, "no CUDA device (torch.cuda.is_available() is False)"
    return True, ""


def _triton_status(config) -> Tuple[bool, str]:
    ok, why = _cuda_available()
    if not ok:
        return False, why
    try:
        from hla_deploy.ops import triton as hla_triton
    except ImportError as exc:
        return False, f"hla_deploy.ops.triton not importable ({exc})"
    if not hla_triton.is_available():
        return False, "Triton kernels not available (hla_deploy.ops.triton.is_available() is False)"
    if not hla_triton.supports(config.variant, config.normalize, config.ridge,
                               head_dim=config.head_dim, value_dim=config.value_dim):
        return False, (f"Triton kernels do not support variant={config.variant}, "
                       f"normalize={config.normalize}, ridge={config.ridge}, head_dim={config.head_dim}, "
                       f"value_dim={config.value_dim}")
    return True, ""


class _TorchModelRunner:
    """The torch model as a step function (state stays a torch tensor between steps)."""

    def __init__(self, model, device: str, attn_backend: str, dtype: str):
        import torch
        self.torch = torch
        self.device = device
        model.attn_backend = attn_backend
        model = model.to(device=device, dtype=getattr(torch, TORCH_DTYPES[dtype]))
        model.eval()
        self.model = model

    def step(self, ids: np.ndarray, state):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)
        if self.device == "cuda":
            # float32 means float32: no TF32 in torch's own matmuls (projections, MLP, head)
            prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                with torch.no_grad():
                    logits, new_state = self.model(x, state)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = prev
        else:
            with torch.no_grad():
                logits, new_state = self.model(x, state)
        return logits.float().cpu().numpy(), new_state

    def init_state(self, batch: int):
        return self.model.init_state(batch, device=self.device)

    def state_to_numpy(self, state) -> np.ndarray:
        return state.float().cpu().numpy()


class Reference:
    """The reference model, always float32: the torch model with the Triton kernels on a GPU when
    CUDA and Triton are available and support the variant, else the chunk form on the CPU. If
    the Triton reference fails to run, the chunk form on the CPU is used and the failure is said
    in the description (the ``triton`` backend then reports the error itself)."""

    def __init__(self, ctx: ParityContext):
        self.ctx = ctx
        ok, why = _triton_status(ctx.config)
        self._cpu_reason = None if ok else why
        self.runner = None

    def _use_chunk_cpu(self, reason: str) -> None:
        self.form, self.device = "chunk", "cpu"
        self.description = ("the torch model with the chunk form (attn_backend='chunk') on the CPU, "
                            f"float32 (Triton reference not used: {reason})")
        self.runner = _TorchModelRunner(self.ctx.load_model(), "cpu", "chunk", "fp32")

    def _run(self, prompt_ids: np.ndarray, decode_steps: int) -> Tuple[RunOutput, np.ndarray]:
        r = self.runner
        return greedy_reference(r.step, r.init_state(prompt_ids.shape[0]), prompt_ids, decode_steps,
                                r.state_to_numpy)

    def run_batches(self, batches, decode_steps: int):
        """[(prompt_ids [B, T], ...)] -> [(RunOutput, fed tokens [B, N])], one per batch."""
        if self._cpu_reason is None:
            try:
                self.form, self.device = "triton", "cuda"
                self.description = ("the torch model with the Triton kernels (attn_backend='triton') "
                                    "on CUDA, float32")
                self.runner = _TorchModelRunner(self.ctx.load_model(), "cuda", "triton", "fp32")
                return [self._run(ids, decode_steps) for ids in batches]
            except Exception as exc:  # fall back to the CPU chunk form, saying why
                self._cpu_reason = f"it failed: {type(exc).__name__}: {exc}"
        self._use_chunk_cpu(self._cpu_reason)
        return [self._run(ids, decode_steps) for ids in batches]

    def info(self) -> dict:
        return {"form": self.form, "device": self.device, "dtype": "fp32",
                "description": self.description}


class Backend:
    """Base adapter: subclasses set ``name`` and implement ``prepare`` and ``run``."""

    name = "?"
    artifact: Optional[str] = None
    description = ""

    def prepare(self, ctx: ParityContext) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, prompt_ids: np.ndarray, feed_tokens: np.ndarray) -> RunOutput:  # pragma: no cover
        raise NotImplementedError


class _TorchModelBackend(Backend):
    """The torch model (a _TorchModelRunner set by ``prepare``), prefill and decode from a zero state."""

    runner: _TorchModelRunner

    def run(self, prompt_ids, feed_tokens):
        r = self.runner
        return teacher_forced(r.step, r.init_state(prompt_ids.shape[0]), prompt_ids, feed_tokens,
                              r.state_to_numpy)


class TorchBackend(_TorchModelBackend):
    name = "torch"

    def prepare(self, ctx):
        self.runner = _TorchModelRunner(ctx.load_model(), "cpu", "recurrent", ctx.dtype)
        self.description = f"torch model, attn_backend='recurrent', CPU, {ctx.dtype}"


class TritonBackend(_TorchModelBackend):
    name = "triton"

    def prepare(self, ctx):
        ok, why = _triton_status(ctx.config)
        if not ok:
            raise BackendSkipped(why)
        self.runner = _TorchModelRunner(ctx.load_model(), "cuda", "triton", ctx.dtype)
        self.description = f"torch model, attn_backend='triton', CUDA, {ctx.dtype}"


class _NumpyStateBackend(Backend):
    """Backends with a stateless ``run(input_ids, state) -> (logits, state_out)`` in numpy."""

    def _run_fn(self, ids: np.ndarray, state: np.ndarray):  # pragma: no cover - interface
        raise NotImplementedError

    def prepare_common(self, ctx):
        self.ctx = ctx

    def run(self, prompt_ids, feed_tokens):
        def step(ids, state):
            logits, state_out = self._run_fn(np.ascontiguousarray(ids, dtype=np.int64),
                                             np.ascontiguousarray(state, dtype=np.float32))
            return np.asarray(logits, dtype=np.float32), np.asarray(state_out, dtype=np.float32)
        return teacher_forced(step, self.ctx.zero_state(prompt_ids.shape[0]), prompt_ids, feed_tokens,
                              lambda s: s)


class _SessionBackend(_NumpyStateBackend):
    """A runtime session (OrtHLASession / TrtHLASession). When the session exposes
    ``get_state()``, the run goes through its deployed path (``reset`` / ``prefill`` / ``step``,
    the state kept on the device between calls, as ``generate`` does); otherwise through the
    stateless ``run(input_ids, state)`` with the state fed back by the harness."""

    session = None

    def stateful(self) -> bool:
        return callable(getattr(self.session, "get_state", None))

    def path_description(self) -> str:
        return ("session.reset/prefill/step, state kept on the device" if self.stateful()
                else "session.run, state fed back by the harness")

    def _run_fn(self, ids, state):
        return self.session.run(ids, state)

    def run(self, prompt_ids, feed_tokens):
        if not self.stateful():
            return super().run(prompt_ids, feed_tokens)
        s = self.session
        s.reset(prompt_ids.shape[0])
        prefill = np.asarray(s.prefill(np.ascontiguousarray(prompt_ids, dtype=np.int64)), dtype=np.float32)
        B, V = prefill.shape[0], prefill.shape[-1]
        decode = []
        for i in range(feed_tokens.shape[1]):
            lg = np.asarray(s.step(np.ascontiguousarray(feed_tokens[:, i], dtype=np.int64)), dtype=np.float32)
            if lg.shape != (B, V):
                raise ValueError(f"decode step {i}: session.step returned logits of shape {lg.shape}, "
                                 f"expected {(B, V)}")
            decode.append(lg)
        dec = np.stack(decode, axis=1) if decode else np.zeros((B, 0, V), np.float32)
        return RunOutput(prefill, dec, np.asarray(s.get_state(), dtype=np.float32))


class OrtBackend(_SessionBackend):
    """Custom-op ONNX in hla_deploy.runtime.OrtHLASession (device "cpu" or "cuda")."""

    def __init__(self, device: str):
        self.device = device
        self.name = f"ort-{device}"

    def prepare(self, ctx):
        ort = _import_or_skip("onnxruntime")
        if self.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendSkipped("onnxruntime has no CUDAExecutionProvider here (available: "
                                 f"{', '.join(ort.get_available_providers())})")
        from hla_deploy.runtime import OrtHLASession
        path = ctx.onnx_path("custom")
        library = ctx.ort_library()
        # TF32 off: parity compares float32 results (the CUDA EP's MatMul is TF32 by default)
        self.session = OrtHLASession(str(path), device=self.device, library=library, tf32=False)
        self.artifact = str(path)
        self.description = (f"custom-op ONNX in OrtHLASession(device={self.device!r}, tf32=False), "
                            f"{self.path_description()}, library {library}")
        self.prepare_common(ctx)


class OnnxStandardBackend(_NumpyStateBackend):
    """Standard-op ONNX in stock onnxruntime (CPU EP, no custom-op library)."""

    name = "onnx-standard"

    def prepare(self, ctx):
        ort = _import_or_skip("onnxruntime")
        path = ctx.onnx_path("standard")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if set(names_in) != {"input_ids", "state"} or not {"logits", "state_out"} <= set(names_out):
            raise ValueError(f"{path}: expected inputs (input_ids, state) and outputs (logits, "
                             f"state_out), got inputs {names_in} and outputs {names_out}")
        self.artifact = str(path)
        self.description = "standard-op ONNX in onnxruntime InferenceSession (CPUExecutionProvider)"
        self.prepare_common(ctx)

    def _run_fn(self, ids, state):
        logits, state_out = self.session.run(["logits", "state_out"], {"input_ids": ids, "state": state})
        return logits, state_out


class TrtBackend(_SessionBackend):
    """TensorRT engine (built here from the custom-op ONNX) in hla_deploy.runtime.TrtHLASession."""

    name = "trt"

    def prepare(self, ctx):
        _import_or_skip("tensorrt")
        ok, why = _cuda_available()
        if not ok:
            raise BackendSkipped(why)
        from hla_deploy.exporters.tensorrt.engine import build_engine
        from hla_deploy.runtime import TrtHLASession
        path = ctx.onnx_path("custom")
        plan = ctx.workdir / f"{Path(path).stem}_b{ctx.max_batch}.plan"
        build_engine(str(path), str(plan), fp16=(ctx.dtype == "fp16"), max_batch=ctx.max_batch,
                     max_seq=ctx.max_seq)
        self.session = TrtHLASession(str(plan))
        self.artifact = str(plan)
        self.description = (f"TensorRT engine {plan.name} from {path} (fp16={ctx.dtype == 'fp16'}), "
                            f"{self.path_description()}")
        self.prepare_common(ctx)


def make_backend(name: str) -> Backend:
    if name == "torch":
        return TorchBackend()
    if name == "triton":
        return TritonBackend()
    if name == "ort-cpu":
        return OrtBackend("cpu")
    if name == "ort-cuda":
        return OrtBackend("cuda")
    if name == "onnx-standard":
        return OnnxStandardBackend()
    if name == "trt":
        return TrtBackend()
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")


def onnx_kind(path: Path) -> Tuple[str, dict]:
    """("custom" | "standard", metadata dict) of an hla-deploy ONNX export, from its metadata
    (``hla_deploy.op``), else from whether it holds an HLARecurrentStep node. A file that is
    missing, unreadable or not an hla-deploy export raises an error naming it."""
    from hla_deploy.runtime.onnx_file import export_op, read_export
    model, meta = read_export(path)
    return export_op(model, meta), meta


def config_mismatch(meta: dict, config) -> Optional[str]:
    """A description of how the ONNX metadata's config differs from the checkpoint's, or None."""
    raw = meta.get("hla_deploy.config")
    if raw is None:
        return "no hla_deploy.config metadata"
    try:
        theirs = json.loads(raw)
    except ValueError:
        return "hla_deploy.config metadata is not JSON"
    ours = config.to_dict()
    diffs = [k for k in sorted(set(ours) | set(theirs)) if _norm(ours.get(k)) != _norm(theirs.get(k))]
    if diffs:
        return "differs in " + ", ".join(f"{k} (checkpoint {ours.get(k)!r}, onnx {theirs.get(k)!r})"
                                         for k in diffs)
    return None


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v
