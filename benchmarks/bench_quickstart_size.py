"""`hla-deploy quickstart` time on the CPU for model sizes (random weights); one JSON object.

    PYTHONPATH=. python benchmarks/bench_quickstart_size.py [--rounds 3] [--configs today,demo]
    python benchmarks/bench_quickstart_size.py --smoke   # one tiny config, one round

Why: the shipped demo checkpoint is what `hla-deploy quickstart` exports and checks on every
user's CPU, so a larger demo model makes the README's main command slower. For each config of
CONFIGS a randomly initialised HLALanguageModel (seed 0) is saved and
`python -m hla_deploy quickstart --checkpoint DIR` runs in a subprocess (the same code path as
with the shipped model; the ORT custom-op library is built once before the timed runs). The
rounds interleave the configs (today, a, b, today, a, b, ...) so load from other users of a
shared machine hits them alike, after one untimed quickstart (imports, .pyc files, page cache).
Reported per config: wall seconds and CPU seconds of the child (user + sys, less sensitive to
other users' load), each run's, their median and minimum, and min / median as ratios to "today"
(the shipped 1.82M model's shape); parameters and float32 / 16-bit checkpoint sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAME = "bench_quickstart_size"

#: name -> HLAConfig fields (decay geometric from 0.9 to 0.99 over the heads, as the trainer does)
CONFIGS = {
    "today": dict(d_model=192, n_layers=4, n_heads=3, head_dim=64, value_dim=64, mlp_hidden=512),
    "w256-l4": dict(d_model=256, n_layers=4, n_heads=4, head_dim=64, value_dim=64, mlp_hidden=768),
    "w256-l5": dict(d_model=256, n_layers=5, n_heads=4, head_dim=64, value_dim=64, mlp_hidden=768),
    "demo-triton": dict(d_model=256, n_layers=6, n_heads=4, head_dim=64, value_dim=64, mlp_hidden=768),
    "w320-l4": dict(d_model=320, n_layers=4, n_heads=5, head_dim=64, value_dim=64, mlp_hidden=1024),
    # today's HLA state (4 layers x 3 heads of 64: what the recurrent parity and decode steps carry),
    # wider residual stream and MLP
    "w256-h3-l4-f768": dict(d_model=256, n_layers=4, n_heads=3, head_dim=64, value_dim=64, mlp_hidden=768),
    "w256-h3-l4-f1024": dict(d_model=256, n_layers=4, n_heads=3, head_dim=64, value_dim=64, mlp_hidden=1024),
    "w320-h3-l4-f1024": dict(d_model=320, n_layers=4, n_heads=3, head_dim=64, value_dim=64, mlp_hidden=1024),
}
SMOKE_CONFIGS = {"tiny": dict(d_model=16, n_layers=1, n_heads=2, head_dim=8, value_dim=8, mlp_hidden=16)}


def make_checkpoint(fields: dict, directory: Path) -> dict:
    import torch
    from hla_deploy.models import HLAConfig, HLALanguageModel, geometric_decay
    torch.manual_seed(0)
    cfg = HLAConfig(**fields, variant="hla2", decay=geometric_decay(fields["n_heads"], 0.9, 0.99))
    model = HLALanguageModel(cfg)
    model.save(directory)
    n = model.num_parameters()
    return {"parameters": n, "fp32_mib": round((directory / "model.safetensors").stat().st_size / 2**20, 2),
            "fp16_mib": round(2 * n / 2**20, 2), "state_floats_per_sequence":
            cfg.n_layers * cfg.n_heads * cfg.state_size}


def run_quickstart(ckpt: Path, out: Path, max_new_tokens: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-m", "hla_deploy", "quickstart", "--checkpoint", str(ckpt),
                           "--out", str(out), "--max-new-tokens", str(max_new_tokens)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"quickstart --checkpoint {ckpt} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    phases = {}
    for line in proc.stdout.splitlines():
        for key, pat in (("export_s", r"exported ONNX in ([0-9.]+)s"), ("library_s", r"library .*\(.*, ([0-9.]+)s\)"),
                         ("parity_s", r"parity on the CPU backends \(([0-9.]+)s\)"),
                         ("generate_s", r"generated .* in ([0-9.]+)s")):
            hit = re.search(pat, line)
            if hit:
                phases[key] = float(hit.group(1))
    return {"wall_s": wall, "cpu_s": cpu, **phases}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed quickstart runs per config")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated names of {sorted(CONFIGS)}")
    ap.add_argument("--max-new-tokens", type=int, default=80, help="quickstart's default is 80")
    ap.add_argument("--smoke", action="store_true", help="one tiny config, one round (checks that it runs)")
    args = ap.parse_args()
    if args.smoke:
        configs, rounds, new_tokens = SMOKE_CONFIGS, 1, 4
    else:
        names = [n.strip() for n in args.configs.split(",") if n.strip()]
        bad = [n for n in names if n not in CONFIGS]
        if bad or "today" not in names:
            print(json.dumps({"benchmark": NAME, "error": f"--configs: unknown {bad} or 'today' missing; "
                              f"expected names from {sorted(CONFIGS)} including 'today'"}))
            return 2
        configs, rounds, new_tokens = {n: CONFIGS[n] for n in names}, args.rounds, args.max_new_tokens
    from hla_deploy.native import ort_library_path
    ort_library_path(build=True)                       # built (or reused) before any timed run
    with tempfile.TemporaryDirectory(prefix="hla-qs-size-") as tmp:
        tmp = Path(tmp)
        info = {n: make_checkpoint(f, tmp / n) for n, f in configs.items()}
        run_quickstart(tmp / next(iter(configs)), tmp / "out-untimed", new_tokens)
        times = {n: [] for n in configs}
        for r in range(rounds):
            for n in configs:
                times[n].append(run_quickstart(tmp / n, tmp / f"out-{n}-{r}", new_tokens))
    results = {}
    for n in configs:
        wall = statistics.median(t["wall_s"] for t in times[n])
        cpu = statistics.median(t["cpu_s"] for t in times[n])
        results[n] = dict(info[n], fields=configs[n], wall_s_median=round(wall, 2), cpu_s_median=round(cpu, 2),
                          wall_s_min=round(min(t["wall_s"] for t in times[n]), 2),
                          cpu_s_min=round(min(t["cpu_s"] for t in times[n]), 2),
                          phases=[{k: round(v, 2) for k, v in t.items() if k.endswith("_s") and k not in ("wall_s", "cpu_s")}
                                  for t in times[n]],
                          wall_s=[round(t["wall_s"], 2) for t in times[n]],
                          cpu_s=[round(t["cpu_s"], 2) for t in times[n]])
    if "today" in results:
        for n, r in results.items():
            r["wall_ratio_to_today"] = round(r["wall_s_median"] / results["today"]["wall_s_median"], 3)
            r["cpu_ratio_to_today"] = round(r["cpu_s_median"] / results["today"]["cpu_s_median"], 3)
            r["cpu_min_ratio_to_today"] = round(r["cpu_s_min"] / results["today"]["cpu_s_min"], 3)
            r["wall_min_ratio_to_today"] = round(r["wall_s_min"] / results["today"]["wall_s_min"], 3)
    print(json.dumps({"benchmark": NAME, "smoke": args.smoke, "rounds": rounds, "load_avg": os.getloadavg(),
                      "results": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
