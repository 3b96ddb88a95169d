"""Every benchmark still runs: benchmarks/*.py (discovered, so new ones are covered) with --smoke.

The convention each benchmark keeps (docs/BENCHMARKS.md, "Smoke runs"):
- ``--smoke`` runs tiny shapes in seconds, on the CPU where the benchmark has a CPU path;
- the LAST line of stdout is one JSON object with "benchmark": the script's name;
- a benchmark that needs a GPU and finds none prints {"benchmark": NAME, "skipped": REASON}
  and exits 0: reported here as a pytest skip with that reason.
The test checks the exit status and the JSON keys, and the correctness checks the benchmarks
carry (their outputs against a reference form), never a timing.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))

# Keys the known benchmarks' JSON must hold (a new benchmark: "benchmark" and one more key).
KEYS = {
    "bench_prefill": {"benchmark", "smoke", "results"},
    "bench_ort_cpu": {"benchmark", "smoke", "config", "machine", "bandwidth", "results", "targets"},
    "bench_native_decode": {"benchmark", "smoke", "device", "decode_fp32", "hla2_vs_torch", "prefill"},
    "bench_cuda_prefill": {"benchmark", "smoke", "device", "prefill", "decode", "targets"},
    "bench_triton_fp16": {"benchmark", "smoke", "device", "rows", "ratios"},
    "bench_quickstart_size": {"benchmark", "smoke", "rounds", "results"},
}


def _run(script: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, str(script), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    tail = f"\n--- stdout (end) ---\n{proc.stdout[-2000:]}\n--- stderr (end) ---\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script.name} --smoke exited {proc.returncode}{tail}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"{script.name} --smoke printed nothing on stdout{tail}"
    try:
        out = json.loads(lines[-1])
    except ValueError as e:
        raise AssertionError(f"{script.name} --smoke: the last stdout line is not JSON ({e}){tail}")
    assert isinstance(out, dict), f"{script.name}: the last line is JSON but not an object: {lines[-1][:200]}"
    return out


def test_benchmarks_are_discovered():
    names = {p.stem for p in SCRIPTS}
    assert {"bench_prefill", "bench_ort_cpu", "bench_native_decode"} <= names, names


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
@pytest.mark.slow
def test_benchmark_smoke(script):
    out = _run(script)
    assert out.get("benchmark") == script.stem, f"'benchmark' is {out.get('benchmark')!r}, expected {script.stem!r}"
    if "skipped" in out:
        assert isinstance(out["skipped"], str) and out["skipped"], out
        pytest.skip(f"{script.name} --smoke: {out['skipped']}")
    assert "error" not in out, out
    want = KEYS.get(script.stem)
    if want is None:
        assert len(out) >= 2, f"{script.name}: JSON holds only {sorted(out)}"
    else:
        assert want <= set(out), f"{script.name}: missing keys {sorted(want - set(out))}; got {sorted(out)}"
        assert out["smoke"] is True
    check = CHECKS.get(script.stem)
    if check is not None:
        check(out)


# ---- the correctness numbers the benchmarks carry (not timings) ----------------------------------

def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_prefill(out):
    (r,) = out["results"]
    assert r["T"] == 64 and r["d"] == 16
    for key in ("triton_fwd_ms", "triton_fwd_bwd_ms", "sdpa_fwd_ms", "chunk_fwd_ms"):
        assert _finite_positive(r[key]), (key, r[key])
    assert r["check_o_rel_rms_vs_chunk"] <= 1e-4 and r["check_state_rel_rms_vs_chunk"] <= 1e-4, r


def _check_ort_cpu(out):
    res = out["results"]
    assert _finite_positive(res["decode_T1"]["ort_custom_ms"])
    assert _finite_positive(res["prefill_T16"]["ort_custom_ms"])
    rel = res["check_custom_vs_torch_chunk_rel"]
    assert rel["o"] <= 1e-4 and rel["state"] <= 1e-4, rel


def _check_native_decode(out):
    assert set(out["decode_fp32"]) == {"hla2", "ahla", "hla3"}
    for v in out["decode_fp32"].values():
        assert _finite_positive(v["native_ms"]), v
    if out["device"] == "cpu":
        assert out["prefill"]["rel_rms_native_vs_chunk"] <= 1e-4, out["prefill"]


def _check_cuda_prefill(out):
    # GPU only (skipped otherwise): the smoke row is fp16, T = 128; the AOT path runs the same cubins as
    # the Triton JIT forward, so o and the state are bit-identical to it.
    for r in out["prefill"]:
        assert r["aot_path"] is True, (r, out.get("kernels"), out.get("warnings"))
        assert r["aot_vs_triton_max_abs_o"] == 0 and r["aot_vs_triton_max_abs_state"] == 0, r
        assert _finite_positive(r["aot_ms"]) and _finite_positive(r["triton_ms"]), r
    for r in out["decode"]:
        assert _finite_positive(r["decode_us_per_layer"]), r


def _check_triton_fp16(out):
    # fp16 o against the float32 plan (bf16 only on a GPU: the interpreter's bf16 tl.dot is wrong)
    for r in out["rows"]:
        assert _finite_positive(r["ms"]), r
        if r["dtype"] == "fp16" or "interpreter" not in out["device"]:
            assert r["rel_rms_vs_fp32"] <= (5e-3 if r["dtype"] == "fp16" else 3e-2), r
    assert {(r["B"], r["T"]) for r in out["ratios"]} == {(r["B"], r["T"]) for r in out["rows"]}


CHECKS = {"bench_prefill": _check_prefill, "bench_triton_fp16": _check_triton_fp16, "bench_ort_cpu": _check_ort_cpu,
          "bench_native_decode": _check_native_decode, "bench_cuda_prefill": _check_cuda_prefill}
