"""Load benchmark: 1, 8 and 64 concurrent sequences against a local Triton server (Python backend,
CPU) next to the same runtime without the server, one at a time and batched; prints one JSON object
(the last line).

    python benchmarks/bench_serve.py [--model M.onnx] [--sequences 1,8,64] [--prompt 32] [--decode 64]
                                     [--instances 1] [--protocol grpc|http] [--client threads|asyncio]
                                     [--queue-delay-us D] [--warmup 1] [--smoke]

Each sequence: one prefill request of `--prompt` tokens (START), then `--decode` single-token
requests (teacher-forced random ids; the last has END), all sequences concurrently, each waiting
for its answer before it sends its next token (a closed loop, as in decoding). Clients: one thread
and tritonclient per sequence (`--client threads`, the default: what #14 measured; HTTP always) or
one asyncio gRPC client with one task per sequence (`--client asyncio`). Per-token
latency = wall time of one decode request at the client. Every path first runs the same work
once unmeasured (`--warmup 1`: the first calls at each batch size allocate). For each N, the server is a repository
with --max-sequences N (max_batch_size min(N, 64), the default queue delay unless given), started
for that N. Baselines in the same run, one thread, no server, hla_deploy.serving.sequences over one
OrtHLASession (intra-op threads 1, as the server's): "runtime_one_at_a_time" (SequenceTable.run per
request, round robin: what the server did before batching) and "runtime_batched" (one run_batch per
round: every sequence's prompt, then every decode step, in one call). "exact": the largest relative
difference between the server's and the one-at-a-time runtime's logits of every sequence's last
token (must be <= 1e-5, else exit 1). tokens/s counts prompt + decode tokens.
Default model: the shipped demo (tiny-pystdlib) exported to a temp dir. --smoke: 1 and 2
sequences, 4-token prompt, 4 decode steps (seconds).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEFORE_BATCHING = 1113.0  # tokens/s, gRPC, 8 sequences: this benchmark before batching (issue 21)


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q)) if xs else None


def summarize(decode_lat, total_tokens, wall):
    return {"tokens_per_s": round(total_tokens / wall, 1), "decode_tokens_per_s": round(len(decode_lat) / wall, 1),
            "p50_ms": round(pct(decode_lat, 50), 3), "p99_ms": round(pct(decode_lat, 99), 3), "wall_s": round(wall, 3)}


def plans(n, prompt, decode, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, vocab, prompt).tolist(), rng.integers(0, vocab, decode).tolist()) for _ in range(n)]


def tokens(work):
    return sum(len(p) + len(d) for p, d in work)


def bench_runtime(sess, work, batched):
    """(summary, last-token logits [N, V]) of the work through SequenceTable, no server."""
    from hla_deploy.serving.sequences import SequenceTable, Step
    table = SequenceTable(sess, len(work) + 1, 3600)
    last = [None] * len(work)
    lat, t0 = [], time.perf_counter()
    if batched:
        table.run_batch([Step(c, p, True, False) for c, (p, _) in enumerate(work)])
    else:
        for c, (p, _) in enumerate(work):
            table.run(c, p, start=True, end=False)
    n = len(work[0][1])
    for i in range(n):
        if batched:
            t = time.perf_counter()
            res = table.run_batch([Step(c, [d[i]], False, i == n - 1) for c, (_, d) in enumerate(work)])
            lat.extend([time.perf_counter() - t] * len(work))  # every sequence waits for the whole call
        else:
            res = []
            for c, (_, d) in enumerate(work):
                t = time.perf_counter()
                res.append(table.run(c, [d[i]], start=False, end=i == n - 1))
                lat.append(time.perf_counter() - t)
        if i == n - 1:
            last = [r[-1] for r in res]
    return summarize(lat, tokens(work), time.perf_counter() - t0), np.stack(last)


def _input(mod, ids):
    x = mod.InferInput("input_ids", [1, len(ids)], "INT64")
    x.set_data_from_numpy(np.asarray([ids], np.int64))
    return x


def bench_server_threads(url, protocol, work, base=1000):
    import tritonclient.grpc as grpc_mod
    import tritonclient.http as http_mod
    mod = grpc_mod if protocol == "grpc" else http_mod
    lat, errors, lock, last = [], [], threading.Lock(), [None] * len(work)
    barrier = threading.Barrier(len(work))

    def one(c, prompt, dec):
        try:
            client = mod.InferenceServerClient(url)
            barrier.wait()
            client.infer("hla_lm", [_input(mod, prompt)], sequence_id=base + c, sequence_start=True)
            mine = []
            for i, tok in enumerate(dec):
                t = time.perf_counter()
                r = client.infer("hla_lm", [_input(mod, [tok])], sequence_id=base + c, sequence_end=i == len(dec) - 1)
                mine.append(time.perf_counter() - t)
            last[c] = r.as_numpy("logits")[0, -1]
            with lock:
                lat.extend(mine)
        except Exception as e:  # reported in the JSON
            with lock:
                errors.append(f"sequence {c}: {e}")

    threads = [threading.Thread(target=one, args=(c, p, d)) for c, (p, d) in enumerate(work)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(lat, tokens(work), time.perf_counter() - t0), errors, last


def bench_server_asyncio(url, work, base=1000):
    import tritonclient.grpc as grpc_mod
    import tritonclient.grpc.aio as aio
    lat, errors, last = [], [], [None] * len(work)

    async def one(client, c, prompt, dec):
        try:
            await client.infer("hla_lm", [_input(grpc_mod, prompt)], sequence_id=base + c, sequence_start=True)
            for i, tok in enumerate(dec):
                t = time.perf_counter()
                r = await client.infer("hla_lm", [_input(grpc_mod, [tok])], sequence_id=base + c,
                                       sequence_end=i == len(dec) - 1)
                lat.append(time.perf_counter() - t)
            last[c] = r.as_numpy("logits")[0, -1]
        except Exception as e:  # reported in the JSON
            errors.append(f"sequence {c}: {e}")

    async def main():
        async with aio.InferenceServerClient(url) as client:
            await client.is_server_ready()
            t0 = time.perf_counter()
            await asyncio.gather(*(one(client, c, p, d) for c, (p, d) in enumerate(work)))
            return time.perf_counter() - t0

    wall = asyncio.run(main())
    return summarize(lat, tokens(work), wall), errors, last


def rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def run_one(n, a, model, lib, sess, vocab, tmp):
    from hla_deploy.serving.model_config import DEFAULT_QUEUE_DELAY_US
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import ServerError, TritonServer
    work = plans(n, a.prompt, a.decode, vocab, seed=n)
    out = {"sequences": n, "warmup_passes": a.warmup}
    for _ in range(a.warmup):  # first calls at each batch size allocate (ORT, the state pool)
        bench_runtime(sess, work, batched=False), bench_runtime(sess, work, batched=True)
    out["runtime_one_at_a_time"], ref_last = bench_runtime(sess, work, batched=False)
    out["runtime_batched"], batch_last = bench_runtime(sess, work, batched=True)
    delay = DEFAULT_QUEUE_DELAY_US if a.queue_delay_us is None else a.queue_delay_us
    repo = write_repository(model, tmp / f"repo{n}", max_sequences=n, instances=a.instances, idle_timeout_s=60,
                            op_library=lib, queue_delay_us=delay)
    out["max_batch_size"], out["queue_delay_us"] = min(n, 64), delay
    try:
        with TritonServer(repo) as srv:
            for p in range(a.warmup + 1):  # the same work; the last pass is measured
                base = 1000 + 1000 * (a.warmup - p)
                if a.client == "asyncio" and a.protocol == "grpc":
                    out["server"], errors, last = bench_server_asyncio(srv.grpc_url, work, base)
                else:
                    url = srv.grpc_url if a.protocol == "grpc" else srv.http_url
                    out["server"], errors, last = bench_server_threads(url, a.protocol, work, base)
            out["server"]["errors"] = errors
    except ServerError as e:
        out["server"] = {"error": str(e)[:2000]}
        return out
    if not errors:
        out["exact"] = {"server_vs_runtime_rel": rel_diff(np.stack(last), ref_last),
                        "batched_vs_runtime_rel": rel_diff(batch_last, ref_last)}
    s = out["server"]["tokens_per_s"]
    out["server_over_runtime_one_at_a_time"] = round(s / out["runtime_one_at_a_time"]["tokens_per_s"], 3)
    out["server_over_before_batching"] = round(s / BEFORE_BATCHING, 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="exported .onnx (default: the shipped demo, exported here)")
    ap.add_argument("--sequences", default="1,8,64", help="comma-separated numbers of concurrent sequences")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    ap.add_argument("--client", choices=["threads", "asyncio"], default="threads")
    ap.add_argument("--queue-delay-us", type=int, default=None, help="the repository's (default: serve-repo's)")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured passes of the same work first (default 1)")
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds): 1 and 2 sequences, 4 + 4 tokens, no warm-up")
    a = ap.parse_args(argv)
    counts = [int(x) for x in a.sequences.split(",") if x.strip()]
    if a.smoke:
        counts, a.prompt, a.decode, a.warmup = [1, 2], 4, 4, 0
    from hla_deploy.serving.server import ServerMissingError, pytriton_root
    try:
        pytriton_root()
    except ServerMissingError as e:  # nothing to measure here: say so, as the GPU-only benchmarks do
        print(json.dumps({"benchmark": "bench_serve", "smoke": a.smoke, "skipped": str(e)}), flush=True)
        return 0
    from hla_deploy.native import ort_library_path
    from hla_deploy.runtime.ort_session import OrtHLASession
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    try:
        model = a.model
        if model is None:
            from hla_deploy.exporters import export_onnx
            from hla_deploy.models import default_checkpoint
            model = export_onnx(default_checkpoint(), None, tmp / "model.onnx", op="custom")
        lib = ort_library_path(build=True)
        sess = OrtHLASession(model, library=lib, intra_op_num_threads=1)
        res = {"benchmark": "bench_serve", "model": str(model), "prompt": a.prompt, "decode": a.decode,
               "instances": a.instances, "protocol": a.protocol,
               "client": a.client if a.protocol == "grpc" else "threads", "smoke": a.smoke,
               "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "load_avg_1min_before": round(os.getloadavg()[0], 2), "before_batching_tokens_per_s": BEFORE_BATCHING,
               "runs": [run_one(n, a, model, lib, sess, sess.vocab_size, tmp) for n in counts]}
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res), flush=True)
    bad = [r for r in res["runs"] if r["server"].get("error") or r["server"].get("errors")
           or max(r.get("exact", {}).values(), default=0.0) > 1e-5]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
