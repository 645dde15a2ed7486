"""How long a training run lasts and its learning rate along the way.

A run's budget is either a number of optimiser steps (`train.epochs` x `train.iterations_per_epoch`, or
`train.budget_steps`) or a wall-clock time (`train.budget_minutes`; unset: a default per device). The learning-rate
schedule (linear warm-up, then constant, poly or cosine) is stretched over the budget: its progress is the share of
the budget spent, in steps or in seconds. A step budget makes a resumed run equal an uninterrupted one on the CPU; a
time budget does not (how many steps fit in the time depends on the machine's speed, also after a resume), but the
time already spent before an interruption counts.
"""

import math
import time
from dataclasses import dataclass

DEFAULT_BUDGET_MINUTES = {"cpu": 10.0, "cuda": 5.0}  # train.budget_minutes: null, per device type
FALLBACK_BUDGET_MINUTES = 10.0  # other device types (mps)


@dataclass(frozen=True)
class Budget:
    """Either `steps` optimiser steps or `seconds` of training (validation included); `warmup` steps of linear
    warm-up come first."""

    steps: int | None = None
    seconds: float | None = None
    warmup: int = 0

    def spent(self, step: int, elapsed: float) -> bool:
        """Whether the run is over after `step` steps and `elapsed` seconds."""
        return step >= self.steps if self.steps is not None else elapsed >= self.seconds

    def progress(self, step: int, elapsed: float) -> float:
        """Share of the budget after the warm-up that is spent, in [0, 1]: the schedule's clock."""
        if self.steps is not None:
            return min(1.0, max(0, step - self.warmup) / max(1, self.steps - self.warmup))
        return min(1.0, elapsed / self.seconds)

    def epochs(self, iterations_per_epoch: int) -> int | None:
        """The number of epochs of a step budget (the last one may be shorter), None for a time budget."""
        return None if self.steps is None else math.ceil(self.steps / iterations_per_epoch)

    def describe(self) -> str:
        """The budget in words, for the log."""
        return f"{self.steps} steps" if self.steps is not None else f"{self.seconds / 60:g} minutes"


def training_budget(cfg: dict, device_type: str) -> Budget:
    """The budget a `train` section asks for: `epochs` when set (epochs x iterations_per_epoch steps), else
    `budget_steps`, else `budget_minutes` (null: DEFAULT_BUDGET_MINUTES of the device type)."""
    warmup = cfg["warmup_iterations"]
    if cfg["epochs"] is not None:
        return Budget(steps=cfg["epochs"] * cfg["iterations_per_epoch"], warmup=warmup)
    if cfg["budget_steps"] is not None:
        return Budget(steps=cfg["budget_steps"], warmup=warmup)
    minutes = cfg["budget_minutes"]
    if minutes is None:
        minutes = DEFAULT_BUDGET_MINUTES.get(device_type, FALLBACK_BUDGET_MINUTES)
    return Budget(seconds=60.0 * minutes, warmup=warmup)


def lr_factor(step: int, progress: float, schedule: str, warmup: int) -> float:
    """Learning-rate multiplier at `step`: linear warm-up over `warmup` steps, then constant, poly (power 0.9,
    nnU-Net) or cosine at `progress` (share of the budget spent after the warm-up, 0..1)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "poly":
        return (1 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


class Clock:
    """Seconds a run has spent, across resumes: `before` (saved by an interrupted run) plus the time since start."""

    def __init__(self, before: float = 0.0):
        self.before, self.start = before, time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start
