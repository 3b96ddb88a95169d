"""How long a training run goes on: its step count from a time budget, and a hard deadline.

A run with a time budget does not time a throwaway model first: it times its OWN steps inside
the learning-rate warm-up (whose learning rates do not depend on the total step count), then
sets the total so that training takes about the budget. The run is therefore step for step the
run that `--steps <that total>` would have made with the same seed.

    window = StepWindow.for_run(warmup=100, start_step=0, profile_steps=0)   # steps 5..100
    ... after each step:  window.observe(done, sync)   (records the clock at the window's ends)
    steps = steps_for_budget(budget_s, window, train_t0, overhead=...)      # once window.done

`Deadline` is the hard stop: True once the wall clock passes it (checked after every step, a
clock read, no device sync), so the run always stops, saves and writes its report in time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

#: steps left out before the timing window (the first step compiles Triton / torch.compile code)
WARM_STEPS = 5


@dataclass
class StepWindow:
    """Completed-step counts [start, end] between which the run's step time is measured."""

    start: int
    end: int
    t_start: Optional[float] = None
    t_end: Optional[float] = None

    @classmethod
    def for_run(cls, warmup: int, start_step: int = 0, profile_steps: int = 0,
                need_within_warmup: bool = True) -> "StepWindow":
        """The window after WARM_STEPS (fewer for a short warm-up) and the profiled steps, ending
        with the warm-up. need_within_warmup (a time budget) raises ValueError when fewer than two
        steps fit before the warm-up ends; otherwise the window may extend past it."""
        skip = min(WARM_STEPS, max(1, warmup // 4))
        start = start_step + skip + profile_steps
        end = start_step + warmup
        if end - start < 2:
            if need_within_warmup:
                raise ValueError(f"--time-budget-min times the run's own steps inside the learning-rate "
                                 f"warm-up, after {skip} warm steps and {profile_steps} profiled steps: "
                                 f"--warmup {warmup} leaves {max(0, end - start)} (need >= 2); raise --warmup "
                                 f"or lower --profile-steps")
            end = start + 2
        return cls(start, end)

    def observe(self, done: int, sync: Callable[[], None]) -> None:
        """Call after every step with the number of completed steps; reads the clock (after
        ``sync``, which waits for the device) when ``done`` is an end of the window."""
        if done == self.start and self.t_start is None:
            sync()
            self.t_start = time.perf_counter()
        elif done == self.end and self.t_end is None and self.t_start is not None:
            sync()
            self.t_end = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.t_end is not None

    def step_seconds(self) -> Optional[float]:
        """Seconds per step inside the window (None until it closed)."""
        if not self.done:
            return None
        return (self.t_end - self.t_start) / (self.end - self.start)


def steps_for_budget(budget_s: float, window: StepWindow, train_t0: float, overhead: float = 0.0) -> int:
    """Total step count so that training (from ``train_t0``) takes about ``budget_s`` seconds.
    ``overhead``: extra time per step as a fraction of a step (periodic evaluation)."""
    if not window.done:
        raise RuntimeError("steps_for_budget: the timing window has not closed yet")
    per_step = window.step_seconds() * (1.0 + overhead)
    left = budget_s - (window.t_end - train_t0)
    return max(window.end, window.end + int(left / per_step))


class Deadline:
    """A wall-clock deadline ``seconds`` after ``t0`` (perf_counter); None: never."""

    def __init__(self, t0: float, seconds: Optional[float]):
        self.at = None if seconds is None else t0 + seconds

    def passed(self) -> bool:
        return self.at is not None and time.perf_counter() > self.at
