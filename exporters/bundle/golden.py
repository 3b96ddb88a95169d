"""Golden outputs of a device bundle: what the reference model gives on the golden prompts.

    model_id(ckpt_dir) -> hex                        SHA-256 of config.json + model.safetensors
    stamp_model_id(onnx_path, model_id)              adds metadata hla_deploy.model_id to an export
    record_golden(ckpt_dir, config, golden_dir, prompts, decode_steps, tolerances) -> dict

The reference is hla_deploy.parity's: the torch model with the Triton kernels on CUDA where a GPU
and Triton support the model, else the torch chunk form on the CPU, float32 always. Per prompt
(batch 1): prefill, then ``decode_steps`` greedy steps (argmax fed back). Files, little-endian raw
arrays, in golden_dir (format read by plugins/ort_hla/hla_golden_check.cc and the bundle's
hla_check.py):

    index.txt                 hla_golden 1 / model_id / dtype / vocab / state L H N / tol k v / case i T D prefix
    case<i>.ids.i64           [T]          prompt token ids
    case<i>.tokens.i64        [D]          the reference's greedy tokens (fed in teacher-forced decode)
    case<i>.logits.f32        [T + D, V]   prefill logits then the decode steps' logits
    case<i>.state.f32         [L, 1, H, N] final state
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

GOLDEN_FORMAT = 1
TOLERANCE_ORDER = ("max_abs_err", "rel_rms_err", "min_cosine", "token_agreement", "state_rel_err")


def model_id(ckpt_dir: Path) -> str:
    """SHA-256 over the checkpoint's config.json and model.safetensors (what the model is)."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update(name.encode() + b"\0")
        with open(Path(ckpt_dir) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def stamp_model_id(onnx_path: Path, mid: str) -> None:
    """Record ``hla_deploy.model_id`` in an exported graph's metadata (rewrites the file in place;
    the bundle is still in its temp directory)."""
    import onnx

    model = onnx.load(str(onnx_path))  # external data, if any, is loaded and saved back inline
    props = {p.key: p.value for p in model.metadata_props}
    props["hla_deploy.model_id"] = mid
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(onnx_path))


def record_golden(ckpt_dir: Path, config, golden_dir: Path, prompts: Sequence[Sequence[int]],
                  decode_steps: int, tolerances: Dict[str, float], dtype: str, mid: str) -> dict:
    """Run the reference on each prompt and write golden_dir (see the module docstring).
    Returns {"reference": {...}, "cases": [...], "tokens": [[...], ...]}."""
    from hla_deploy.parity.backends import ParityContext, Reference

    golden_dir.mkdir(parents=True, exist_ok=True)
    ctx = ParityContext(Path(ckpt_dir), config, "fp32", golden_dir.parent)
    ref = Reference(ctx)
    batches = [np.asarray([list(p)], dtype=np.int64) for p in prompts]  # one prompt per batch: [1, T]
    runs = ref.run_batches(batches, decode_steps)
    lines: List[str] = [f"hla_golden {GOLDEN_FORMAT}", f"model_id {mid}", f"dtype {dtype}",
                        f"vocab {config.vocab_size}",
                        f"state {config.n_layers} {config.n_heads} {config.state_size}",
                        f"decode {decode_steps}"]
    lines += [f"tol {k} {float(tolerances[k])!r}" for k in TOLERANCE_ORDER]
    cases, tokens = [], []
    for i, (ids, (out, fed)) in enumerate(zip(batches, runs)):
        prefix = f"case{i}"
        logits = out.logits()[0]  # [T + D, V]
        np.ascontiguousarray(ids[0], dtype="<i8").tofile(golden_dir / f"{prefix}.ids.i64")
        np.ascontiguousarray(fed[0], dtype="<i8").tofile(golden_dir / f"{prefix}.tokens.i64")
        np.ascontiguousarray(logits, dtype="<f4").tofile(golden_dir / f"{prefix}.logits.f32")
        np.ascontiguousarray(out.final_state, dtype="<f4").tofile(golden_dir / f"{prefix}.state.f32")
        lines.append(f"case {i} {ids.shape[1]} {decode_steps} {prefix}")
        cases.append({"prefix": prefix, "prompt_tokens": int(ids.shape[1]), "decode_steps": int(decode_steps)})
        tokens.append([int(t) for t in np.argmax(logits, axis=-1)])
    info = ref.info()
    lines.insert(3, "reference " + info["form"] + "-" + info["device"])
    (golden_dir / "index.txt").write_text("\n".join(lines) + "\n")
    return {"reference": info, "cases": cases, "tokens": tokens}
