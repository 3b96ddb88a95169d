"""The GPU tier's own tools, checked on the CPU: tests/gpu/proc_probe.py (how a process ended),
tests/gpu/summarize_run.py (the per-step verdicts and the skip rule) and run_all.sh's dry run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / "tests" / "gpu"
sys.path.insert(0, str(GPU_DIR))
import summarize_run  # noqa: E402

PROBE = GPU_DIR / "proc_probe.py"


def _probe(tmp_path, code):
    script = tmp_path / "target.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(PROBE), str(script), "arg1"], capture_output=True,
                          text=True, timeout=60)


def test_probe_marks_a_normal_end_and_passes_the_status(tmp_path):
    p = _probe(tmp_path, "import sys\nprint('args', sys.argv[1:])\nsys.exit(3)\n")
    assert p.returncode == 3
    assert "args ['arg1']" in p.stdout
    assert p.stderr.strip().splitlines()[-1].startswith("[proc_probe] END rc=3 ")


def test_probe_reports_an_exception_then_the_marker(tmp_path):
    p = _probe(tmp_path, "raise ValueError('boom')\n")
    assert p.returncode == 1
    assert "ValueError: boom" in p.stderr and "[proc_probe] END rc=1" in p.stderr


def test_probe_has_no_marker_after_a_native_exit(tmp_path):
    """os._exit (as a C library's exit/_exit would) skips Python's shutdown: no marker."""
    p = _probe(tmp_path, "import os\nprint('before', flush=True)\nos._exit(0)\n")
    assert p.returncode == 0 and "before" in p.stdout
    assert "[proc_probe] END" not in p.stderr


def test_probe_names_a_segfault_with_the_python_stack(tmp_path):
    p = _probe(tmp_path, "import ctypes\ndef crash():\n    ctypes.string_at(0)\ncrash()\n")
    assert p.returncode == -signal.SIGSEGV
    assert "Segmentation fault" in p.stderr and "crash" in p.stderr  # faulthandler's stack
    assert "[proc_probe] END" not in p.stderr


def _step(d: Path, name, kind, rc, log_text, order, **extra):
    log = d / f"{name}.log"
    log.write_text(log_text)
    lines = [f"order={order}", f"name={name}", f"kind={kind}", f"rc={rc}", "seconds=1.5", f"log={log}"]
    lines += [f"{k}={v}" for k, v in extra.items()]
    (d / f"{name}.step").write_text("\n".join(lines) + "\n")


PYTEST_OK = "....s\nSKIPPED [1] tests/x.py:9: needs TensorRT (tensorrt not importable)\n4 passed, 1 skipped in 2.0s\n"
PYTEST_SKIP = "..s\nSKIPPED [2] tests/y.py:3: no CUDA device\n2 passed, 2 skipped in 1.0s\n"


def test_summary_skip_rule_on_a_gpu_machine(tmp_path):
    _step(tmp_path, "a", "pytest", 0, PYTEST_OK, 1)
    _step(tmp_path, "b", "pytest", 0, PYTEST_SKIP, 2)
    _step(tmp_path, "c", "pytest", 1, "F.\n1 failed, 1 passed in 1.0s\n", 3)
    s = summarize_run.summarize(tmp_path, gpu=True, allowed="TensorRT|tensorrt")
    by = {st["name"]: st for st in s["steps"]}
    assert by["a"]["ok"] and by["a"]["counts"] == {"passed": 4, "skipped": 1}
    assert not by["b"]["ok"] and by["b"]["disallowed_skips"] == [[2, "tests/y.py:3", "no CUDA device"]]
    assert not by["c"]["ok"] and by["c"]["counts"] == {"failed": 1, "passed": 1}
    assert not s["ok"]
    cpu = summarize_run.summarize(tmp_path, gpu=False, allowed="TensorRT")
    assert [st["ok"] for st in cpu["steps"]] == [True, True, False]  # without a GPU skips are listed only


def test_summary_status_5_signals_and_parity(tmp_path):
    _step(tmp_path, "collected_nothing", "pytest", 5, "no tests ran in 0.1s\n", 1)
    _step(tmp_path, "all_skipped", "pytest", 5, "SKIPPED [1] t.py:1: no GPU\n1 skipped in 0.1s\n", 2)
    _step(tmp_path, "segv", "cmd", 139, "", 3)
    report = tmp_path / "p.json"
    report.write_text(json.dumps({"backends": [{"name": "torch", "status": "pass", "reason": None},
                                               {"name": "ort-cuda", "status": "skipped", "reason": "no CUDA EP"}]}))
    _step(tmp_path, "parity", "parity", 0, "torch: PASS\n[proc_probe] END rc=0 pid=1\n", 4, json=report)
    _step(tmp_path, "parity_died", "parity", 0, "torch: PASS\n", 5, json=tmp_path / "missing.json")
    s = summarize_run.summarize(tmp_path, gpu=False, allowed="TensorRT")
    by = {st["name"]: st for st in s["steps"]}
    assert not by["collected_nothing"]["ok"] and "no tests ran" in by["collected_nothing"]["problems"][0]
    assert by["all_skipped"]["ok"]
    assert by["segv"]["problems"] == ["killed by signal 11 (status 139)"]
    assert by["parity"]["ok"] and by["parity"]["counts"] == {"passed": 1, "skipped": 1}
    assert not by["parity_died"]["ok"]
    assert any("end marker" in p for p in by["parity_died"]["problems"])
    gpu = summarize_run.summarize(tmp_path, gpu=True, allowed="TensorRT")
    assert not {st["name"]: st for st in gpu["steps"]}["parity"]["ok"]  # a skipped backend on a GPU


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_run_all_dry_run_plans_every_step(tmp_path):
    env = dict(os.environ, HLA_GPU_LOG_DIR=str(tmp_path / "logs"), PYTHON=sys.executable)
    p = subprocess.run(["bash", str(GPU_DIR / "run_all.sh"), "--dry-run"], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    for name in ("triton", "ort_runtime_cuda", "benchmarks_smoke", "parity_cuda", "gpu_test_ort_cuda_ep"):
        assert f"step {name} " in p.stdout, p.stdout
    planned = next(ln for ln in p.stdout.splitlines() if "test steps planned" in ln)
    assert "diagnose" not in planned, planned  # the opt-in steps run only when named
    assert "collect: " in p.stdout and "tests collected" in p.stdout, p.stdout
    bad = subprocess.run(["bash", str(GPU_DIR / "run_all.sh"), "--nope"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert bad.returncode == 2 and "unknown option '--nope'" in bad.stderr
