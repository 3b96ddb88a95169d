"""Which Triton kernel goes wrong on Hopper, and which known workaround fixes it (issue 19).

    bash tests/gpu/run_all.sh --steps diagnose_triton     # or:
    python3 tests/gpu/diagnose_triton_hopper.py [--jobs 8] [--cases a,b] [--variants x,y]

On the H200 (Triton 3.6) tests/test_triton_hla.py failed once among its first tests, at the
16-bit cases with chunks of 64 (test_model_head_dims[f16-norm-ridge]: d = dv = 64, T = 1030;
`-x` stopped there). Triton 3.4 - 3.7.0 is known to miscompile chunked backward kernels on Hopper
(fla-org/flash-linear-attention #640: `tl.trans` of a tl.dot result cast to 16 bits, fed to
another tl.dot, wrong at 64-wide tiles, fixed in Triton 3.7.1; #984/#988: num_warps=4 at BT=64;
#1262: the bundled ptxas 12.8 emits wrong code that ptxas 13.x does not). The kernels here have
that pattern (chunk_bwd.py: tl.dot(tl.trans(b_w), b_vd), tl.dot(tl.trans(b_dp), ...); chunk_fwd.py
the same in W^T V). This script runs the suspect cases, each in its own process with its own
Triton cache, under variants that isolate the cause:

    default     as the tests run
    chunk32     chunk_size=32 (BT=32: fla #640/#984 report 32- and 128-wide tiles correct)
    ptxas13     TRITON_PTXAS_PATH = the CUDA toolkit's ptxas (13.x; fla #1262)
    no-wgmma    DISABLE_MMA_V3=1 (Triton's Hopper wgmma off: mma v2 as on Ampere)

and prints, per case and variant, the relative RMS error of o, state, dq, dk, dv, dstate0 against
the float64 reference (tests/test_triton_hla.py `_errors`), the non-finite outputs, and whether
the bound holds. Reading it: o/state wrong -> a forward kernel; only gradients -> chunk_bwd.py;
fixed by chunk32 / no-wgmma -> the #640-type layout miscompile; by ptxas13 -> ptxas; by none ->
our kernel (a float16 range problem shows as non-finite values in every variant).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent

# name -> (B, T, H, d, dv, dtype, decay, normalize, ridge, extra kwargs); 16-bit cases with BT=64 first
CASES = {
    "f16-d64-norm-ridge": (1, 1030, 4, 64, 64, "float16", (0.99, 1.0), True, 0.25, {"seed": 3}),
    "f16-d16-beyond-range": (1, 130, 2, 16, 16, "float16", (0.99, 1.0), True, 0.25, {"seed": 3, "scale": 6.0}),
    "bf16-d64-norm-ridge": (2, 1024, 4, 64, 64, "bfloat16", (0.99, 0.97, 0.95, 1.0), True, 0.25, {"seed": 1024}),
    "bf16-d16-chunk16": (2, 40, 2, 16, 16, "bfloat16", (0.95, 0.7), True, 0.25, {"seed": 5, "chunk_size": 16}),
    "f32-d64-norm-ridge": (1, 1030, 4, 64, 64, "float32", 0.98, True, 0.25, {"seed": 3}),
}
VARIANTS = ("default", "chunk32", "ptxas13", "no-wgmma")


def system_ptxas() -> str:
    """The CUDA toolkit's ptxas (not Triton's bundled one), or ''."""
    cands = [os.path.join(r, "bin", "ptxas") for r in
             [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")] + sorted(glob.glob("/usr/local/cuda*")) if r]
    which = shutil.which("ptxas")
    if which:
        cands.append(which)
    for c in cands:
        if os.path.isfile(c) and "triton" not in c:
            return os.path.realpath(c)
    return ""


def bundled_ptxas_version() -> str:
    try:
        import triton
        tool = triton.knobs.nvidia.ptxas
        return f"{tool.version} ({tool.path})"
    except Exception as e:  # noqa: BLE001  (a fact we could not get)
        return f"? ({type(e).__name__})"


def run_one(case: str, variant: str) -> dict:
    """In this process: one case, one variant (the environment was set by the parent)."""
    sys.path.insert(0, str(TESTS))
    import torch
    import test_triton_hla as t
    B, T, H, d, dv, dtype, dec, norm, ridge, kw = CASES[case]
    kw = dict(kw)
    if variant == "chunk32":
        kw["chunk_size"] = 32
    dt = getattr(torch, dtype)
    t0 = time.perf_counter()
    err, nonfinite = t._errors(B, T, H, d, dv, dt, dec, norm, ridge, **kw)
    tol = t.TOL[dt]
    return {"case": case, "variant": variant, "err": err, "nonfinite": nonfinite, "tol": tol,
            "ok": not nonfinite and max(err.values()) <= tol, "seconds": round(time.perf_counter() - t0, 1)}


def spawn(case, variant, cache_root: Path, timeout: int, ptxas: str) -> dict:
    env = dict(os.environ, TRITON_CACHE_DIR=str(cache_root / variant), PYTHONUNBUFFERED="1")
    if variant == "ptxas13":
        if not ptxas:
            return {"case": case, "variant": variant, "skipped": "no CUDA toolkit ptxas found"}
        env["TRITON_PTXAS_PATH"] = ptxas
    if variant == "no-wgmma":
        env["DISABLE_MMA_V3"] = "1"
    cmd = [sys.executable, "-X", "faulthandler", __file__, "--one", case, variant]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"case": case, "variant": variant, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"case": case, "variant": variant, "error": f"status {p.returncode}: {p.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--timeout", type=int, default=400)
    ap.add_argument("--cache-root", default="/tmp/hla-triton-diagnose")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(*a.one)))
        return 0
    import torch
    import triton
    ptxas = system_ptxas()
    if not torch.cuda.is_available():  # a smoke run of this script on a CPU: the interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
    print(f"[diagnose_triton] triton {triton.__version__}, torch {torch.__version__}, GPU "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}, bundled ptxas "
          f"{bundled_ptxas_version()}, toolkit ptxas {ptxas or 'none'}", flush=True)
    cases = [c for c in a.cases.split(",") if c in CASES]
    variants = [v for v in a.variants.split(",") if v in VARIANTS]
    jobs = [(c, v) for c in cases for v in variants if not (v == "chunk32" and CASES[c][9].get("chunk_size") == 16)]
    t0 = time.time()
    results = []
    with cf.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for r in pool.map(lambda cv: spawn(*cv, Path(a.cache_root), a.timeout, ptxas), jobs):
            results.append(r)
            print(f"[diagnose_triton] {r['case']} / {r['variant']}: "
                  f"{'ok' if r.get('ok') else ('FAIL' if 'err' in r else r.get('error') or r.get('skipped'))}", flush=True)
    print("\n[diagnose_triton] case / variant: verdict, max error (which), non-finite, all errors")
    for r in results:
        if "err" not in r:
            print(f"  {r['case']:<22} {r['variant']:<9} {r.get('error') or r.get('skipped')}")
            continue
        worst = max(r["err"], key=r["err"].get)
        print(f"  {r['case']:<22} {r['variant']:<9} {'ok  ' if r['ok'] else 'FAIL'} {r['err'][worst]:.2e} ({worst}) "
              f"tol {r['tol']:.0e} nonfinite={','.join(r['nonfinite']) or '-'}  "
              + " ".join(f"{k}={v:.1e}" for k, v in r["err"].items()))
    print(f"[diagnose_triton] {len(results)} runs in {time.time() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"ptxas13": ptxas, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
