"""`--profile-steps N`: torch.profiler over N training steps, written where the run writes.

    prof = StepProfiler(out_dir, start=5, steps=N, device=device)
    ... before each step: prof.before_step(done); after it: prof.after_step(done, sync)

Files (out_dir/profile/): `profile_table.txt`, the ops ordered by self device time (CPU time
without CUDA), totals over the N steps; `trace.json.gz`, the timeline for chrome://tracing or
ui.perfetto.dev. `summary` (a dict, also `profile_summary.json`) says where a step's time goes:
wall time per step, device (kernel) time per step and their ratio (a ratio well below 1: the GPU
waits for the host, i.e. launch-bound), kernel launches per step, the top ops.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import torch


def _self_device_us(evt) -> float:
    return float(getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0.0)) or 0.0)


class StepProfiler:
    def __init__(self, out_dir: Path, start: int, steps: int, device: torch.device):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"--profile-steps must be an int >= 0, got {steps!r}")
        self.dir = Path(out_dir) / "profile"
        self.start, self.steps = start, steps
        self.cuda = torch.device(device).type == "cuda"
        self.summary: Optional[dict] = None
        self._prof = None
        self._t0 = 0.0

    @property
    def active(self) -> bool:
        return self._prof is not None

    def covers(self, done: int) -> bool:
        """Whether the step after ``done`` completed steps is (or was) profiled."""
        return self.steps > 0 and self.start <= done < self.start + self.steps

    def before_step(self, done: int, sync: Callable[[], None]) -> None:
        if self.steps and done == self.start and self._prof is None and self.summary is None:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            sync()
            try:
                self._prof = torch.profiler.profile(activities=acts)
                self._prof.__enter__()
            except Exception as exc:  # noqa: BLE001 (a profiler that cannot start must not stop training)
                self._prof = None
                self.summary = {"error": f"the profiler did not start: {type(exc).__name__}: {exc}"[:300]}
            self._t0 = time.perf_counter()

    def after_step(self, done: int, sync: Callable[[], None]) -> None:
        if self._prof is None or done != self.start + self.steps:
            return
        sync()
        wall = time.perf_counter() - self._t0
        prof, self._prof = self._prof, None
        try:
            prof.__exit__(None, None, None)
            self.summary = self._write(prof, wall)
        except Exception as exc:  # noqa: BLE001 (as above: the run goes on and records why)
            self.summary = {"error": f"the profile could not be written: {type(exc).__name__}: {exc}"[:300],
                            "steps": self.steps, "after_step": self.start, "wall_ms_per_step": wall / self.steps * 1e3}

    def _write(self, prof, wall: float) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        n = self.steps
        sort_key = "self_device_time_total" if self.cuda else "self_cpu_time_total"
        avgs = prof.key_averages()
        (self.dir / "profile_table.txt").write_text(
            f"torch.profiler over {n} training steps (after {self.start} steps), {wall / n * 1e3:.2f} ms "
            f"wall per step; totals over the {n} steps, sorted by {sort_key}\n\n"
            + avgs.table(sort_by=sort_key, row_limit=40) + "\n")
        raw = self.dir / f".trace.{os.getpid()}.json"
        prof.export_chrome_trace(str(raw))
        with open(raw, "rb") as src, gzip.open(self.dir / "trace.json.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA] if self.cuda else []
        device_us = sum(_self_device_us(e) for e in avgs) if self.cuda else 0.0
        top = sorted(avgs, key=_self_device_us if self.cuda else (lambda e: e.self_cpu_time_total),
                     reverse=True)[:12]
        summary = {
            "steps": n, "after_step": self.start, "wall_ms_per_step": wall / n * 1e3,
            "device_ms_per_step": device_us / n / 1e3 if self.cuda else None,
            "device_busy_fraction": (device_us / 1e6) / wall if self.cuda and wall > 0 else None,
            "kernels_per_step": len(kernels) / n if self.cuda else None,
            "top_ops": [{"name": e.key, "calls_per_step": e.count / n,
                         "self_ms_per_step": (_self_device_us(e) if self.cuda else e.self_cpu_time_total) / n / 1e3}
                        for e in top],
            "files": ["profile/profile_table.txt", "profile/trace.json.gz"],
        }
        (self.dir / "profile_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary
