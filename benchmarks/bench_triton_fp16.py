"""float16 vs bfloat16: the Triton forward prefill (the launch plan), each timed from a CUDA graph.

    PYTHONPATH=. python benchmarks/bench_triton_fp16.py [--reps 200] [--out bench_triton_fp16.json]
    PYTHONPATH=. python benchmarks/bench_triton_fp16.py --smoke   # tiny shapes; no GPU: interpreter

hla2 (decay 0.95, no normalize/ridge) and, with --all-options, hla2 normalize+ridge and ahla;
H = 8, d = dv = 64, warm float32 state in, final state out, shapes (B, T) = (1, 2048),
(1, 8192), (8, 2048). Per shape and dtype: ms = median over --reps replays of a CUDA graph
holding one `hla_attention_triton` forward (the plan's fwd_h + fwd_o; after two eager warm-up
calls), and `ms_do_bench` from triton.testing.do_bench (eager launches) for comparison.
Per shape: fp16_over_bf16 = fp16 ms / bf16 ms (issue 18's target: <= 1.2), and rel_rms_vs_fp32
of each dtype's o against the float32 plan on the same (dtype-rounded) inputs (a sanity check,
not a test). The last stdout line is one JSON object {"benchmark": "bench_triton_fp16",
"smoke": ..., "device": ..., "rows": [...], "ratios": [...]}.
--smoke without a GPU: B=1, T=64, H=2, d=16 under the Triton interpreter with wall-clock times
(checks that the script runs; not GPU timings, and the interpreter's bf16 tl.dot is wrong).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
NAME = "bench_triton_fp16"
SHAPES = ((1, 2048), (1, 8192), (8, 2048))


def graph_ms(fn, reps: int) -> float:
    """Median ms of one replay of a CUDA graph holding one call of fn."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm-up: Triton JIT compiles here
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


def wall_ms(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--all-options", action="store_true", help="also hla2 normalize+ridge and ahla")
    ap.add_argument("--out", default=None, help="also write the JSON summary here")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; the CPU interpreter when there is no GPU")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    H, d, shapes, reps = 8, 64, SHAPES, args.reps
    if args.smoke:
        H, d, shapes, reps = 2, 16, ((1, 64),), 2
        if not cuda:
            os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    if not cuda and not args.smoke:
        print(json.dumps({"benchmark": NAME, "skipped": "needs a CUDA GPU; --smoke runs it on the CPU "
                          "under the Triton interpreter"}))
        return 0
    import triton
    from hla_deploy.ops.state import state_size
    from hla_deploy.ops.triton import hla_attention_triton
    dev = "cuda" if cuda else "cpu"
    timer = (lambda fn: graph_ms(fn, reps)) if cuda else (lambda fn: wall_ms(fn, reps))
    options = [("hla2", False, 0.0)] + ([("hla2", True, 0.25), ("ahla", True, 0.0)] if args.all_options else [])
    rows, ratios = [], []
    for variant, norm, ridge in options:
        for B, T in shapes:
            gen = torch.Generator(device=dev).manual_seed(T)
            q = torch.randn(B, T, H, d, device=dev, generator=gen) / d ** 0.5
            k = torch.randn(B, T, H, d, device=dev, generator=gen) / d ** 0.5
            v = torch.randn(B, T, H, d, device=dev, generator=gen)
            if norm:
                q, k = q.abs(), k.abs()
            st = torch.rand(B, H, state_size(variant, d, d, norm, ridge), device=dev, generator=gen)
            per = {}
            for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                qd, kd, vd = q.to(dt), k.to(dt), v.to(dt)

                def fwd():
                    return hla_attention_triton(qd, kd, vd, variant, 0.95, norm, 1e-6, ridge, st, True)

                with torch.no_grad():
                    o = fwd()[0].float()
                    o32 = hla_attention_triton(qd.float(), kd.float(), vd.float(), variant, 0.95, norm,
                                               1e-6, ridge, st, True)[0]
                row = {"variant": variant, "normalize": norm, "ridge": ridge, "B": B, "T": T, "H": H,
                       "d": d, "dv": d, "dtype": name,
                       "rel_rms_vs_fp32": float((o - o32).norm() / o32.norm())}
                with torch.no_grad():
                    row["ms"] = round(timer(fwd), 5)
                    if cuda:
                        row["ms_do_bench"] = round(triton.testing.do_bench(fwd, warmup=25, rep=100,
                                                                           return_mode="median"), 5)
                per[name] = row
                rows.append(row)
                print(json.dumps(row), flush=True)
            ratios.append({"variant": variant, "normalize": norm, "ridge": ridge, "B": B, "T": T,
                           "fp16_over_bf16": round(per["fp16"]["ms"] / per["bf16"]["ms"], 3),
                           "target": 1.2})
    summary = {"benchmark": NAME, "smoke": args.smoke,
               "device": torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter; not timings)",
               "torch": torch.__version__, "triton": triton.__version__, "rows": rows, "ratios": ratios}
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(args.out + ".tmp", args.out)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
