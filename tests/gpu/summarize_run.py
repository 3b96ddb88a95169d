"""The summary of a tests/gpu/run_all.sh run: one line per step, every skip, a JSON file.

    python3 tests/gpu/summarize_run.py LOG_DIR [--gpu 0|1] [--wall SECONDS]

run_all.sh writes, per step, LOG_DIR/<step>.step (key=value lines: name, kind, rc, seconds,
log) and the step's output in LOG_DIR/<step>.log. This script reads them and prints:

- per step: ok / FAIL, wall seconds, pass / fail / error / skip counts (pytest's last summary
  line; for `kind=parity`, the statuses of the backends in the step's JSON report);
- every skip reason with its count;
- the totals, and writes LOG_DIR/summary.json (the same, machine-readable).

Rule for skips (issue 19): on a machine with a GPU (--gpu 1) nothing may be skipped except what
needs TensorRT; a step with any other skip FAILS, its reasons listed. HLA_GPU_ALLOWED_SKIPS (a
regular expression, default ``TensorRT|tensorrt|trtexec``) says which reasons are allowed.
pytest's "no tests collected" (status 5) is a failure too. Exit status 1 when a step failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

COUNT_RE = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)")
PROBE_MARKER = "[proc_probe] END rc="   # tests/gpu/proc_probe.py's last line
SKIP_RE = re.compile(r"^SKIPPED \[(\d+)\] ([^:]+:\d+): (.*)$")


def read_step(path: Path) -> dict:
    step = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            step[k.strip()] = v.strip()
    step["rc"] = int(step.get("rc", "1"))
    step["seconds"] = float(step.get("seconds", "0"))
    return step


def pytest_counts(text: str) -> dict:
    """Counts from pytest's final summary line ("3 passed, 1 skipped in 2.0s")."""
    for line in reversed(text.splitlines()):
        if re.search(r" in [0-9.]+s", line) and COUNT_RE.search(line):
            counts = {}
            for n, what in COUNT_RE.findall(line):
                what = {"error": "errors", "warning": "warnings"}.get(what, what)
                counts[what] = counts.get(what, 0) + int(n)
            return counts
    return {}


def pytest_skips(text: str) -> list:
    """[(count, where, reason)] from pytest's -rs short summary."""
    out = []
    for line in text.splitlines():
        m = SKIP_RE.match(line.strip())
        if m:
            out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out


def parity_result(step: dict):
    """(counts, skips) from the step's parity JSON report."""
    path = step.get("json")
    if not path or not Path(path).is_file():
        return {}, []
    data = json.loads(Path(path).read_text())
    counts, skips = {}, []
    for b in data.get("backends", []):
        key = {"pass": "passed", "fail": "failed", "error": "errors", "skipped": "skipped"}.get(b["status"], b["status"])
        counts[key] = counts.get(key, 0) + 1
        if b["status"] == "skipped":
            skips.append((1, f"parity backend {b['name']}", b.get("reason") or ""))
    return counts, skips


def summarize(log_dir: Path, gpu: bool, allowed: str) -> dict:
    allowed_re = re.compile(allowed) if allowed else None
    steps = []
    for path in sorted(log_dir.glob("*.step"), key=lambda p: float(read_step(p).get("order", "0"))):
        step = read_step(path)
        log = Path(step.get("log", ""))
        text = log.read_text(errors="replace") if log.is_file() else ""
        kind = step.get("kind", "cmd")
        if kind == "pytest":
            counts, skips = pytest_counts(text), pytest_skips(text)
        elif kind == "parity":
            counts, skips = parity_result(step)
        else:
            counts, skips = {}, []
        problems = []
        if step["rc"] == 5 and kind == "pytest" and counts.get("skipped"):
            pass  # everything skipped at collection (pytest-xdist says 5): the skip rule below judges
        elif step["rc"] == 5 and kind == "pytest":
            problems.append("no tests ran (pytest status 5)")
        elif step["rc"] == 124 or step["rc"] == 137:
            problems.append(f"timed out (status {step['rc']})")
        elif step["rc"] > 128:
            problems.append(f"killed by signal {step['rc'] - 128} (status {step['rc']})")
        elif step["rc"] != 0:
            problems.append(f"status {step['rc']}")
        if kind == "parity" and PROBE_MARKER not in text:
            problems.append("no end marker from proc_probe.py: the process died by a signal or "
                            "native code ended it (exit/_exit); see the log's last lines")
        bad_skips = [s for s in skips if gpu and not (allowed_re and allowed_re.search(s[2]))]
        if bad_skips:
            problems.append(f"{sum(s[0] for s in bad_skips)} skipped on a GPU machine for a reason "
                            f"other than TensorRT")
        if kind == "parity" and not counts and step["rc"] == 0:
            problems.append("no parity JSON report")
        steps.append({"name": step.get("name", path.stem), "kind": kind, "ok": not problems,
                      "problems": problems, "rc": step["rc"], "seconds": round(step["seconds"], 1),
                      "counts": counts, "skips": [list(s) for s in skips],
                      "disallowed_skips": [list(s) for s in bad_skips], "log": str(log)})
    return {"steps": steps, "ok": all(s["ok"] for s in steps) and bool(steps), "gpu": gpu,
            "allowed_skips": allowed}


def _counts_text(c: dict) -> str:
    order = ("passed", "failed", "errors", "skipped", "deselected", "xfailed", "xpassed")
    return ", ".join(f"{c[k]} {k}" for k in order if c.get(k)) or "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log_dir")
    ap.add_argument("--gpu", type=int, choices=(0, 1), default=1)
    ap.add_argument("--wall", type=float, default=None, help="the run's total wall seconds")
    a = ap.parse_args(argv)
    log_dir = Path(a.log_dir)
    allowed = os.environ.get("HLA_GPU_ALLOWED_SKIPS", "TensorRT|tensorrt|trtexec")
    s = summarize(log_dir, bool(a.gpu), allowed)
    s["wall_seconds"] = a.wall
    total = {}
    for st in s["steps"]:
        for k, v in st["counts"].items():
            total[k] = total.get(k, 0) + v
    s["totals"] = total
    print(f"[run_all] summary (logs in {log_dir}):")
    w = max([len(st["name"]) for st in s["steps"]] + [4])
    for st in s["steps"]:
        status = "ok  " if st["ok"] else "FAIL"
        extra = "" if st["ok"] else "  <- " + "; ".join(st["problems"]) + f"  [{st['log']}]"
        print(f"  {status} {st['name']:<{w}} {st['seconds']:7.1f} s  {_counts_text(st['counts'])}{extra}")
    skips = {}
    for st in s["steps"]:
        for n, where, reason in st["skips"]:
            key = (st["name"], reason)
            skips[key] = skips.get(key, 0) + n
    if skips:
        print(f"[run_all] skipped tests, with their reasons (allowed on a GPU machine: /{allowed}/):")
        for (name, reason), n in sorted(skips.items()):
            print(f"  {n:4d} x {name}: {reason}")
    wall = f", {a.wall:.0f} s wall" if a.wall is not None else ""
    print(f"[run_all] {'PASS' if s['ok'] else 'FAIL'}: {len(s['steps'])} steps, {_counts_text(total)}{wall}")
    (log_dir / "summary.json").write_text(json.dumps(s, indent=1))
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
