"""Load benchmark: N concurrent sequences against a local Triton server (Python backend, CPU) vs
the same runtime without the server; prints one JSON object (the last line).

    python benchmarks/bench_serve.py [--model M.onnx] [--sequences 8] [--prompt 32] [--decode 64]
                                     [--instances 1] [--protocol grpc|http] [--smoke]

Each sequence: one prefill request of `--prompt` tokens (START), then `--decode` single-token
requests (teacher-forced random ids; the last has END), each sequence from its own client thread,
all concurrently. Per-token latency = wall time of one decode request at the client. Baseline
("runtime"): the same N sequences through hla_deploy.serving.sequences.SequenceTable over one
OrtHLASession in one thread, round robin (what one Triton instance does per request, minus the
server). Default model: the shipped demo (tiny-pystdlib) exported to a temp dir. --smoke: 2
sequences, 4-token prompt, 4 decode steps (seconds).
"""
from __future__ import annotations

import argparse
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


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q)) if xs else None


def summarize(decode_lat, total_tokens, wall):
    return {"tokens_per_s": round(total_tokens / wall, 1), "decode_tokens_per_s": round(len(decode_lat) / wall, 1),
            "p50_ms": round(pct(decode_lat, 50), 3), "p99_ms": round(pct(decode_lat, 99), 3), "wall_s": round(wall, 3)}


def plans(n, prompt, decode, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, vocab, prompt).tolist(), rng.integers(0, vocab, decode).tolist()) for _ in range(n)]


def bench_runtime(model, library, work):
    from hla_deploy.runtime.ort_session import OrtHLASession
    from hla_deploy.serving.sequences import SequenceTable
    table = SequenceTable(OrtHLASession(model, library=library, intra_op_num_threads=1), len(work) + 1, 3600)
    lat, t0 = [], time.perf_counter()
    for c, (p, _) in enumerate(work):
        table.run(c, p, start=True, end=False)
    for i in range(len(work[0][1])):
        for c, (_, d) in enumerate(work):
            t = time.perf_counter()
            table.run(c, [d[i]], start=False, end=i == len(d) - 1)
            lat.append(time.perf_counter() - t)
    return summarize(lat, sum(len(p) + len(d) for p, d in work), time.perf_counter() - t0)


def bench_server(url, protocol, work):
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    lat, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(len(work))

    def one(c, prompt, dec):
        try:
            client = mod.InferenceServerClient(url)

            def infer(ids, **kw):
                x = mod.InferInput("input_ids", [1, len(ids)], "INT64")
                x.set_data_from_numpy(np.asarray([ids], np.int64))
                return client.infer("hla_lm", [x], sequence_id=1000 + c, **kw)
            barrier.wait()
            infer(prompt, sequence_start=True)
            mine = []
            for i, tok in enumerate(dec):
                t = time.perf_counter()
                infer([tok], sequence_end=i == len(dec) - 1)
                mine.append(time.perf_counter() - t)
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
    out = summarize(lat, sum(len(p) + len(d) for p, d in work), time.perf_counter() - t0)
    out["errors"] = errors
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="exported .onnx (default: the shipped demo, exported here)")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds): 2 sequences, 4 + 4 tokens")
    a = ap.parse_args(argv)
    if a.smoke:
        a.sequences, a.prompt, a.decode = 2, 4, 4
    from hla_deploy.plugins import ort_library_path
    from hla_deploy.serving.repository import write_repository
    from hla_deploy.serving.server import ServerError, TritonServer
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model = a.model
    if model is None:
        from hla_deploy.exporters import export_onnx
        from hla_deploy.models import default_checkpoint
        model = export_onnx(default_checkpoint(), None, tmp / "model.onnx", op="custom")
    lib = ort_library_path(build=True)
    from hla_deploy.runtime.ort_session import OrtHLASession
    vocab = OrtHLASession(model, library=lib).vocab_size
    work = plans(a.sequences, a.prompt, a.decode, vocab)
    res = {"benchmark": "bench_serve", "model": str(model), "sequences": a.sequences, "prompt": a.prompt,
           "decode": a.decode, "instances": a.instances, "protocol": a.protocol, "smoke": a.smoke,
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    res["runtime"] = bench_runtime(model, lib, work)
    repo = write_repository(model, tmp / "repo", max_sequences=a.sequences, instances=a.instances,
                            idle_timeout_s=60, op_library=lib)
    try:
        with TritonServer(repo) as srv:
            res["server"] = bench_server(srv.grpc_url if a.protocol == "grpc" else srv.http_url, a.protocol, work)
    except ServerError as e:
        res["server"] = {"error": str(e)[:2000]}
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    if "tokens_per_s" in res["server"]:
        res["server_over_runtime_tokens_per_s"] = round(res["server"]["tokens_per_s"] / res["runtime"]["tokens_per_s"], 3)
    print(json.dumps(res), flush=True)
    return 0 if not res["server"].get("error") and not res["server"].get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
