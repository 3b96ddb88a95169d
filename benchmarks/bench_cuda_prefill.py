"""Prefill and decode of the deployment CUDA path (plugins/common), each timed from a CUDA graph.

    PYTHONPATH=. python benchmarks/bench_cuda_prefill.py [--out bench_cuda_prefill.json]
    PYTHONPATH=. python benchmarks/bench_cuda_prefill.py --smoke     # tiny shapes; no GPU: skip line

One layer, hla2, H=8, d=dv=64, decay 0.95, float32 state (issue #18's table). Per (B, T, dtype):

- aot:     hla::forward_cuda with its workspace through the capi: the AOT-compiled Triton cubins
           run by the C++ launcher (plugins/common/hla_aot_launcher.h);
- triton:  hla_deploy.ops.triton.hla_attention_triton forward, JIT (initial and final state);
- fla:     fla.ops.simple_gla.chunk_simple_gla (first order, per-head decay g_gamma) when `fla`
           (flash-linear-attention 0.6.0) is importable, else a "fla_error" key;
- sdpa:    torch causal scaled_dot_product_attention on the same q, k, v ([B, H, T, d]).
Each is captured once in a torch.cuda.CUDAGraph (after two eager warm-up calls) and the graph
replayed `--reps` times; ms = median of CUDA-event times per replay. Decode (T = 1), B = 1 and 64:
L = 12 layers with distinct states stepped in one graph by the token-serial kernel (states do not
stay in L2 between steps of the same layer, as in a model), us per layer = median / L.
The AOT cubins for hla2-n0-c0-d64-dv64-{fp16,bf16,fp32} are built first when the launcher's kernel
directories lack them (`hla-deploy build-plugins --kernels-only --arch <GPU> --config ...`, into the
cache; nothing is rebuilt when they are there).
Output: one JSON object per measurement, then (last line) one summary object
{"benchmark": "bench_cuda_prefill", "device": ..., "prefill": [...], "decode": [...], "targets": [...]}.
Without a CUDA device: {"benchmark": "bench_cuda_prefill", "skipped": "no CUDA device"} and exit 0.
Targets (issue #18, H200, fp16 and bf16, ms per layer): B1 T2048 <= 0.05, B1 T8192 <= 0.20,
B8 T2048 <= 0.12, B1 T32768 <= 0.80, and aot <= 2.5x fla at every shape; decode B=1 <= 4.1 us/layer.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS_MS = {(1, 2048): 0.05, (1, 8192): 0.20, (8, 2048): 0.12, (1, 32768): 0.80}
FLA_RATIO_TARGET = 2.5
DECODE_TARGET_US = 4.1
SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def load_capi():
    spec = importlib.util.spec_from_file_location("hla_capi", ROOT / "plugins" / "common" / "hla_capi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load(mod.build(cuda=True, jobs=8))


def ensure_kernels(torch, capi, dtypes, H=8, d=64):
    """Builds the benchmark's AOT cubins when no kernel directory has them; returns a note or None."""
    missing = [dt for dt in dtypes if not capi.prefill_aot("hla2", 1, 128, H, d, d, dtype_name=dt)]
    capi.take_log()
    if not missing:
        return None
    major, minor = torch.cuda.get_device_capability()
    cmd = [sys.executable, "-m", "hla_deploy", "build-plugins", "--kernels-only", "--arch", f"{major}{minor}"]
    for dt in missing:
        cmd += ["--config", f"hla2-n0-c0-d{d}-dv{d}-{SHORT[dt]}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    capi.aot_reset()  # re-read the kernel directories
    if proc.returncode != 0:
        return f"{' '.join(cmd[2:])} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-300:]}"
    return f"built: {' '.join(cmd[2:])}"


def graph_ms(torch, fn, reps: int) -> float:
    """Median ms of one replay of a CUDA graph holding one call of fn."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm-up: module loads, the one-time shared-memory attribute, Triton JIT
            fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def fla_fn(torch, q, k, v, decay):
    """chunk_simple_gla with a per-head log decay (fla 0.6: g_gamma), or None when fla is missing."""
    from fla.ops.simple_gla import chunk_simple_gla
    H = q.shape[2]
    g_gamma = torch.full((H,), math.log(decay), device=q.device, dtype=torch.float32)
    return lambda: chunk_simple_gla(q, k, v, g_gamma=g_gamma, output_final_state=True)


def prefill_row(torch, capi, B, T, dtype_name, reps, H=8, d=64, decay=0.95):
    dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = (torch.randn(B, T, H, d, device="cuda", generator=gen) / d ** 0.5).to(dt)
    k = (torch.randn(B, T, H, d, device="cuda", generator=gen) / d ** 0.5).to(dt)
    v = torch.randn(B, T, H, d, device="cuda", generator=gen).to(dt)
    N = capi.state_size("hla2", d, d)
    st = torch.zeros(B, H, N, device="cuda")
    st_out = torch.empty_like(st)
    o = torch.empty_like(v)
    ws_bytes = capi.cuda_workspace_size("hla2", B, T, H, d, d, dtype_name=dtype_name, decay=[decay])
    ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device="cuda")
    kw = dict(variant="hla2", decay=[decay], state_out=st_out, o=o, workspace=ws)
    row = {"B": B, "T": T, "H": H, "d": d, "dtype": dtype_name, "decay": decay,
           "aot_path": capi.prefill_aot("hla2", B, T, H, d, d, dtype_name=dtype_name), "workspace_bytes": ws_bytes}

    def timed(name, fn):
        try:
            row[name + "_ms"] = round(graph_ms(torch, fn, reps), 5)
        except Exception as e:  # report, keep going (e.g. Triton or fla unavailable)
            row[name + "_error"] = f"{type(e).__name__}: {e}"[:300]

    timed("aot", lambda: capi.forward_cuda(q, k, v, st, **kw))
    try:
        from hla_deploy.ops.triton import hla_attention_triton
        triton_call = lambda: hla_attention_triton(q, k, v, "hla2", decay=decay, initial_state=st,  # noqa: E731
                                                   output_final_state=True)
        timed("triton", triton_call)
    except Exception as e:
        triton_call = None
        row["triton_error"] = f"{type(e).__name__}: {e}"[:300]
    try:
        timed("fla", fla_fn(torch, q, k, v, decay))
    except Exception as e:
        row["fla_error"] = f"{type(e).__name__}: {e}"[:300]
    qs, ks, vs = (x.transpose(1, 2) for x in (q, k, v))
    timed("sdpa", lambda: torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True))
    # the AOT path against the Triton JIT forward on this input (the same kernels; not a test)
    if triton_call is not None and row["aot_path"]:
        o_a, s_a = capi.forward_cuda(q, k, v, st, variant="hla2", decay=[decay])
        o_t, s_t = triton_call()
        torch.cuda.synchronize()
        row["aot_vs_triton_max_abs_o"] = float((o_a.float() - o_t.float()).abs().max())
        row["aot_vs_triton_max_abs_state"] = float((s_a - s_t).abs().max())
    target = TARGETS_MS.get((B, T)) if dtype_name != "float32" else None
    if target is not None:
        row["target_ms"] = target
        if "aot_ms" in row:
            row["meets_target"] = row["aot_ms"] <= target
    if "aot_ms" in row and "fla_ms" in row:
        row["aot_over_fla"] = round(row["aot_ms"] / row["fla_ms"], 3)
        row["meets_fla_ratio"] = row["aot_over_fla"] <= FLA_RATIO_TARGET
    if "aot_ms" in row and "triton_ms" in row:
        row["aot_over_triton"] = round(row["aot_ms"] / row["triton_ms"], 3)
    return row


def decode_row(torch, capi, B, dtype_name, reps, layers=12, H=8, d=64, decay=0.95):
    dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    N = capi.state_size("hla2", d, d)
    q = (torch.randn(B, 1, H, d, device="cuda") / d ** 0.5).to(dt)
    k = (torch.randn(B, 1, H, d, device="cuda") / d ** 0.5).to(dt)
    v = torch.randn(B, 1, H, d, device="cuda").to(dt)
    states = [torch.zeros(B, H, N, device="cuda") for _ in range(layers)]
    outs = [torch.empty_like(v) for _ in range(layers)]

    def step_all():
        for st, o in zip(states, outs):
            capi.forward_cuda(q, k, v, st, variant="hla2", decay=[decay], state_out=st, o=o)

    ms = graph_ms(torch, step_all, reps)
    us = ms * 1000.0 / layers
    row = {"B": B, "T": 1, "H": H, "d": d, "dtype": dtype_name, "layers": layers,
           "decode_us_per_layer": round(us, 3)}
    if B == 1:
        row["target_us"] = DECODE_TARGET_US
        row["meets_target"] = us <= DECODE_TARGET_US
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, few reps (CI: no GPU -> skip line)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"])
    ap.add_argument("--out", default=None, help="also write the summary JSON here")
    args = ap.parse_args(argv)
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if not has_gpu:
        print(json.dumps({"benchmark": "bench_cuda_prefill", "skipped": "no CUDA device"}))
        return 0
    capi = load_capi()
    capi.capture_log(True)
    shapes = [(1, 128)] if args.smoke else [(1, 2048), (1, 8192), (8, 2048), (1, 32768)]
    dtypes = ["float16"] if args.smoke else args.dtypes
    reps = 3 if args.smoke else args.reps
    kernels_note = ensure_kernels(torch, capi, dtypes)
    prefill, decode = [], []
    for dtype_name in dtypes:
        for B, T in shapes:
            row = prefill_row(torch, capi, B, T, dtype_name, reps)
            print(json.dumps(row), flush=True)
            prefill.append(row)
    for dtype_name in dtypes:
        for B in ([1] if args.smoke else [1, 64]):
            row = decode_row(torch, capi, B, dtype_name, reps, layers=2 if args.smoke else 12)
            print(json.dumps(row), flush=True)
            decode.append(row)
    targets = [{"B": r["B"], "T": r["T"], "dtype": r["dtype"], "target_ms": r["target_ms"],
                "aot_ms": r.get("aot_ms"), "met": r.get("meets_target"), "aot_over_fla": r.get("aot_over_fla"),
                "fla_ratio_target": FLA_RATIO_TARGET, "fla_ratio_met": r.get("meets_fla_ratio")}
               for r in prefill if "target_ms" in r]
    targets += [{"B": r["B"], "T": 1, "dtype": r["dtype"], "target_us": r["target_us"],
                 "decode_us_per_layer": r["decode_us_per_layer"], "met": r["meets_target"]}
                for r in decode if "target_us" in r]
    summary = {"benchmark": "bench_cuda_prefill", "device": torch.cuda.get_device_name(),
               "torch": torch.__version__, "smoke": bool(args.smoke), "kernels": kernels_note,
               "warnings": [m for _, m in capi.take_log()], "prefill": prefill, "decode": decode,
               "targets": targets}
    if args.out:
        from hla_deploy._atomic import atomic_write_text
        atomic_write_text(args.out, json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
