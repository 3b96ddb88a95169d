"""Why did `hla-deploy parity ... --backends torch,triton,ort-cpu,ort-cuda,onnx-standard` end
silently on the H200 right after the CUDA session was created? One GPU call answers it.

    bash tests/gpu/run_all.sh --steps diagnose_ort_cuda          # installs, finds ORT-gpu, builds, runs this
    python3 tests/gpu/diagnose_ort_cuda.py --out DIR [--jobs 16] [--timeout 200] [--no-sanitizer] [--only a,b]

It runs the crashing sequence and its neighbours side by side, each in a fresh process under
tests/gpu/proc_probe.py (``python3 -X faulthandler``, ``PYTHONUNBUFFERED=1``: a fatal signal
prints every thread's Python stack; a normal end prints an end marker that a signal or a native
exit()/_exit() never prints), with ``LD_DEBUG=libs`` into DIR/ld/ (which file each library
came from, in load order), and prints one table:

    scenario | how it ended (ok / status N / SIGSEGV... / no end marker) | seconds | last step
    started | libcudart and libcublas files mapped | the last stderr lines

then the facts the table is read with: the CUDA libraries on the machine (nvcc's, torch's nvidia
wheel's, ldconfig's), libhla_ort_op.so's NEEDED / RUNPATH, onnxruntime's build info. The
scenarios (tests/gpu/ort_cuda_sequence.py steps) separate the candidate causes:

- parity-cli: the exact command, through the CLI;
- seq-exact: the same order in one script: torch, CUDA, Triton, export, ORT CPU session DROPPED,
  then the CUDA session (creation, plain run, IOBinding);
- seq-cpu-kept: the CPU session kept alive (the tests' order) / cuda-only: no CPU session;
- no-triton / issue12: torch imported but no CUDA in torch (issue 12's segfault; raw session);
- std-cuda: the standard-op graph on the CUDA EP, no custom library: is our library involved?
- ort-first: onnxruntime imported before torch; preload: onnxruntime.preload_dlls() first;
- plain: no torch at all (ran fine on 2026-12-01); plain+torch-cudart / plain+torch-cudnn: the
  same with torch's libcudart / libcudnn LD_PRELOADed (onnxruntime-gpu 1.31 NEEDs no cuDNN: it
  dlopens it at its first run, and finds torch's only when torch is in the process);
  seq-system-cudart: the exact sequence with the system's (nvcc's) libcudart LD_PRELOADed:
  whether the copy of libcudart decides it;
- seq-eager: CUDA_MODULE_LOADING=EAGER (lazy module loading of our fatbinary);
- sanitizer: seq-exact under compute-sanitizer memcheck (when installed), its first errors;
- gdb: every scenario that died by a signal, once more under gdb (when installed): the native
  backtrace and the shared libraries.
Writes DIR/diagnosis.json and DIR/<scenario>.log. Exit status 0 (it diagnoses; run_all's
tests judge).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROBE = HERE / "proc_probe.py"
SEQ = HERE / "ort_cuda_sequence.py"
MARKER = "[proc_probe] END rc="
EXACT = "torch,cudainit,triton,export,ort,ortcpu-drop,ortcuda"

# name -> (steps or None for the CLI, extra env); scenarios without an export step use the ONNX
# files prepare() wrote
SCENARIOS = {
    "parity-cli": (None, {}),
    "seq-exact": (EXACT, {}),
    "seq-cpu-kept": ("torch,cudainit,triton,export,ort,ortcpu,ortcuda", {}),
    "cuda-only": ("torch,cudainit,triton,export,ort,ortcuda", {}),
    "no-triton": ("torch,export,ort,ortcpu,ortcuda", {}),
    "issue12": ("torch,export,ort,ortcpu,ortcuda-raw", {}),
    "std-cuda": ("torch,cudainit,triton,ort,stdcuda", {}),
    "ort-first": ("ort,torch,cudainit,triton,export,ortcpu-drop,ortcuda", {}),
    "preload": ("torch,cudainit,triton,export,ort,preload,ortcpu-drop,ortcuda", {}),
    "plain": ("ort,ortcpu,ortcuda", {}),
    "plain+torch-cudart": ("ort,ortcpu,ortcuda", {"LD_PRELOAD": "@torch_cudart"}),
    "plain+torch-cudnn": ("ort,ortcpu,ortcuda", {"LD_PRELOAD": "@torch_cudnn"}),
    "seq-system-cudart": (EXACT, {"LD_PRELOAD": "@system_cudart"}),
    "seq-eager": (EXACT, {"CUDA_MODULE_LOADING": "EAGER"}),
    "parity-inproc": ("parity", {}),
}


def sh(cmd, timeout=60):
    try:
        r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except Exception as e:  # noqa: BLE001  (a fact we could not get)
        return f"<{type(e).__name__}: {e}>"


def cuda_library_facts(library: str) -> dict:
    """Where the CUDA runtimes are: torch's nvidia wheel, nvcc's toolkit, ldconfig; our library's links."""
    facts = {"nvcc": sh("nvcc --version | tail -n 2"),
             "ldconfig_cudart": sh("ldconfig -p | grep -E 'libcudart|libcublas\\.' || true"),
             "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", "")}
    facts["torch"] = sh([sys.executable, "-c", "import torch, os; print(torch.__version__, torch.version.cuda, "
                         "torch.cuda.is_available(), os.path.dirname(torch.__file__))"])
    site = os.path.dirname(facts["torch"].split()[-1]) if facts["torch"] else ""
    facts["gpu"] = " True " in f" {facts['torch']} "
    facts["torch_wheel_cudart"] = sorted(set(glob.glob(os.path.join(site, "nvidia", "**", "libcudart.so*"),
                                                       recursive=True))) if site else []
    facts["torch_wheel_cudnn"] = sorted(set(glob.glob(os.path.join(site, "nvidia", "**", "libcudnn.so.*"),
                                                      recursive=True))) if site else []
    facts["torch_cudnn_version"] = sh([sys.executable, "-c", "import torch; print(torch.backends.cudnn.version())"])
    roots = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_PATH")] + glob.glob("/usr/local/cuda*")
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parents[1]))
    facts["system_cudart"] = sorted({os.path.realpath(p) for r in roots if r
                                     for p in glob.glob(os.path.join(r, "lib*", "libcudart.so.*"))
                                     + glob.glob(os.path.join(r, "targets", "*", "lib", "libcudart.so.*"))})
    facts["libhla_ort_op"] = sh(f"readelf -d '{library}' | grep -E 'NEEDED|RPATH|RUNPATH'")
    facts["onnxruntime"] = sh([sys.executable, "-c", "import onnxruntime as o; print(o.__version__, o.__file__); "
                               "print(o.get_build_info() if hasattr(o, 'get_build_info') else '')"])
    facts["sanitizer"] = shutil.which("compute-sanitizer") or ""
    facts["gdb"] = shutil.which("gdb") or ""
    return facts


def _real_so(paths):
    """The library file (not a symlink to a dev .so) among paths: libcudart.so.13..., else ''."""
    for p in paths:
        if re.search(r"libcudart\.so\.\d+", p):
            return p
    return ""


def _tag(path: str) -> str:
    """A library path, short: wheel:/sys: plus the file name (the full paths are in the JSON)."""
    where = "wheel" if "site-packages" in path or "dist-packages" in path else "sys"
    return f"{where}:{os.path.basename(path)}"


def prepare(out: Path, library: str, timeout: int, gpu: bool) -> dict:
    """Export the demo checkpoint both ways (for the scenarios without an export step) and fill
    the Triton cache with the demo's kernels, in one process."""
    steps = "torch,cudainit,triton,export,export-std" if gpu else "torch,export,export-std"
    proc = subprocess.run([sys.executable, "-X", "faulthandler", str(PROBE), str(SEQ), "--steps",
                           steps, "--out", str(out / "prepared"),
                           "--library", library], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    (out / "prepare.log").write_text(proc.stdout + proc.stderr)
    return {"onnx": str(out / "prepared" / "demo_custom.onnx"), "onnx_std": str(out / "prepared" / "demo_standard.onnx"),
            "ok": proc.returncode == 0 and MARKER in proc.stderr}


def scenario_cmd(name, steps, out: Path, library, prepared):
    base = [sys.executable, "-X", "faulthandler", str(PROBE)]
    if steps is None:
        return base + ["-m", "hla_deploy", "parity", "hla_deploy/checkpoints/tiny-pystdlib", "--backends",
                       "torch,triton,ort-cpu,ort-cuda,onnx-standard", "--decode-steps", "32",
                       "--json", str(out / f"{name}.parity.json"), "--library", library]
    cmd = base + [str(SEQ), "--steps", steps, "--out", str(out / name), "--library", library]
    return cmd + ["--onnx", prepared["onnx"], "--onnx-std", prepared["onnx_std"]]


def ended(rc: int, stderr: str) -> str:
    if rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            return f"signal {-rc}"
    if MARKER not in stderr:
        return f"status {rc}, NO end marker"
    return "ok" if rc == 0 else f"status {rc}"


def run_one(name, cmd, env_extra, out: Path, timeout: int, facts: dict) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", LD_DEBUG="libs",
               LD_DEBUG_OUTPUT=str(out / "ld" / name))
    for k, v in env_extra.items():
        if v == "@torch_cudart":
            v = _real_so(facts["torch_wheel_cudart"])
        elif v == "@system_cudart":
            v = _real_so(facts["system_cudart"])
        elif v == "@torch_cudnn":
            v = next((p for p in facts["torch_wheel_cudnn"] if re.search(r"libcudnn\.so\.\d+$", p)), "")
        if not v:
            return {"name": name, "ended": "not run", "seconds": 0, "last_step": "",
                    "note": f"no file for {k}={env_extra[k]}", "cudart": [], "cublas": [], "tail": []}
        env[k] = v
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, so, se = 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), \
            (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    secs = round(time.time() - t0, 1)
    (out / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n# env {env_extra}\n--- stdout ---\n{so}\n--- stderr ---\n{se}")
    started = re.findall(r"^\[seq\] > (\S+)", se, re.M)
    finished = set(re.findall(r"^\[seq\] < (\S+) ok", se, re.M))
    last = next((s for s in reversed(started) if s not in finished), started[-1] if started else "")
    libs = re.findall(r"(?:\[proc_probe\] mapped|\[seq\]   \+) (\S+)", se)
    for f in glob.glob(str(out / "ld" / name) + ".*"):  # the loader's own record, also for a crash
        libs += re.findall(r"calling init: (\S+)", Path(f).read_text(errors="replace"))
    tail = [ln for ln in se.splitlines() if ln.strip() and not ln.startswith("[proc_probe] mapped")][-4:]
    return {"name": name, "ended": "timeout" if rc == 124 else ended(rc, se), "rc": rc, "seconds": secs,
            "last_step": last, "cudart": sorted({x for x in libs if "libcudart" in x}),
            "cublas": sorted({x for x in libs if "libcublas" in x and "Lt" not in x}),
            "cudnn": sorted({x for x in libs if re.search(r"libcudnn\.so", x)}), "tail": tail,
            "cmd": cmd, "env": env_extra}


def sanitizer(out: Path, library, prepared, timeout, facts) -> dict:
    tool = facts.get("sanitizer")
    if not tool:
        return {"name": "sanitizer", "ended": "not run", "note": "compute-sanitizer not on PATH"}
    cmd = [tool, "--tool", "memcheck", "--target-processes", "all", "--print-limit", "20"] + \
        scenario_cmd("sanitizer", EXACT, out, library, prepared)
    r = run_one("sanitizer", cmd, {}, out, timeout, facts)
    text = (out / "sanitizer.log").read_text(errors="replace")
    r["sanitizer_errors"] = [ln for ln in text.splitlines() if ln.startswith("=========") and
                             ("Invalid" in ln or "Error" in ln or "ERROR SUMMARY" in ln)][:12]
    return r


def gdb_backtrace(r: dict, out: Path, timeout: int) -> str:
    gdb = shutil.which("gdb")
    if not gdb:
        return "gdb not installed"
    cmd = [gdb, "-q", "-batch", "-ex", "run", "-ex", "thread apply all bt 25", "-ex", "info sharedlibrary",
           "--args", *r["cmd"]]
    text = sh(cmd, timeout=timeout)
    (out / f"{r['name']}.gdb.txt").write_text(text)
    frames = [ln for ln in text.splitlines() if re.match(r"#\d+ ", ln)]
    return "\n".join(frames[:15])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/hla-diagnose-ort-cuda")
    ap.add_argument("--jobs", type=int, default=16, help="scenarios at once")
    ap.add_argument("--timeout", type=int, default=200, help="seconds per scenario")
    ap.add_argument("--library", help="libhla_ort_op.so with CUDA (default: build/find it)")
    ap.add_argument("--only", help="comma-separated scenario names (default: all)")
    ap.add_argument("--no-sanitizer", action="store_true")
    ap.add_argument("--budget", type=int, default=0, help="seconds for everything (0: no limit): "
                    "the gdb re-run is left out when it would not fit")
    a = ap.parse_args(argv)
    out = Path(a.out)
    (out / "ld").mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    library = a.library
    if not library:
        os.environ.setdefault("HLA_DEPLOY_WITH_CUDA", "ON")
        from hla_deploy.native import ort_library_path
        library = str(ort_library_path(build=True))
    facts = cuda_library_facts(library)
    print("[diagnose] facts:\n" + "\n".join(f"  {k}: {v}" for k, v in facts.items()), flush=True)
    prepared = prepare(out, library, a.timeout, facts["gpu"])
    print(f"[diagnose] prepared the demo exports and the Triton cache: {prepared}", flush=True)
    names = [n for n in (a.only.split(",") if a.only else SCENARIOS) if n in SCENARIOS]
    results = []
    with cf.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futs = [pool.submit(run_one, n, scenario_cmd(n, SCENARIOS[n][0], out, library, prepared),
                            SCENARIOS[n][1], out, a.timeout, facts) for n in names]
        if not a.no_sanitizer and not a.only:
            futs.append(pool.submit(sanitizer, out, library, prepared, a.timeout, facts))
        for f in cf.as_completed(futs):
            r = f.result()
            results.append(r)
            print(f"[diagnose] {r['name']}: {r['ended']} ({r.get('seconds', 0)} s)", flush=True)
    order = {n: i for i, n in enumerate(list(SCENARIOS) + ["sanitizer"])}
    results.sort(key=lambda r: order.get(r["name"], 99))
    for r in results:
        if r["ended"].startswith("SIG") and r["name"] != "sanitizer":
            left = a.budget - (time.time() - t_start) - 20 if a.budget else 150
            r["gdb"] = gdb_backtrace(r, out, int(min(left, 150))) if left >= 60 else "left out (time budget)"
            break  # one native backtrace is enough (and costs minutes)
    print("\n[diagnose] scenario table (logs in %s)" % out)
    print(f"  {'scenario':<20} {'ended':<24} {'s':>6}  {'last step started':<18} libcudart | libcublas | libcudnn mapped")
    for r in results:
        libs = " | ".join(", ".join(_tag(x) for x in r.get(k, [])) or "-" for k in ("cudart", "cublas", "cudnn"))
        print(f"  {r['name']:<20} {r['ended']:<24} {r.get('seconds', 0):>6}  {r.get('last_step', ''):<18} {libs}")
        for ln in r.get("tail", [])[-2:]:
            print(f"  {'':<20} | {ln[:150]}")
        for ln in r.get("sanitizer_errors", []):
            print(f"  {'':<20} ! {ln[:150]}")
        if r.get("note"):
            print(f"  {'':<20} ({r['note']})")
        if r.get("gdb"):
            print("  gdb backtrace:\n" + "\n".join("    " + x for x in r["gdb"].splitlines()))
    (out / "diagnosis.json").write_text(json.dumps({"facts": facts, "prepared": prepared, "results": results,
                                                    "seconds": round(time.time() - t_start, 1)}, indent=1))
    print(f"[diagnose] {len(results)} scenarios in {time.time() - t_start:.0f} s; JSON: {out / 'diagnosis.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
