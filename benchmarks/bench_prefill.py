"""Prefill benchmark of the hla2 Triton kernels against causal SDPA and the torch chunk form.

    PYTHONPATH=. python benchmarks/bench_prefill.py [--T 2048 8192] [--out bench.json]
    python benchmarks/bench_prefill.py --smoke     # tiny shapes, seconds; the CPU when no GPU


B=4, H=8, d=dv=64, bfloat16 on one CUDA GPU (defaults). For each T prints one JSON object:
median times (ms, triton.testing.do_bench) of
- triton_fwd: hla_attention_triton forward with output_final_state=True (what a prefill needs),
  split into the two launches of its plan (hla_deploy/ops/triton/launch_plan.py; fwd_h:
  sequential state scan, fwd_o: parallel outputs); --sweep times the state scan for several
  (block_k, block_v, num_warps) (launch_plan.plan(blocks=...)) and the split uses the fastest;
- triton_fwd_bwd: forward + backward (gradients of q, k, v);
- sdpa_fwd / sdpa_fwd_bwd: torch.nn.functional.scaled_dot_product_attention(is_causal=True) on
  the same shape ([B, H, T, d] layout prepared beforehand);
- chunk_fwd / chunk_fwd_bwd: hla_deploy.ops.hla_attention(backend="chunk") (plain PyTorch,
  float32 inside, autograd for the backward);
and the ratios of the Triton times to both, plus a check of the Triton output against the
chunk form (relative RMS). Everything is measured in the same process, side by side.
The last stdout line is one JSON object {"benchmark": "bench_prefill", "smoke": ..., "results":
[one object per T]}.

--smoke: B=1, H=2, d=16, T=64, float32, few repetitions. Without a GPU it runs on the CPU with
the kernels under the Triton interpreter (TRITON_INTERPRET=1, set before Triton is imported)
and wall-clock medians instead of triton.testing.do_bench: it checks that the benchmark runs
(numbers are not GPU timings). Without a GPU and without --smoke it prints
{"benchmark": "bench_prefill", "skipped": reason} and exits 0.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # hla_deploy without installing
NAME = "bench_prefill"


def wall_bench(fn, warmup: int = 1, rep: int = 3) -> float:
    """Median wall-clock ms of fn() (CPU smoke runs; do_bench needs CUDA)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(rep):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--T", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--decay", type=float, default=1.0)
    ap.add_argument("--no-chunk", action="store_true", help="skip the torch chunk form")
    ap.add_argument("--out", default=None, help="also write the JSON list here")
    ap.add_argument("--sweep", action="store_true",
                    help="first time the state-scan kernel for several (block_k, block_v) and use the fastest")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes (B=1, H=2, d=16, T=64, float32), seconds; the CPU under the "
                         "Triton interpreter when there is no GPU")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.smoke:
        args.B, args.H, args.d, args.T, args.dtype = 1, 2, 16, [64], "float32"
        if not cuda:
            os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    if not cuda and not args.smoke:
        print(json.dumps({"benchmark": NAME, "skipped": "needs a CUDA GPU (torch.cuda.is_available() "
                          "is False); --smoke runs it on the CPU under the Triton interpreter"}))
        return 0
    import triton
    dev = "cuda" if cuda else "cpu"
    if cuda and not args.smoke:
        from triton.testing import do_bench
        bench = lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median")  # noqa: E731
    elif cuda:
        from triton.testing import do_bench
        bench = lambda fn: do_bench(fn, warmup=2, rep=5, return_mode="median")  # noqa: E731
    else:
        bench = wall_bench

    from hla_deploy.ops import hla_attention
    from hla_deploy.ops.triton import hla_attention_triton
    from hla_deploy.ops.triton import launch_plan as lp
    from hla_deploy.ops.triton.utils import decay_vector

    dt = getattr(torch, args.dtype)
    B, H, d = args.B, args.H, args.d
    results = []
    for T in args.T:
        torch.manual_seed(T)
        q = (torch.randn(B, T, H, d, device=dev) / d ** 0.5).to(dt)
        k = (torch.randn(B, T, H, d, device=dev) / d ** 0.5).to(dt)
        v = torch.randn(B, T, H, d, device=dev).to(dt)
        do = torch.randn(B, T, H, d, device=dev).to(dt)
        r = {"B": B, "T": T, "H": H, "d": d, "dv": d, "dtype": args.dtype, "decay": args.decay,
             "device": torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)",
             "torch": torch.__version__, "triton": triton.__version__}

        def tri_fwd():
            return hla_attention_triton(q, k, v, "hla2", args.decay, False, 1e-6, 0.0, None, True)

        gam = decay_vector([args.decay] * H, q.device)            # [H] float32
        st_in = torch.zeros(B, H, lp.plan("hla2", False, False, d, d, dt).state_size, device=dev)
        st_out, o_buf = torch.empty_like(st_in), torch.empty_like(v)

        def launches_of(p):
            """(fwd_h, fwd_o) of plan p, each a no-argument function on preallocated buffers."""
            ws = lp.allocate_workspace(p, B, T, H, dev)
            bind = dict(ws, q=q, k=k, v=v, o=o_buf, decay=gam, state_in=st_in, state_out=st_out,
                        T=T, H=H, B=B, eps=1e-6, lam=0.0)
            sizes = lp.sizes_of(p, B, T, H)
            return [lambda x=x: lp.run_launch(x, bind, sizes) for x in p.launches], ws

        blocks = None
        if args.sweep:
            sweep = {}
            for bk, bv in ((16, 16), (16, 32), (32, 16), (32, 32), (16, 64), (64, 16), (64, 64)):
                for nw in (2, 4):
                    (fwd_h, _), _ = launches_of(lp.plan("hla2", False, False, d, d, dt, blocks=(bk, bv, nw)))
                    sweep[f"{bk}x{bv}w{nw}"] = bench(fwd_h)
            r["fwd_h_sweep_ms"] = sweep
            best = min(sweep, key=sweep.get)
            bk, bv = (int(x) for x in best.split("w")[0].split("x"))
            blocks = (bk, bv, int(best.split("w")[1]))
            r["fwd_h_sweep_best"] = list(blocks)
        plan = lp.plan("hla2", False, False, d, d, dt, blocks=blocks)   # what the timings below run
        r["plan"] = plan.name
        r["fwd_h_blocks_used"] = [plan.launches[0].constexprs["BK"], plan.launches[0].constexprs["BV"],
                                  plan.launches[0].num_warps]
        r["triton_fwd_ms"] = bench(tri_fwd)        # the default plan (blocks=None), as training runs it
        (fwd_h, fwd_o), ws = launches_of(plan)
        fwd_h()
        r["triton_fwd_h_ms"] = bench(fwd_h)
        r["triton_fwd_o_ms"] = bench(fwd_o)

        qg, kg, vg = (x.detach().clone().requires_grad_() for x in (q, k, v))

        def tri_fwd_bwd():
            o, _ = hla_attention_triton(qg, kg, vg, "hla2", args.decay, False, 1e-6, 0.0, None, False)
            o.backward(do)

        r["triton_fwd_bwd_ms"] = bench(tri_fwd_bwd)
        # backward kernels alone (the backward also re-runs fwd_h to recompute the chunk states)
        from hla_deploy.ops.triton.chunk_bwd import chunk_hla2_bwd_dh, chunk_hla2_bwd_dqkv
        NT = lp.sizes_of(plan, B, T, H)["NT"]
        hs, hm = ws["ws_s"].view(B * H, NT, d, d), ws["ws_m"].view(B * H, NT, d, d)
        (dhs, dhm, dhc), _ = chunk_hla2_bwd_dh(q, v, do, gam, None, None, None, 0.0, plan.chunk_size, False)
        r["triton_bwd_dh_ms"] = bench(lambda: chunk_hla2_bwd_dh(q, v, do, gam, None, None, None, 0.0,
                                                                plan.chunk_size, False))
        r["triton_bwd_dqkv_ms"] = bench(lambda: chunk_hla2_bwd_dqkv(q, k, v, do, gam, hs, hm, None, dhs, dhm,
                                                                    dhc, 0.0, plan.chunk_size))
        del ws, hs, hm, dhs, dhm, dhc

        qs, ks, vs, dos = (x.transpose(1, 2).contiguous() for x in (q, k, v, do))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        r["sdpa_fwd_ms"] = bench(lambda: sdpa(qs, ks, vs, is_causal=True))
        qsg, ksg, vsg = (x.detach().clone().requires_grad_() for x in (qs, ks, vs))
        r["sdpa_fwd_bwd_ms"] = bench(lambda: sdpa(qsg, ksg, vsg, is_causal=True).backward(dos))

        if not args.no_chunk:
            kw = dict(variant="hla2", decay=args.decay, output_final_state=True, backend="chunk")
            with torch.no_grad():
                o_c, s_c = hla_attention(q, k, v, **kw)
                o_t, s_t = tri_fwd()
            r["check_o_rel_rms_vs_chunk"] = float((o_t.float() - o_c.float()).norm() / o_c.float().norm())
            r["check_state_rel_rms_vs_chunk"] = float((s_t - s_c).norm() / s_c.norm())
            with torch.no_grad():
                r["chunk_fwd_ms"] = bench(lambda: hla_attention(q, k, v, **kw))
            kwb = dict(kw, output_final_state=False)
            r["chunk_fwd_bwd_ms"] = bench(lambda: hla_attention(qg, kg, vg, **kwb)[0].backward(do))
            r["fwd_speedup_vs_chunk"] = r["chunk_fwd_ms"] / r["triton_fwd_ms"]
            r["fwd_bwd_speedup_vs_chunk"] = r["chunk_fwd_bwd_ms"] / r["triton_fwd_bwd_ms"]
        r["fwd_time_ratio_to_sdpa"] = r["triton_fwd_ms"] / r["sdpa_fwd_ms"]
        r["fwd_bwd_time_ratio_to_sdpa"] = r["triton_fwd_bwd_ms"] / r["sdpa_fwd_bwd_ms"]
        results.append(r)
        if not args.smoke:
            print(json.dumps(r), flush=True)
        if cuda:
            torch.cuda.empty_cache()
    print(json.dumps({"benchmark": NAME, "smoke": args.smoke, "results": results}), flush=True)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
