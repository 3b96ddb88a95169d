"""hla_check.py of a device bundle: golden-output check with Python, numpy and onnxruntime only.

This file is copied into every bundle as ``hla_check.py`` and runs there (``./check.sh`` calls it
after verifying manifest.json), so it imports nothing of hla-deploy and no torch.

    python3 hla_check.py [--backends ort-cpu,ort-cuda,onnx-standard,trt] [--json]

Backends, each compared with golden/ (recorded from the reference model at bundle time):
  ort-cpu        model/model.onnx, ONNX Runtime CPU EP + build/lib/libhla_ort_op.so
  ort-cuda       the same on the CUDA EP (needs an onnxruntime with CUDAExecutionProvider)
  onnx-standard  model/model_standard.onnx in stock ONNX Runtime (no custom library)
  trt            build/model.plan (./engine.sh) + build/lib/libhla_trt_plugin.so, with TensorRT's
                 Python package and libcudart through ctypes (no torch, no pycuda)
Each case: prefill from a zero state, then teacher-forced decode of the golden greedy tokens;
metrics as hla_deploy.parity.metrics. A backend whose runtime is not on the device is skipped
(the reason printed); one whose files are missing or do not load fails, naming the file.
Exit 0: every backend that ran is within tolerance (ort-cpu must run); 1 otherwise.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BACKENDS = ("ort-cpu", "ort-cuda", "onnx-standard", "trt")
CONTRACT_VERSION = "1"


class CheckError(Exception):
    """A failure of the check that names the file at fault."""


class Skip(Exception):
    """The backend's runtime is not on this device (the reason)."""


def rel(p: Path) -> str:
    try:
        return str(Path(p).relative_to(HERE))
    except ValueError:
        return str(p)


# ---- golden files ------------------------------------------------------------------------------

def read_index(path: Path) -> dict:
    if not path.is_file():
        raise CheckError(f"golden index not found: {rel(path)}")
    g = {"tol": {}, "cases": []}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        try:
            k = f[0]
            if k == "hla_golden":
                if f[1] != "1":
                    raise ValueError("golden format version " + f[1])
                g["format"] = 1
            elif k in ("model_id", "dtype", "reference"):
                g[k] = f[1]
            elif k in ("vocab", "decode"):
                g[k] = int(f[1])
            elif k == "state":
                g["state"] = tuple(int(x) for x in f[1:4])
            elif k == "tol":
                g["tol"][f[1]] = float(f[2])
            elif k == "case":
                g["cases"].append({"T": int(f[2]), "D": int(f[3]), "prefix": f[4]})
            else:
                raise ValueError(f"unknown record {k!r}")
        except (IndexError, ValueError) as e:
            raise CheckError(f"{rel(path)}:{n}: cannot parse {line!r} ({e})") from None
    if "format" not in g or "model_id" not in g or not g["cases"]:
        raise CheckError(f"{rel(path)} is not a complete golden index")
    return g


def read_raw(path: Path, dtype: str, count: int) -> np.ndarray:
    if not path.is_file():
        raise CheckError(f"golden file not found: {rel(path)}")
    a = np.fromfile(path, dtype=dtype)
    if a.size != count:
        raise CheckError(f"golden file {rel(path)} holds {a.size} values, expected {count} "
                         f"(a golden file of another model?)")
    return a


def load_cases(g: dict, gdir: Path):
    L, H, N = g["state"]
    V = g["vocab"]
    for c in g["cases"]:
        b = gdir / c["prefix"]
        yield (read_raw(b.with_name(b.name + ".ids.i64"), "<i8", c["T"]),
               read_raw(b.with_name(b.name + ".tokens.i64"), "<i8", c["D"]),
               read_raw(b.with_name(b.name + ".logits.f32"), "<f4", (c["T"] + c["D"]) * V).reshape(-1, V),
               read_raw(b.with_name(b.name + ".state.f32"), "<f4", L * H * N).reshape(L, 1, H, N))


# ---- metrics -----------------------------------------------------------------------------------

def compare(g: dict, runs) -> dict:
    """runs: [(logits [P, V], state [L, 1, H, N], ref_logits, ref_state)] -> metrics + verdict."""
    max_abs, err_sq, ref_sq, min_cos, agree, pos, state_rel, finite = 0.0, 0.0, 0.0, 1.0, 0, 0, 0.0, True
    tokens = []
    for out, st, ref, ref_st in runs:
        o, r = out.astype(np.float64), ref.astype(np.float64)
        finite &= bool(np.all(np.isfinite(o)) and np.all(np.isfinite(st)))
        max_abs = max(max_abs, float(np.max(np.abs(o - r))))
        err_sq += float(np.sum((o - r) ** 2))
        ref_sq += float(np.sum(r ** 2))
        no, nr = np.linalg.norm(o, axis=-1), np.linalg.norm(r, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.sum(o * r, axis=-1) / (no * nr)
        cos = np.where((no == 0) & (nr == 0), 1.0, np.where((no == 0) | (nr == 0), 0.0, cos))
        min_cos = min(min_cos, float(np.min(cos)))
        t = np.argmax(o, axis=-1)
        tokens.append([int(x) for x in t])
        agree += int(np.sum(t == np.argmax(r, axis=-1)))
        pos += t.size
        for layer in range(st.shape[0]):
            e = np.linalg.norm(st[layer].astype(np.float64) - ref_st[layer])
            n = np.linalg.norm(ref_st[layer].astype(np.float64))
            state_rel = max(state_rel, float(e / n) if n else (0.0 if e == 0 else float("inf")))
    m = {"max_abs_err": max_abs, "rel_rms_err": (err_sq / ref_sq) ** 0.5 if ref_sq else float(err_sq > 0) * float("inf"),
         "min_cosine": min_cos, "token_agreement": agree / pos if pos else 1.0, "state_rel_err": state_rel}
    tol = g["tol"]
    bad = [] if finite else ["non-finite values in logits or state"]
    for k, v in m.items():
        lim = tol[k]
        ok = v >= lim if k in ("min_cosine", "token_agreement") else v <= lim
        if not ok:
            bad.append(f"{k} {v:.6g} {'<' if k in ('min_cosine', 'token_agreement') else '>'} {lim:.6g}")
    m.update(ok=not bad, violations=bad, tokens=tokens)
    return m


def run_cases(g: dict, gdir: Path, step):
    """step(ids [1, t] int64, state [L, 1, H, N] float32) -> (logits [1, t, V], state_out)."""
    L, H, N = g["state"]
    runs = []
    for ids, fed, ref, ref_st in load_cases(g, gdir):
        state = np.zeros((L, 1, H, N), np.float32)
        logits, state = step(ids[None, :], state)
        outs = [np.asarray(logits, np.float32)[0]]
        for t in fed:
            logits, state = step(np.asarray([[t]], np.int64), state)
            outs.append(np.asarray(logits, np.float32)[0])
        out = np.concatenate(outs, axis=0)
        if out.shape != ref.shape:
            raise CheckError(f"logits have shape {out.shape}, golden/{g['cases'][len(runs)]['prefix']}.logits.f32 "
                             f"is {ref.shape}")
        runs.append((out, np.asarray(state, np.float32), ref, ref_st))
    return compare(g, runs)


# ---- backends ------------------------------------------------------------------------------------

def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Skip(f"onnxruntime not importable ({e})") from None
    return ort


def _check_model_meta(sess, path: Path, g: dict) -> None:
    meta = sess.get_modelmeta().custom_metadata_map
    if meta.get("hla_deploy.op_contract_version") != CONTRACT_VERSION:
        raise CheckError(f"{rel(path)}: op contract version {meta.get('hla_deploy.op_contract_version')}, "
                         f"this checker knows {CONTRACT_VERSION}")
    mid = meta.get("hla_deploy.model_id")
    if mid != g["model_id"]:
        raise CheckError(f"golden/index.txt was recorded from model {g['model_id']}, but {rel(path)} is "
                         f"model {mid} (golden files of another model)")


def ort_step(g: dict, model: Path, library, provider: str):
    ort = _ort()
    if provider == "CUDAExecutionProvider" and provider not in ort.get_available_providers():
        raise Skip(f"this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider")
    if not model.is_file():
        raise CheckError(f"model file missing: {rel(model)}")
    so = ort.SessionOptions()
    if library is not None:
        if not library.is_file():
            raise CheckError(f"missing library {rel(library)} (run ./build.sh)")
        try:
            so.register_custom_ops_library(str(library))
        except Exception as e:
            raise CheckError(f"could not load the custom-op library {rel(library)} (built for another "
                             f"ONNX Runtime?): {e}") from None
    try:
        providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        sess = ort.InferenceSession(str(model), so, providers=providers)
    except Exception as e:
        raise CheckError(f"ONNX Runtime could not load {rel(model)}: {e}") from None
    if provider not in sess.get_providers():
        raise CheckError(f"{provider} could not be initialised for {rel(model)}")
    _check_model_meta(sess, model, g)
    return lambda ids, st: sess.run(["logits", "state_out"], {"input_ids": ids, "state": st})


class _Cuda:
    """The few libcudart calls the TensorRT check needs (ctypes; no torch, no pycuda)."""

    def __init__(self):
        for name in ("libcudart.so", "libcudart.so.12", "/usr/local/cuda/lib64/libcudart.so"):
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise Skip("libcudart.so not found (CUDA runtime)")
        self.stream = ctypes.c_void_p()
        self._ok(self.lib.cudaStreamCreate(ctypes.byref(self.stream)), "cudaStreamCreate")

    def _ok(self, rc, what):
        if rc != 0:
            raise CheckError(f"{what} failed with CUDA error {rc}")

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        return p.value

    def to_device(self, ptr: int, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a)
        self._ok(self.lib.cudaMemcpy(ctypes.c_void_p(ptr), a.ctypes.data_as(ctypes.c_void_p),
                                     ctypes.c_size_t(a.nbytes), 1), "cudaMemcpy H2D")

    def to_host(self, ptr: int, a: np.ndarray) -> np.ndarray:
        self._ok(self.lib.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        self._ok(self.lib.cudaMemcpy(a.ctypes.data_as(ctypes.c_void_p), ctypes.c_void_p(ptr),
                                     ctypes.c_size_t(a.nbytes), 2), "cudaMemcpy D2H")
        return a


def _engine_info(path: Path) -> dict:
    if not path.is_file():
        raise CheckError(f"{rel(path)} missing: the engine was not built by this bundle's ./engine.sh")
    return dict(line.split(None, 1) for line in path.read_text().splitlines() if " " in line)


def trt_step(g: dict, plan: Path, plugin: Path):
    if not plan.is_file():
        raise Skip(f"no engine {rel(plan)} (run ./engine.sh to build one on this device)")
    try:
        import tensorrt as trt
    except ImportError as e:
        raise Skip(f"TensorRT's Python package not importable ({e})") from None
    info = _engine_info(plan.with_name("ENGINE_INFO"))
    if info.get("tensorrt", "").strip() != trt.__version__:
        raise CheckError(f"{rel(plan)} was built with TensorRT {info.get('tensorrt', '?').strip()}, this device "
                         f"has {trt.__version__}: re-run ./engine.sh")
    if not plugin.is_file():
        raise CheckError(f"missing library {rel(plugin)} (run ./build.sh)")
    if info.get("plugin_sha256", "").strip() != hashlib.sha256(plugin.read_bytes()).hexdigest():
        raise CheckError(f"{rel(plan)} was built with another {rel(plugin)}: re-run ./engine.sh")
    cuda = _Cuda()
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    registry = runtime.get_plugin_registry()
    if registry.load_library(str(plugin)) is None:
        raise CheckError(f"TensorRT could not load {rel(plugin)} (built for another TensorRT?)")
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise CheckError(f"TensorRT could not deserialize {rel(plan)} (built with another TensorRT or GPU?)")
    ctx = engine.create_execution_context()
    ids_dtype = np.int32 if engine.get_tensor_dtype("input_ids") == trt.DataType.INT32 else np.int64
    V = g["vocab"]

    def step(ids, st):
        B, T = ids.shape
        ids = np.ascontiguousarray(ids, ids_dtype)
        logits = np.empty((B, T, V), np.float32)
        st_out = np.empty_like(st)
        bufs = {n: cuda.malloc(a.nbytes) for n, a in (("input_ids", ids), ("state", st), ("logits", logits),
                                                        ("state_out", st_out))}
        try:
            cuda.to_device(bufs["input_ids"], ids)
            cuda.to_device(bufs["state"], st)
            if not (ctx.set_input_shape("input_ids", ids.shape) and ctx.set_input_shape("state", st.shape)):
                raise CheckError(f"{rel(plan)} rejects input_ids {ids.shape} (profile too small?)")
            for n, p in bufs.items():
                ctx.set_tensor_address(n, p)
            if not ctx.execute_async_v3(cuda.stream.value or 0):
                raise CheckError(f"TensorRT execute_async_v3 failed on {rel(plan)}")
            return cuda.to_host(bufs["logits"], logits), cuda.to_host(bufs["state_out"], st_out)
        finally:
            for p in bufs.values():
                cuda.lib.cudaFree(ctypes.c_void_p(p))
    return step


def make_step(name: str, g: dict):
    if name == "ort-cpu":
        return ort_step(g, HERE / "model" / "model.onnx", HERE / "build" / "lib" / "libhla_ort_op.so",
                        "CPUExecutionProvider")
    if name == "ort-cuda":
        return ort_step(g, HERE / "model" / "model.onnx", HERE / "build" / "lib" / "libhla_ort_op.so",
                        "CUDAExecutionProvider")
    if name == "onnx-standard":
        return ort_step(g, HERE / "model" / "model_standard.onnx", None, "CPUExecutionProvider")
    if name == "trt":
        return trt_step(g, HERE / "build" / "model.plan", HERE / "build" / "lib" / "libhla_trt_plugin.so")
    raise ValueError(name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="golden-output check of an hla-deploy bundle")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--json", action="store_true", help="one JSON line per backend")
    args = ap.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        print(f"hla_check: error: unknown backends {unknown}; expected some of {', '.join(BACKENDS)}", file=sys.stderr)
        return 2
    try:
        g = read_index(HERE / "golden" / "index.txt")
    except CheckError as e:
        print(f"hla_check: error: {e}", file=sys.stderr)
        return 1
    rows, ok_all, ran = [], True, 0
    for name in names:
        try:
            m = run_cases(g, HERE / "golden", make_step(name, g))
            ran += 1
            ok_all &= m["ok"]
            rows.append((name, m, "PASS" if m["ok"] else "FAIL"))
        except Skip as e:
            if name == "ort-cpu":
                ok_all = False
                rows.append((name, None, f"FAIL: {e}"))
            else:
                rows.append((name, None, f"skipped: {e}"))
        except CheckError as e:
            ok_all = False
            rows.append((name, None, f"FAIL: {e}"))
    if args.json:
        for name, m, result in rows:
            print(json.dumps({"backend": name, "result": result, **(m or {})}))
    else:
        print(f"{'backend':<15} {'max_abs_err':>12} {'rel_rms_err':>12} {'min_cosine':>12} {'token_agree':>12} "
              f"{'state_rel_err':>13}  result")
        for name, m, result in rows:
            if m:
                print(f"{name:<15} {m['max_abs_err']:12.3g} {m['rel_rms_err']:12.3g} {m['min_cosine']:12.7f} "
                      f"{m['token_agreement']:12.4f} {m['state_rel_err']:13.3g}  {result}")
                for v in m["violations"]:
                    print(f"  out of tolerance: {v}")
            else:
                print(f"{name:<15} {'':>12} {'':>12} {'':>12} {'':>12} {'':>13}  {result}")
        t = g["tol"]
        print(f"{'tolerance':<15} {t['max_abs_err']:12.3g} {t['rel_rms_err']:12.3g} {t['min_cosine']:12.7f} "
              f"{t['token_agreement']:12.4f} {t['state_rel_err']:13.3g}  ({g.get('dtype', '?')}, reference "
              f"{g.get('reference', '?')}, {len(g['cases'])} cases)")
    ok = ok_all and ran > 0
    print("check: PASS" if ok else "check: FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
