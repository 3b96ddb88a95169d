"""Parity harness: run one model through every backend and compare with the reference model.

    report = run_parity("path/to/checkpoint", backends=["torch", "ort-cpu"], decode_steps=16)
    report["summary"]["ok"]   # True when every backend that ran is within tolerance
    run_parity(None, onnx=["model.onnx", "model_standard.onnx"])   # exported graphs only, no torch:
                              # the float32 standard-op graph is the reference (parity/graph_reference.py)

See docs/PARITY.md for what is compared, the metrics, the tolerances and the JSON schema.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .backend_names import BACKEND_NAMES
from .tolerances import DTYPES

__all__ = ["run_parity", "SCHEMA_VERSION", "DEFAULT_PROMPTS", "BACKEND_NAMES"]

#: Version of the JSON report schema (docs/PARITY.md). Bump on any incompatible change.
SCHEMA_VERSION = 1

#: Default prompts (byte-level tokens): four Python snippets of 72 bytes each, run as one batch
#: [4, 72] (longer than one 64-token chunk, so the chunked prefill crosses a chunk boundary).
DEFAULT_PROMPTS = (
    "import os\nimport sys\n\n\ndef main(argv=None):\n    \"\"\"Run the tool.\"\"\"\n    ",
    "class Queue:\n    def __init__(self, maxsize=0):\n        self.maxsize = m",
    "def readlines(path):\n    with open(path, encoding='utf8') as f:\n        ",
    "for i, line in enumerate(lines):\n    if not line.strip():\n        contin",
)

OnnxArg = Union[None, str, os.PathLike, Sequence[Union[str, os.PathLike]], Mapping[str, Union[str, os.PathLike]]]


def _load_prompts(prompts, vocab_size: int) -> List[dict]:
    from hla_deploy import tokenizer  # torch-free
    if prompts is None:
        prompts = DEFAULT_PROMPTS
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts must be a list of strings or of token-id lists, not a single string")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            ids, text = list(tokenizer.encode(p)), p
        else:
            ids = [int(t) for t in p]
            text = None
        if not ids:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token ids {bad[:5]} outside [0, {vocab_size}) "
                             f"(the model's vocab_size)")
        out.append({"text": text, "ids": ids})
    if not out:
        raise ValueError("no prompts given")
    return out


def _normalize_onnx(onnx: OnnxArg) -> List[Path]:
    if onnx is None:
        return []
    if isinstance(onnx, (str, os.PathLike)):
        return [Path(onnx)]
    if isinstance(onnx, Mapping):
        return [Path(p) for p in onnx.values() if p is not None]
    return [Path(p) for p in onnx]


def _checkpoint_config(checkpoint):
    """(checkpoint path, config); raises a clear error for a missing or corrupt checkpoint."""
    from hla_deploy.extras import require_extra
    require_extra("export", "parity with a checkpoint (the torch reference model; without a checkpoint, "
                            "parity compares exported graphs: --onnx MODEL.onnx --onnx MODEL_standard.onnx)")
    from hla_deploy.models import HLALanguageModel
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (expected a directory with "
                                f"config.json and model.safetensors)")
    model = HLALanguageModel.load(path, map_location="cpu")
    return path, model.config


def run_parity(checkpoint, onnx: OnnxArg = None, backends: Optional[Iterable[str]] = None,
               prompts=None, decode_steps: int = 16, dtype: str = "fp32",
               tolerances: Optional[Mapping[str, float]] = None, library=None,
               workdir=None, log: Optional[Callable[[str], None]] = None) -> dict:
    """Check every backend against the reference model; returns the JSON-able report.

    checkpoint: a checkpoint dir (config.json + model.safetensors); the reference is its torch model.
        None: compare exported graphs only (no torch needed): ``onnx`` must hold a float32
        standard-op graph, the reference (hla_deploy.parity.graph_reference), and the torch /
        triton backends are skipped.
    onnx: ONNX file(s) to check as they are (custom-op and/or standard-op graph, told apart by
        their ``hla_deploy.op`` metadata); None: the harness exports them into a temp dir.
    backends: names from BACKEND_NAMES (default all); those that cannot run here are
        reported as skipped with the reason, never as passed.
    prompts: list of strings (byte-level tokens) or token-id lists; default DEFAULT_PROMPTS.
        Prompts of equal length are run as one batch [B, T].
    decode_steps: teacher-forced greedy decode steps after the prefill.
    dtype: precision of the backends under test (fp32|fp16|bf16); the reference is float32.
    tolerances: overrides of the per-dtype defaults (tolerances.TOLERANCE_KEYS).
    library: the ORT custom-op library (default hla_deploy.native.ort_library_path()).
    workdir: where exported graphs / engines go (default: a temp dir removed afterwards).
    log: called with progress lines (default: silent).
    """
    from . import tolerances as tol_mod
    from hla_deploy.exit_codes import UsageError

    from .backends import BackendSkipped, ParityContext, Reference, config_mismatch, make_backend, onnx_kind
    from .graph_reference import GraphReference
    from .metrics import ParityAccumulator
    import hla_deploy

    say = log or (lambda s: None)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or decode_steps < 0:
        raise ValueError(f"decode_steps must be an integer >= 0, got {decode_steps!r}")
    if isinstance(backends, str):
        backends = [b.strip() for b in backends.split(",") if b.strip()]
    names = list(BACKEND_NAMES if backends is None else backends)
    if not names:
        raise ValueError("no backends selected")
    for n in names:
        if n not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {n!r}; expected one of {', '.join(BACKEND_NAMES)}")
    names = list(dict.fromkeys(names))
    tol = tol_mod.resolve(dtype, tolerances)

    given = []
    for p in _normalize_onnx(onnx):
        kind, meta = onnx_kind(p)
        if any(k == kind for _, k, _ in given):
            other = next(q for q, k, _ in given if k == kind)
            raise ValueError(f"two {kind}-op ONNX graphs given ({other.resolve()} and {p}); give at most "
                             f"one custom-op and one standard-op graph")
        given.append((p, kind, meta))
    onnx_given: Dict[str, Path] = {kind: p.resolve() for p, kind, _ in given}
    if checkpoint is None:
        from .graph_reference import GraphConfig, check_reference_graph
        std = next(((p, meta) for p, kind, meta in given if kind == "standard"), None)
        if std is None:
            raise UsageError("without a checkpoint, parity compares exported graphs and needs the float32 "
                             "standard-op graph as the reference: --onnx MODEL_standard.onnx (from `hla-deploy "
                             "export CKPT --op standard`), with the custom-op graph --onnx MODEL.onnx")
        check_reference_graph(*std)
        ckpt, config = None, GraphConfig.from_metadata(std[1], std[0])
    else:
        ckpt, config = _checkpoint_config(checkpoint)
    prompt_list = _load_prompts(prompts, config.vocab_size)
    warnings: List[str] = []
    for p, kind, meta in given:
        mismatch = config_mismatch(meta, config)
        if mismatch:
            warnings.append(f"{p}: model config in the ONNX metadata vs "
                            f"{'checkpoint' if ckpt is not None else 'the reference graph'}: {mismatch}")
        meta_dtype = meta.get("hla_deploy.dtype")
        if meta_dtype and meta_dtype != dtype and not (ckpt is None and kind == "standard"):
            warnings.append(f"{p}: exported as {meta_dtype} but checked with --dtype {dtype} tolerances")

    # group prompts of equal length into batches [B, T] (order of first appearance)
    groups: Dict[int, List[int]] = {}
    for i, p in enumerate(prompt_list):
        groups.setdefault(len(p["ids"]), []).append(i)

    import numpy as np
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="hla_parity_")
        workdir = tmp.name
    Path(workdir).mkdir(parents=True, exist_ok=True)
    try:
        ctx = ParityContext(ckpt, config, dtype, Path(workdir), onnx_given, library,
                            max_batch=max(len(g) for g in groups.values()),
                            max_seq=max(groups) + decode_steps)
        t0 = time.perf_counter()
        reference = Reference(ctx) if ckpt is not None else GraphReference(ctx)
        prompt_batches = [np.array([prompt_list[i]["ids"] for i in idx], dtype=np.int64)  # [B, T]
                          for idx in groups.values()]
        batches = [(ids, fed, ref_run) for ids, (ref_run, fed)
                   in zip(prompt_batches, reference.run_batches(prompt_batches, decode_steps))]
        ref_seconds = time.perf_counter() - t0
        say(f"reference: {reference.description}")

        results = []
        for name in names:
            backend = make_backend(name)
            entry = {"name": name, "status": None, "reason": None, "description": None,
                     "artifact": None, "metrics": None, "violations": [],
                     "per_position_max_abs_err": [], "seconds": None, "note": None}
            if name == "triton" and reference.form == "triton" and dtype == "fp32":
                entry["note"] = ("the reference is this same form (Triton, fp32) on this machine, so this "
                                 "comparison is trivial; the torch and ONNX backends are checked against it")
            if name == "onnx-standard" and reference.form == "onnx-standard":
                entry["note"] = ("the reference is this same graph (no checkpoint given), so this comparison is "
                                 "trivial; the custom-op backends are checked against it")
            t0 = time.perf_counter()
            try:
                backend.prepare(ctx)
                acc = ParityAccumulator()
                for ids, fed, ref_run in batches:
                    out = backend.run(ids, fed)
                    acc.add(ref_run.logits(), out.logits(), ref_run.final_state, out.final_state)
                metrics = acc.result()
                violations = tol_mod.check(metrics, tol)
                entry.update(status="fail" if violations else "pass", metrics=_clean(metrics),
                             violations=violations,
                             per_position_max_abs_err=_clean(acc.pos_max_abs))
            except BackendSkipped as exc:
                entry.update(status="skipped", reason=str(exc))
            except Exception as exc:  # a backend that should run and did not: a failure
                entry.update(status="error", reason=f"{type(exc).__name__}: {exc}")
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            entry["description"] = backend.description or None
            entry["artifact"] = backend.artifact
            results.append(entry)
            say(_one_line(entry))
    finally:
        if tmp is not None:
            tmp.cleanup()

    by = {s: [r["name"] for r in results if r["status"] == s] for s in ("pass", "fail", "skipped", "error")}
    summary = {"passed": by["pass"], "failed": by["fail"], "errors": by["error"], "skipped": by["skipped"],
               "ok": bool(by["pass"]) and not by["fail"] and not by["error"]}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "hla-deploy parity",
        "hla_deploy_version": hla_deploy.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": _s(ckpt),
        "config": config.to_dict(),
        "dtype": dtype,
        "decode_steps": decode_steps,
        "prompts": [{"text": p["text"], "num_tokens": len(p["ids"])} for p in prompt_list],
        "batches": [{"batch_size": int(ids.shape[0]), "prompt_tokens": int(ids.shape[1])}
                    for ids, _, _ in batches],
        "reference": dict(reference.info(), seconds=round(ref_seconds, 3)),
        "onnx": {"custom": _s(onnx_given.get("custom")), "standard": _s(onnx_given.get("standard")),
                 "given": bool(onnx_given)},
        "tolerances": tol,
        "backends": results,
        "summary": summary,
        "warnings": warnings,
    }


def _s(p) -> Optional[str]:
    return None if p is None else str(p)


def _clean(x):
    """Make metrics JSON-safe: non-finite floats become None (the `finite` flag says why)."""
    import math
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _one_line(entry: dict) -> str:
    status = entry["status"].upper()
    if entry["metrics"] is None:
        return f"{entry['name']}: {status} ({entry['reason']})"
    m = entry["metrics"]
    extra = f" [{'; '.join(entry['violations'])}]" if entry["violations"] else ""
    return (f"{entry['name']}: {status} rel_rms_err={_fmt(m['rel_rms_err'])} "
            f"state_rel_err={_fmt(m['state_rel_err'])}{extra}")


def _fmt(v) -> str:
    return "nan" if v is None else f"{v:.3g}"
