"""Prefill and decode of the deployment CUDA kernels (plugins/common), each timed from a CUDA graph.

    PYTHONPATH=. python benchmarks/bench_cuda_prefill.py [--out bench_cuda_prefill.json]
    PYTHONPATH=. python benchmarks/bench_cuda_prefill.py --smoke     # tiny shapes; no GPU: skip line

One layer, hla2, H=8, d=dv=64, decay 0.95, float32 state (issue #11's table). Per (B, T, dtype):

- chunked:  hla::forward_cuda with its workspace (the chunked prefill, hla_cuda_chunk.cuh);
- serial:   hla::forward_cuda without a workspace (the token-serial kernel, one block per head);
- triton:   hla_deploy.ops.triton.hla_attention_triton forward (initial and final state);
- sdpa:     torch causal scaled_dot_product_attention on the same q, k, v ([B, H, T, d]).
Each is captured once in a torch.cuda.CUDAGraph (after two eager warm-up calls) and the graph
replayed `--reps` times; ms = median of CUDA-event times per replay. Decode (T = 1), B = 1 and 64:
L = 12 layers with distinct states stepped in one graph (states do not stay in L2 between steps
of the same layer, as in a model), us per layer = median / L.
Output: one JSON object per measurement, then (last line) one summary object
{"benchmark": "bench_cuda_prefill", "device": ..., "prefill": [...], "decode": [...], "targets": [...]}.
Without a CUDA device: {"benchmark": "bench_cuda_prefill", "skipped": "no CUDA device"} and exit 0.
Targets (issue #11, H200, fp16 and bf16): B=1 T=2048 <= 0.07 ms, B=1 T=8192 <= 0.25 ms,
B=8 T=2048 <= 0.15 ms; decode B=1 <= 4 us per layer.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS_MS = {(1, 2048): 0.07, (1, 8192): 0.25, (8, 2048): 0.15}
DECODE_TARGET_US = 4.0


def load_capi():
    spec = importlib.util.spec_from_file_location("hla_capi", ROOT / "plugins" / "common" / "hla_capi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load(mod.build(cuda=True, jobs=8))


def graph_ms(torch, fn, reps: int) -> float:
    """Median ms of one replay of a CUDA graph holding one call of fn."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm-up: builds, the one-time shared-memory attribute, Triton JIT
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
           "chunked_path": capi.prefill_chunked("hla2", B, T, H, d, d, dtype_name=dtype_name),
           "workspace_bytes": ws_bytes}
    plan = capi.chunk_plan("hla2", B, T, H, d, d, dtype_name=dtype_name)
    row["chunk_tokens"], row["smem_state"], row["smem_out"] = plan["BT"], plan["smem_state"], plan["smem_out"]

    def timed(name, fn):
        try:
            row[name + "_ms"] = round(graph_ms(torch, fn, reps), 5)
        except Exception as e:  # report, keep going (e.g. Triton unavailable)
            row[name + "_error"] = f"{type(e).__name__}: {e}"[:300]

    timed("chunked", lambda: capi.forward_cuda(q, k, v, st, chunked=True, **kw))
    timed("serial", lambda: capi.forward_cuda(q, k, v, st, chunked=False, **kw))
    try:
        from hla_deploy.ops.triton import hla_attention_triton
        timed("triton", lambda: hla_attention_triton(q, k, v, "hla2", decay=decay, initial_state=st,
                                                     output_final_state=True))
    except Exception as e:
        row["triton_error"] = f"{type(e).__name__}: {e}"[:300]
    qs, ks, vs = (x.transpose(1, 2) for x in (q, k, v))
    timed("sdpa", lambda: torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True))
    # agreement of the two CUDA paths on this input (sanity, not a test)
    o_c, s_c = capi.forward_cuda(q, k, v, st, variant="hla2", decay=[decay], chunked=True)
    o_s, s_s = capi.forward_cuda(q, k, v, st, variant="hla2", decay=[decay], chunked=False)
    torch.cuda.synchronize()
    row["chunked_vs_serial_rel_o"] = float((o_c.float() - o_s.float()).norm() / o_s.float().norm())
    row["chunked_vs_serial_rel_state"] = float((s_c - s_s).norm() / s_s.norm())
    target = TARGETS_MS.get((B, T)) if dtype_name != "float32" else None
    if target is not None:
        row["target_ms"] = target
        if "chunked_ms" in row:
            row["meets_target"] = row["chunked_ms"] <= target
    if "chunked_ms" in row and "serial_ms" in row:
        row["speedup_vs_serial"] = round(row["serial_ms"] / row["chunked_ms"], 2)
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
    ap.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16", "float32"])
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
    shapes = [(1, 128)] if args.smoke else [(1, 512), (1, 2048), (1, 8192), (8, 2048)]
    dtypes = ["float16"] if args.smoke else args.dtypes
    reps = 3 if args.smoke else args.reps
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
                "chunked_ms": r.get("chunked_ms"), "met": r.get("meets_target")}
               for r in prefill if "target_ms" in r]
    summary = {"benchmark": "bench_cuda_prefill", "device": torch.cuda.get_device_name(),
               "torch": torch.__version__, "smoke": bool(args.smoke), "prefill": prefill, "decode": decode,
               "targets": targets}
    if args.out:
        from hla_deploy._atomic import atomic_write_text
        atomic_write_text(args.out, json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
