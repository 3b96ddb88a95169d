"""Decode-step benchmark of the plugins/common kernels against torch and the memory-bandwidth floor.

    PYTHONPATH=. python benchmarks/bench_native_decode.py            # CPU  (B=16, H=16)
    PYTHONPATH=. python benchmarks/bench_native_decode.py --gpu      # CUDA (B=64, H=8)
    python benchmarks/bench_native_decode.py --smoke                 # tiny CPU run, seconds

One decode step (T=1) of one layer, hla2, d=dv=64, decay 0.95, float32 state. L layers with
distinct state buffers are stepped in turn, so the states do not sit in cache between steps
of the same layer (as in a real model); times are per layer. Printed as one JSON object:

- native:      hla::forward_cpu / hla::forward_cuda through the ctypes test library (CUDA:
               the L launches captured in one torch.cuda.CUDAGraph and replayed);
- torch_ops:   the same step in torch ops on contiguous S [BH,d,d], M [BH,d,dv]
               (S.baddbmm_(k, k^T, beta=g); u = S q; M.baddbmm_(u, v^T, beta=g^2); o = q^T M),
               CUDA: captured in a CUDA graph as well;
- recurrent (CPU only): hla_deploy.ops.hla_attention(backend="recurrent") on the [B,H,N] state;
- floor:       bytes of state read + written per layer / copy bandwidth, the copy bandwidth measured
               in the same run by large copies counting read + written bytes (CPU: 256 MB, best
               of numpy and torch; GPU: the fastest of 0.25 / 1 / 4 GB copies);
- prefill:     T=128 tokens through the native kernel (token loop) and the torch chunk form
               (hla_attention(backend="chunk")), tokens/s (GPU: eager launches, CUDA events).
Other variants (ahla, hla3) and bfloat16 activations are timed for the native kernel too.
The JSON object is printed on ONE line, the last of stdout ("benchmark": "bench_native_decode").
--smoke: the CPU path at B=2, H=2, 2 layers, 2 repetitions, an 8 MiB bandwidth copy and a
prefill of T=16 over 2 heads (checks that it runs; --gpu --smoke: the GPU path at B=2, H=2,
or a "skipped" line and exit 0 without a GPU).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAME = "bench_native_decode"


def load_capi(cuda: bool):
    spec = importlib.util.spec_from_file_location("hla_capi", ROOT / "plugins" / "common" / "hla_capi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load(mod.build(cuda=cuda, jobs=8 if cuda else 2))


def torch_step(S, M, q, k, v, g):
    """S [BH,d,d], M [BH,d,dv] updated in place; q,k [BH,d], v [BH,dv] -> o [BH,dv]."""
    import torch
    S.baddbmm_(k.unsqueeze(2), k.unsqueeze(1), beta=g)
    u = torch.bmm(S, q.unsqueeze(2))
    M.baddbmm_(u, v.unsqueeze(1), beta=g * g)
    return torch.bmm(q.unsqueeze(1), M).squeeze(1)


def median_time(fn, reps, inner=1, best=False):
    """Median (or best) over `reps` of the mean time of `inner` calls, seconds."""
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) / inner)
    return min(ts) if best else statistics.median(ts)


# ------------------------------------------------------------------------------------------------
def bench_cpu(args, capi):
    import torch
    from hla_deploy.ops import hla_attention
    B, H, d, dv, L, g = args.B or 16, args.H or 16, 64, 64, args.layers, 0.95
    BH = B * H
    rng = np.random.default_rng(0)
    res = {"device": "cpu", "B": B, "H": H, "d": d, "dv": dv, "layers_rotated": L, "decay": g,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    q = (rng.standard_normal((B, 1, H, d)) / 8).astype(np.float32)
    k = (rng.standard_normal((B, 1, H, d)) / 8).astype(np.float32)
    v = rng.standard_normal((B, 1, H, dv)).astype(np.float32)
    o = np.empty((B, 1, H, dv), np.float32)

    # copy bandwidth (read + written bytes): the best of numpy (one thread) and torch (all threads)
    src = np.ones((2 if args.smoke else 64) * 2 ** 20, np.float32)  # 256 MB (smoke: 8 MB)
    dst = np.empty_like(src)
    ts, td = torch.from_numpy(src), torch.from_numpy(dst)
    t_np = median_time(lambda: np.copyto(dst, src), 7, best=True)
    t_torch_copy = median_time(lambda: td.copy_(ts), 7, best=True)
    bw = 2 * src.nbytes / min(t_np, t_torch_copy)
    res["copy_GBps"] = {"numpy_1_thread": 2 * src.nbytes / t_np / 1e9,
                        "torch_all_threads": 2 * src.nbytes / t_torch_copy / 1e9,
                        "used_for_floor": bw / 1e9}
    del src, dst, ts, td

    out = {}
    for variant in ("hla2", "ahla", "hla3"):
        N = capi.state_size(variant, d, dv)
        states = [np.zeros((B, H, N), np.float32) for _ in range(L)]
        dec = [g] if variant != "hla3" else None
        it = iter(range(10 ** 12))

        def step():
            st = states[next(it) % L]
            capi.forward_cpu(q, k, v, st, variant=variant, decay=dec, state_out=st, o=o)
        step()
        t = median_time(step, args.reps, inner=L)
        t_best = median_time(step, args.reps, inner=L, best=True)
        floor = 2 * BH * N * 4 / bw
        out[variant] = {"N": N, "native_ms": t * 1e3, "native_best_ms": t_best * 1e3,
                        "floor_ms": floor * 1e3, "native_over_floor": t / floor,
                        "native_best_over_floor": t_best / floor}
    res["decode_fp32"] = out

    # torch ops step (hla2), and the package's recurrent backend
    torch.manual_seed(0)
    S = [torch.zeros(BH, d, d) for _ in range(L)]
    M = [torch.zeros(BH, d, dv) for _ in range(L)]
    tq, tk, tv = (torch.from_numpy(x.reshape(BH, -1)) for x in (q, k, v))
    it = iter(range(10 ** 12))

    def tstep():
        i = next(it) % L
        torch_step(S[i], M[i], tq, tk, tv, g)
    tstep()
    t_torch = median_time(tstep, args.reps, inner=L)
    N2 = capi.state_size("hla2", d, dv)
    st_t = [torch.zeros(B, H, N2) for _ in range(L)]
    qq, kk, vv = (torch.from_numpy(x) for x in (q, k, v))
    it = iter(range(10 ** 12))

    def rstep():
        i = next(it) % L
        _, st_t[i] = hla_attention(qq, kk, vv, variant="hla2", decay=g, initial_state=st_t[i],
                                   output_final_state=True, backend="recurrent")
    rstep()
    t_rec = median_time(rstep, args.reps, inner=L)
    t_nat = out["hla2"]["native_ms"] / 1e3
    res["hla2_vs_torch"] = {"native_ms": t_nat * 1e3, "torch_ops_ms": t_torch * 1e3,
                            "recurrent_backend_ms": t_rec * 1e3,
                            "speedup_vs_torch_ops": t_torch / t_nat,
                            "speedup_vs_recurrent_backend": t_rec / t_nat,
                            "native_over_floor": out["hla2"]["native_over_floor"]}

    # bf16 activations (state float32): same state traffic
    import torch as _t
    qb, kb, vb = (_t.from_numpy(x).to(_t.bfloat16).view(_t.int16).numpy().view(np.uint16)
                  for x in (q, k, v))
    ob = np.empty(o.shape, np.uint16)
    states = [np.zeros((B, H, N2), np.float32) for _ in range(L)]
    it = iter(range(10 ** 12))

    def bstep():
        st = states[next(it) % L]
        capi.forward_cpu(qb, kb, vb, st, variant="hla2", decay=[g], state_out=st, o=ob,
                         dtype_name="bfloat16")
    bstep()
    res["decode_bf16_hla2_native_ms"] = median_time(bstep, args.reps, inner=L) * 1e3

    # prefill T=128, B=1, H=16: native token loop vs the torch chunk form
    T, Bp, Hp = (16, 1, 2) if args.smoke else (128, 1, 16)
    qp = torch.randn(Bp, T, Hp, d) / 8
    kp = torch.randn(Bp, T, Hp, d) / 8
    vp = torch.randn(Bp, T, Hp, dv)
    stp = np.zeros((Bp, Hp, N2), np.float32)
    qn, kn, vn = (x.numpy() for x in (qp, kp, vp))
    t_nat_p = median_time(lambda: capi.forward_cpu(qn, kn, vn, stp, variant="hla2", decay=[g]), 5)
    t_chunk = median_time(lambda: hla_attention(qp, kp, vp, variant="hla2", decay=g,
                                                output_final_state=True, backend="chunk"), 5)
    o_nat, _ = capi.forward_cpu(qn, kn, vn, stp, variant="hla2", decay=[g])
    o_chk, _ = hla_attention(qp, kp, vp, variant="hla2", decay=g, backend="chunk")
    flops = 2 * Bp * Hp * T * (2 * d * d + 2 * d * dv)  # multiply-adds x2 of the token loop
    res["prefill"] = {"T": T, "B": Bp, "H": Hp,
        "native_ms": t_nat_p * 1e3, "chunk_backend_ms": t_chunk * 1e3,
        "native_tokens_per_s": Bp * T / t_nat_p, "native_GFLOPs": flops / t_nat_p / 1e9,
        "native_over_chunk_speedup": t_chunk / t_nat_p,
        "rel_rms_native_vs_chunk": float(np.linalg.norm(o_nat - o_chk.numpy()) /
                                         np.linalg.norm(o_chk.numpy()))}
    return res


# ------------------------------------------------------------------------------------------------
def bench_gpu(args, capi):
    import torch
    dev = torch.device("cuda")
    B, H, d, dv, L, g = args.B or 64, args.H or 8, 64, 64, args.layers, 0.95
    BH = B * H
    res = {"device": torch.cuda.get_device_name(), "B": B, "H": H, "d": d, "dv": dv,
           "layers_rotated": L, "decay": g, "torch": torch.__version__}
    torch.manual_seed(0)

    def graph_time(fn, replays=50):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=s):
            fn()
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        for _ in range(5):
            e0.record()
            for _ in range(replays):
                graph.replay()
            e1.record()
            torch.cuda.synchronize()
            ts.append(e0.elapsed_time(e1) / 1e3 / replays)
        return statistics.median(ts)

    def event_time(fn, iters=20):
        """Eager launches (no graph), for calls that may not be capturable."""
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        for _ in range(3):
            e0.record()
            for _ in range(iters):
                fn()
            e1.record()
            torch.cuda.synchronize()
            ts.append(e0.elapsed_time(e1) / 1e3 / iters)
        return statistics.median(ts)

    # copy bandwidth, read + written bytes: device-to-device copies of 0.25, 1 and 4 GB (CUDA
    # graph); the floor uses the fastest.
    copy = {}
    for gb in ((0.25,) if args.smoke else (0.25, 1, 4)):
        a = torch.empty(int(gb * 2 ** 28), device=dev)
        b = torch.empty_like(a)
        t_copy = graph_time(lambda: b.copy_(a), replays=10)
        copy[f"{gb}GB"] = 2 * a.numel() * 4 / t_copy / 1e9
        del a, b
    bw = max(copy.values()) * 1e9
    res["copy_GBps"] = copy
    torch.cuda.empty_cache()

    q = torch.randn(B, 1, H, d, device=dev) / 8
    k = torch.randn(B, 1, H, d, device=dev) / 8
    v = torch.randn(B, 1, H, dv, device=dev)
    out = {}
    for dtype_name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        qd, kd, vd = q.to(dt), k.to(dt), v.to(dt)
        od = torch.empty(B, 1, H, dv, device=dev, dtype=dt)
        for variant in (("hla2", "ahla", "hla3") if dtype_name == "fp32" else ("hla2",)):
            N = capi.state_size(variant, d, dv)
            states = [torch.zeros(B, H, N, device=dev) for _ in range(L)]
            dec = [g] if variant != "hla3" else None

            def layers():
                for st in states:
                    capi.forward_cuda(qd, kd, vd, st, variant=variant, decay=dec, state_out=st, o=od)
            t = graph_time(layers) / L
            floor = 2 * BH * N * 4 / bw
            out[f"{variant}_{dtype_name}"] = {"N": N, "native_us": t * 1e6, "floor_us": floor * 1e6,
                                              "native_over_floor": t / floor}
    res["decode"] = out

    S = [torch.zeros(BH, d, d, device=dev) for _ in range(L)]
    M = [torch.zeros(BH, d, dv, device=dev) for _ in range(L)]
    tq, tk, tv = (x.reshape(BH, -1) for x in (q, k, v))

    def tlayers():
        for i in range(L):
            torch_step(S[i], M[i], tq, tk, tv, g)
    t_torch = graph_time(tlayers) / L
    t_nat = out["hla2_fp32"]["native_us"] / 1e6
    res["hla2_vs_torch"] = {"native_us": t_nat * 1e6, "torch_ops_graph_us": t_torch * 1e6,
                            "speedup_vs_torch_ops": t_torch / t_nat,
                            "native_over_floor": out["hla2_fp32"]["native_over_floor"]}

    # prefill T=128 (token-serial kernel, state in shared memory) vs the torch chunk form
    from hla_deploy.ops import hla_attention
    T = 16 if args.smoke else 128
    qp = (torch.randn(B, T, H, d, device=dev) / 8)
    kp = (torch.randn(B, T, H, d, device=dev) / 8)
    vp = torch.randn(B, T, H, dv, device=dev)
    N2 = capi.state_size("hla2", d, dv)
    st0 = torch.zeros(B, H, N2, device=dev)
    stp = torch.empty_like(st0)
    op = torch.empty_like(vp)
    t_nat_p = event_time(lambda: capi.forward_cuda(qp, kp, vp, st0, variant="hla2", decay=[g],
                                                   state_out=stp, o=op))
    t_chunk = event_time(lambda: hla_attention(qp, kp, vp, variant="hla2", decay=g,
                                               output_final_state=True, backend="chunk"))
    o_chk, _ = hla_attention(qp, kp, vp, variant="hla2", decay=g, backend="chunk")
    res["prefill"] = {"T": T,"native_ms": t_nat_p * 1e3, "chunk_backend_graph_ms": t_chunk * 1e3,
                           "native_tokens_per_s": B * T / t_nat_p,
                           "native_over_chunk_speedup": t_chunk / t_nat_p,
                           "rel_rms_native_vs_chunk": float((op - o_chk).norm() / o_chk.norm())}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="benchmark the CUDA kernels (default: CPU)")
    ap.add_argument("--B", type=int, default=None, help="batch (default 16 CPU, 64 GPU)")
    ap.add_argument("--H", type=int, default=None, help="heads (default 16 CPU, 8 GPU)")
    ap.add_argument("--layers", type=int, default=8, help="distinct state buffers stepped in turn")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--lib", default=None, help="prebuilt libhla_kernels_capi.so")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, seconds (checks that it runs)")
    ap.add_argument("--probe", action="store_true",
                    help="--gpu only: 3 eager hla2 decode launches on distinct states, then exit "
                         "(to profile one launch with ncu)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.B, args.H, args.layers, args.reps = args.B or 2, args.H or 2, 2, 2
    if args.gpu:
        import torch
        if not torch.cuda.is_available():
            if args.smoke:
                print(json.dumps({"benchmark": NAME, "skipped": "--gpu needs a CUDA GPU "
                                  "(torch.cuda.is_available() is False)"}))
                return 0
            print(json.dumps({"benchmark": NAME, "error": "--gpu needs a CUDA GPU"}))
            return 1
    if args.lib:
        spec = importlib.util.spec_from_file_location("hla_capi", ROOT / "plugins" / "common" / "hla_capi.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        capi = mod.load(args.lib)
    else:
        capi = load_capi(cuda=args.gpu)
    if args.gpu:
        import torch
        if args.probe:
            B, H, d = args.B or 64, args.H or 8, 64
            q = torch.randn(B, 1, H, d, device="cuda") / 8
            for _ in range(3):
                st = torch.zeros(B, H, capi.state_size("hla2", d, d), device="cuda")
                capi.forward_cuda(q, q, q * 8, st, variant="hla2", decay=[0.95], state_out=st)
            torch.cuda.synchronize()
            print(json.dumps({"probe": "done", "B": B, "H": H, "d": d}))
            return 0
        res = bench_gpu(args, capi)
    else:
        res = bench_cpu(args, capi)
    res = {"benchmark": NAME, "smoke": args.smoke, **res}
    res["command"] = "python benchmarks/bench_native_decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(res, indent=1)
    print(json.dumps(res))  # one line: the last of stdout
    if args.out:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
