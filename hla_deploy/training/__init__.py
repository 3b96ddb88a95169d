"""Helpers for training HLA models fast on one GPU (examples/train_tiny_lm.py uses them all).

    precision.py   "fp32" | "bf16" autocast: float32 master weights and HLA state, bf16 Triton operands
    batches.py     WindowSampler: the corpus on the device once, random windows drawn there
    budget.py      the step count from the run's own timed warm-up steps; the hard deadline
    compile.py     torch.compile of the model's blocks (the HLA op stays one opaque custom op)
    profiling.py   StepProfiler: torch.profiler over N steps, a table, a trace and a summary
"""
from __future__ import annotations

from .batches import WindowSampler
from .budget import Deadline, StepWindow, steps_for_budget
from .compile import compile_blocks, eager, uncompile_blocks
from .precision import PRECISIONS, autocast, check_precision, default_precision
from .profiling import StepProfiler

__all__ = ["WindowSampler", "Deadline", "StepWindow", "steps_for_budget", "compile_blocks", "eager",
           "uncompile_blocks", "PRECISIONS", "autocast", "check_precision", "default_precision",
           "StepProfiler"]
