"""`hla-deploy bundle`: a self-contained directory that deploys on a device and checks its own parity there.

    write_bundle(ckpt_dir_or_model, out_dir, target="jetson-orin"|"x86-cuda"|"cpu", dtype=None,
                 decode_steps=16, prompts=None, max_seq=2048, max_batch=1, force=False) -> Path

Layout of out_dir (and of out_dir + ".tar.gz", the same tree under its directory name):

    manifest.json        versions, target, dtype, tolerances, model id, SHA-256 of every file
    README.md            the device commands in order and what each prints
    bundle.env           TARGET DTYPE CUDA_ARCH L H N MAX_BATCH OPT_SEQ MAX_SEQ (sourced by the scripts)
    build.sh engine.sh check.sh tools/manifest.sh      (engine.sh on GPU targets only)
    hla_check.py         golden check with python3 + onnxruntime + numpy (exporters/bundle/check.py)
    model/model.onnx model/model_standard.onnx          custom-op and standard-op graphs (metadata
                         hla_deploy.model_id added)
    golden/              reference outputs (exporters/bundle/golden.py)
    src/plugins/         CMakeLists.txt, cmake/, common/, ort_hla/ (+ trt_hla/ on GPU targets)
    src/onnxruntime/include/   the ONNX Runtime headers this machine built with
    hla_kernels/         GPU targets: AOT prefill cubins for the target's arch (sm_87 jetson-orin, sm_90
                         x86-cuda) of the graph's HLARecurrentStep configurations + their manifest.json,
                         compiled on this host (needs Triton; kernels=False skips them); build.sh copies
                         them to build/lib/hla_kernels/ (exporters/bundle/kernels.py)

The bundle is assembled in a temp directory next to out_dir and renamed into place at the end:
a failure leaves no partial bundle (and an existing out_dir is replaced only with force=True).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from hla_deploy._atomic import missing_parent

from . import scripts as bundle_scripts

TARGETS = ("jetson-orin", "x86-cuda", "cpu")
#: CUDA architectures the TensorRT plugin is built for, per target (bundle.env CUDA_ARCH).
CUDA_ARCH = {"jetson-orin": "87", "x86-cuda": "80;86;89;90", "cpu": "87"}
#: What the target's TensorRT is (manifest.json versions.tensorrt_target).
TENSORRT_TARGET = {"jetson-orin": "10.3 (JetPack 6.1/6.2: CUDA 12.6, sm_87)", "x86-cuda": ">= 10.3 (TENSORRT_ROOT)",
                   "cpu": None}
MANIFEST_FORMAT = 1
NATIVE_SUFFIXES = (".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh", ".txt", ".cmake", ".map", ".md")


class BundleError(ValueError):
    """A bundle cannot be written (message names the input or option)."""


def _checkpoint_dir(source, tmp: Path) -> Path:
    """A checkpoint directory for source (an HLALanguageModel is saved into tmp)."""
    from hla_deploy.models import HLALanguageModel
    if isinstance(source, HLALanguageModel):
        return Path(source.save(tmp / "checkpoint"))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise BundleError(f"{path} is not a checkpoint directory (config.json + model.safetensors)")
        return path
    raise TypeError(f"write_bundle expects a checkpoint directory or an HLALanguageModel, got {type(source).__name__}")


def _copy_native_sources(dest: Path, gpu: bool) -> None:
    from hla_deploy.native.cmake import plugins_source_dir
    src = plugins_source_dir()
    subdirs = ["cmake", "common", "ort_hla"] + (["trt_hla"] if gpu else [])
    dest.mkdir(parents=True)
    shutil.copy2(src / "CMakeLists.txt", dest / "CMakeLists.txt")
    for sub in subdirs:
        for p in sorted((src / sub).rglob("*")):
            rel = p.relative_to(src)
            if p.is_file() and p.suffix in NATIVE_SUFFIXES and "tests" not in rel.parts[1:-1] \
                    and not any(part.startswith("build") for part in rel.parts):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dest / rel)


def _copy_ort_headers(dest: Path) -> str:
    """Copies the ORT include dir used by this machine's build; returns its ORT_API_VERSION."""
    from hla_deploy.native.ort_headers import ort_include_dir
    inc = Path(ort_include_dir(fetch=True, verbose=False))
    shutil.copytree(inc, dest)
    m = re.search(r"#define ORT_API_VERSION (\d+)", (dest / "onnxruntime_c_api.h").read_text(errors="replace"))
    return m.group(1) if m else "unknown"


def _opset(path: Path) -> int:
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def write_bundle(source, out_dir, target: str = "jetson-orin", dtype: Optional[str] = None, *,
                 decode_steps: int = 16, prompts: Optional[Sequence] = None, max_seq: int = 2048,
                 max_batch: int = 1, force: bool = False, tarball: bool = True, kernels: bool = True,
                 kernel_dir=None) -> Path:
    """Write the bundle (see the module docstring); returns out_dir."""
    import hla_deploy
    from hla_deploy.exporters import export_onnx
    from hla_deploy.models import tokenizer
    from hla_deploy.models.checkpoint import load_config
    from hla_deploy.parity import DEFAULT_PROMPTS
    from hla_deploy.parity.tolerances import default_tolerances

    from .golden import model_id, record_golden, stamp_model_id
    from .kernels import ship_kernels
    from .readme_device import device_readme

    if target not in TARGETS:
        raise BundleError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    dtype = dtype or ("fp32" if target == "cpu" else "fp16")
    if dtype not in ("fp32", "fp16"):
        raise BundleError(f"unsupported dtype {dtype!r}; expected fp32 or fp16")
    for name, v in (("decode_steps", decode_steps), ("max_seq", max_seq), ("max_batch", max_batch)):
        if isinstance(v, bool) or int(v) != v or v < (0 if name == "decode_steps" else 1):
            raise BundleError(f"{name} must be an integer >= {0 if name == 'decode_steps' else 1}, got {v!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise BundleError(f"output {out_dir} exists; choose another -o or pass --force to replace it")
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    problem = missing_parent(out_dir)
    if problem:
        raise BundleError(f"output {out_dir}: {problem}")
    gpu = target != "cpu"
    if gpu and kernels:  # before any work: the host compiles the cubins (TritonMissingError, exit 3)
        from hla_deploy.native.triton_aot import triton_package_dir
        triton_package_dir()

    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=str(parent)))
    try:
        ckpt = _checkpoint_dir(source, work)
        config = load_config(ckpt)  # CheckpointError naming the file
        b = work / "bundle"
        (b / "model").mkdir(parents=True)
        mid = model_id(ckpt)
        graphs = {"custom": b / "model" / "model.onnx", "standard": b / "model" / "model_standard.onnx"}
        for op, path in graphs.items():
            export_onnx(ckpt, None, path, op=op, dtype=dtype)
            stamp_model_id(path, mid)
        texts = list(prompts) if prompts is not None else list(DEFAULT_PROMPTS[:2])
        ids = [tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in texts]
        if not ids or any(not p for p in ids):
            raise BundleError("every golden prompt needs at least one token")
        tol = default_tolerances(dtype)
        golden = record_golden(ckpt, config, b / "golden", ids, int(decode_steps), tol, dtype, mid)

        kernel_record = ship_kernels(graphs["custom"], b, target, kernel_dir) if (gpu and kernels) else None
        _copy_native_sources(b / "src" / "plugins", gpu)
        ort_api = _copy_ort_headers(b / "src" / "onnxruntime" / "include")
        shutil.copy2(Path(__file__).with_name("check.py"), b / "hla_check.py")
        opt_seq = min(int(max_seq), 128)
        env = {"TARGET": target, "DTYPE": dtype, "CUDA_ARCH": CUDA_ARCH[target], "L": config.n_layers,
               "H": config.n_heads, "N": config.state_size, "MAX_BATCH": int(max_batch), "OPT_SEQ": opt_seq,
               "MAX_SEQ": int(max_seq)}
        (b / "bundle.env").write_text("# sourced by build.sh / engine.sh / check.sh (environment variables of "
                                      "the same name override the defaults)\n" + "".join(
                                          f'{k}=${{{k}:-"{v}"}}\n' if k in ("MAX_BATCH", "OPT_SEQ", "MAX_SEQ", "CUDA_ARCH")
                                          else f'{k}="{v}"\n' for k, v in env.items()))
        _write_script(b / "tools" / "manifest.sh", bundle_scripts.MANIFEST_SH)
        _write_script(b / "build.sh", bundle_scripts.BUILD_SH)
        _write_script(b / "check.sh", bundle_scripts.CHECK_SH)
        if gpu:
            _write_script(b / "engine.sh", bundle_scripts.ENGINE_SH)
        meta = {
            "format": MANIFEST_FORMAT, "name": out_dir.name, "target": target, "dtype": dtype,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model_id": mid, "model_config": json.loads(json.dumps(config.to_dict(), default=str)),
            "versions": {"hla_deploy": hla_deploy.__version__, "op_contract": hla_deploy.OP_CONTRACT_VERSION,
                         "onnx_opset": _opset(graphs["custom"]), "onnxruntime_headers_api": ort_api,
                         "tensorrt_target": TENSORRT_TARGET[target],
                         "cuda_target": "12.6" if target == "jetson-orin" else (">= 12" if gpu else None),
                         "cuda_arch": CUDA_ARCH[target] if gpu else None},
            "tolerances": tol, "reference": golden["reference"], "golden_cases": golden["cases"],
            "engine_profile": {"max_batch": int(max_batch), "opt_seq": opt_seq, "max_seq": int(max_seq)} if gpu else None,
            "trtexec_flags": list(bundle_scripts.ENGINE_TRTEXEC_FLAGS) if gpu else None,
            "kernels": kernel_record,
        }
        (b / "README.md").write_text(device_readme(meta, golden))
        files = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
        meta["files"] = {f: _sha256(b / f) for f in files}
        (b / "manifest.json").write_text(json.dumps(meta, indent=2) + "\n")

        tar_tmp = None
        if tarball:
            tar_tmp = work / "bundle.tar.gz"
            with tarfile.open(tar_tmp, "w:gz") as tf:
                tf.add(b, arcname=out_dir.name)
        old = None
        if out_dir.exists():  # force=True: move the old one aside first, delete it after the swap
            old = work / "old"
            os.rename(out_dir, old)
        os.rename(b, out_dir)
        if tar_tmp is not None:
            os.replace(tar_tmp, out_dir.with_name(out_dir.name + ".tar.gz"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir
