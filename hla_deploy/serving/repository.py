"""Write a Triton model repository holding one model, `hla_lm`, for an exported hla-deploy model.

    write_repository(model, repo, backend="python", device="cpu", max_sequences=64, instances=1,
                     idle_timeout_s=60.0, strategy="oldest", op_library=None,
                     max_batch_size=None, queue_delay_us=DEFAULT_QUEUE_DELAY_US) -> Path

backend "python": REPO/hla_lm/{config.pbtxt, 1/model.py, 1/model.onnx|model.plan}; model.py
adds this interpreter's site-packages (or $HLA_DEPLOY_SITE_DIRS) to the stub's sys.path and runs
hla_deploy.serving.python_model. backend "onnxruntime" / "tensorrt": implicit state on a
batch-first copy of the graph (hla_deploy.serving.state_batch_first); the onnxruntime config
names a copy of the op library in the repository (model_operations), the tensorrt variant needs
1/model.plan built from REPO/hla_lm/model_batch_first.onnx (the command is in REPO/README.md).
Batching (max_batch_size, queue_delay_us): hla_deploy.serving.model_config.
The repository is built in a temp directory next to REPO and renamed into place: never half-written.
"""
from __future__ import annotations

import os
import shutil
import site
import sys
import tempfile
from pathlib import Path
from typing import Optional, Union

from .model_config import DEFAULT_QUEUE_DELAY_US, MODEL_NAME, batch_size, implicit_state_config, python_config

BACKENDS = ("python", "onnxruntime", "tensorrt")

_MODEL_PY = '''"""Triton Python-backend entry of hla_lm (written by hla-deploy serve-repo)."""
import os
import site
import sys

SITE_DIRS = {site_dirs!r}  # the writer's interpreter; $HLA_DEPLOY_SITE_DIRS overrides
_dirs = [d for d in (os.environ.get("HLA_DEPLOY_SITE_DIRS") or "").split(os.pathsep) if d] or SITE_DIRS
_before = list(sys.path)
for _d in _dirs:
    site.addsitedir(_d)
sys.path[:] = [p for p in sys.path if p not in _before] + _before  # these environments first

from hla_deploy.serving.python_model import TritonPythonModel  # noqa: E402,F401
'''


def _site_dirs():
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    return [d for d in dirs if os.path.isdir(d)]


def _versions() -> str:
    import importlib.metadata as md
    out = [f"- python {sys.version.split()[0]}"]
    for pkg in ("hla-deploy", "onnxruntime", "onnxruntime-gpu", "nvidia-pytriton", "tritonclient", "tensorrt"):
        try:
            out.append(f"- {pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return "\n".join(out)


def write_repository(model: Union[str, os.PathLike], repo: Union[str, os.PathLike], *, backend: str = "python",
                     device: str = "cpu", max_sequences: int = 64, instances: int = 1,
                     idle_timeout_s: float = 60.0, strategy: str = "oldest",
                     op_library: Optional[Union[str, os.PathLike]] = None,
                     max_batch_size: Optional[int] = None, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> Path:
    from hla_deploy.runtime.onnx_file import read_export

    model, repo = Path(model), Path(repo)
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {BACKENDS}, got {backend!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if int(max_sequences) < 1 or int(instances) < 1 or not float(idle_timeout_s) > 0:
        raise ValueError(f"need max_sequences >= 1, instances >= 1, idle_timeout_s > 0; got "
                         f"{max_sequences}, {instances}, {idle_timeout_s}")
    if strategy not in ("oldest", "direct") or (strategy == "direct" and backend != "python"):
        raise ValueError(f"--strategy must be oldest or direct (direct: python backend only), got {strategy!r}"
                         f"{'' if backend == 'python' else f' with --backend {backend}'}")
    batching = dict(max_batch_size=max_batch_size, queue_delay_us=queue_delay_us)
    python_config(1, max_sequences, instances, 1, strategy, device, {}, **batching)  # bad values: error, no files
    mbs = None if strategy == "direct" else batch_size(max_sequences, max_batch_size)
    if repo.exists() and (not repo.is_dir() or any(repo.iterdir())):
        raise FileExistsError(f"model repository {repo} exists and is not an empty directory")
    if not model.is_file():
        raise FileNotFoundError(f"model not found: {model} (expected an exported .onnx or a TensorRT .plan)")
    is_plan = model.suffix in (".plan", ".engine", ".trt")
    if backend != "tensorrt" and is_plan and backend == "onnxruntime":
        raise ValueError(f"{model}: the onnxruntime backend needs an .onnx export, got a TensorRT engine")
    if not is_plan:
        onnx_model, meta = read_export(model)
        import json
        cfg = json.loads(meta["hla_deploy.config"])
        vocab = int(cfg["vocab_size"])
        sdims = [d.dim_value for d in next(i for i in onnx_model.graph.input if i.name == "state")
                 .type.tensor_type.shape.dim]
        state_dims = [sdims[0], sdims[2], sdims[3]]  # [L, H, N]
    elif backend == "python":
        vocab, state_dims = None, None
    else:
        raise ValueError(f"{model}: --backend tensorrt takes the .onnx export (the engine must be built from "
                         f"its batch-first copy; the repository README gives the command)")
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", dir=str(repo.parent)))
    try:
        mdir = tmp / MODEL_NAME
        vdir = mdir / "1"
        vdir.mkdir(parents=True)
        idle_us = int(float(idle_timeout_s) * 1e6)
        notes = []
        if backend == "python":
            dst = vdir / ("model.plan" if is_plan else "model.onnx")
            shutil.copyfile(model, dst)
            if vocab is None:  # a .plan: ask the engine (needs TensorRT here)
                from hla_deploy.runtime.trt_session import TrtHLASession
                vocab = TrtHLASession(model).vocab_size
            params = {"model_file": dst.name, "device": device, "max_sequences": str(int(max_sequences)),
                      "idle_timeout_s": repr(float(idle_timeout_s)), "intra_op_num_threads": "1"}
            if op_library:
                params["op_library"] = str(Path(op_library).absolute())
            (mdir / "config.pbtxt").write_text(python_config(vocab, max_sequences, instances, idle_us,
                                                             strategy, device, params, **batching))
            (vdir / "model.py").write_text(_MODEL_PY.format(site_dirs=_site_dirs()))
            notes.append("Python backend: runs hla_deploy.runtime (ONNX Runtime + libhla_ort_op.so, or TensorRT) "
                         "in Triton's Python backend stub for this interpreter (`hla-deploy serve` sets it up).")
        else:
            from hla_deploy.serving.state_batch_first import state_batch_first
            if backend == "onnxruntime":
                state_batch_first(model, vdir / "model.onnx")
                if op_library is None:
                    from hla_deploy.native import ort_library_path
                    op_library = ort_library_path(build=True)
                lib = mdir / Path(op_library).name
                shutil.copyfile(op_library, lib)
                final_lib = repo.absolute() / MODEL_NAME / lib.name
                (mdir / "config.pbtxt").write_text(implicit_state_config(
                    "onnxruntime", vocab, state_dims, max_sequences, instances, idle_us, device, str(final_lib),
                    **batching))
                notes.append(f"onnxruntime backend: implicit state; op library {final_lib} (absolute: edit "
                             f"op_library_filename in config.pbtxt if you move the repository). Needs a Triton "
                             f"whose onnxruntime backend is ONNX Runtime >= 1.21 (the op library uses ORT C API 21"
                             f"{', and CUDA kernels built in: hla-deploy build-plugins --with-cuda on' if device == 'cuda' else ''}).")
            else:
                bf = mdir / "model_batch_first.onnx"
                state_batch_first(model, bf)
                L, H, N = state_dims
                B = mbs  # the engine's profile covers Triton's largest batch
                cmd = (f"trtexec --onnx={bf} --saveEngine={vdir / 'model.plan'} "
                       f"--dynamicPlugins=<libhla_trt_plugin.so> "
                       f"--minShapes=input_ids:1x1,state:1x{L}x{H}x{N} "
                       f"--optShapes=input_ids:{B}x1,state:{B}x{L}x{H}x{N} "
                       f"--maxShapes=input_ids:{B}x2048,state:{B}x{L}x{H}x{N}")
                (mdir / "config.pbtxt").write_text(implicit_state_config(
                    "tensorrt", vocab, state_dims, max_sequences, instances, idle_us, "cuda", **batching))
                notes.append(f"tensorrt backend: implicit state. Build 1/model.plan (TensorRT >= 10.3) with\n\n"
                             f"    {cmd}\n\nand start tritonserver with "
                             f"`--backend-config=tensorrt,plugins=<abs path of libhla_trt_plugin.so>` "
                             f"(or LD_PRELOAD it). NOT run in this project.")
        (tmp / "README.md").write_text(
            f"# Triton model repository: `{MODEL_NAME}` ({backend} backend, device {device})\n\n"
            f"From `{model}`. Request: input_ids INT64 [1, T] with the sequence START / END flags and a "
            f"correlation id; response: logits FP32 [1, T, vocab]. At most {max_sequences} live sequences per "
            f"instance ({instances} instance(s)); idle sequences reclaimed after {idle_timeout_s:g} s. "
            f"Batching: strategy {strategy}, "
            + (f"at most {mbs} requests of distinct sequences per batch, " if mbs else "one batch slot per sequence, ")
            + f"waiting at most {int(queue_delay_us)} us for a batch to fill.\n\n"
            + "\n\n".join(notes) + "\n\nWritten with:\n\n" + _versions() + "\n")
        os.chmod(tmp, 0o755)
        if repo.exists():
            repo.rmdir()
        os.replace(tmp, repo)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return repo
