"""Learning-rate schedules as pure functions of progress: warmup + cosine, WSD, constant.

A schedule returns a multiplier in [0, 1] applied to every parameter group's base learning rate
(so Muon and AdamW groups with different base rates move together). Progress is the fraction of
the run done: steps / max_steps, or elapsed seconds / max_time when a time budget is set.
WSD follows Hu et al. 2024 (MiniCPM): linear warmup, a long flat stage, then a short decay.
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleKind = Literal["cosine", "wsd", "constant"]


def lr_factor(
    kind: ScheduleKind,
    step: int,
    progress: float,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
    decay_frac: float = 0.2,
) -> float:
    """The learning-rate multiplier for optimizer step `step` (0-based) at `progress` in [0, 1].

    Warmup is counted in steps (it protects the first updates whatever the budget); the decay
    follows `progress`, so a wall-clock budget (`train.max_time`) decays on time.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * cosine
    if kind == "wsd":
        decay_start = 1.0 - decay_frac
        if progress <= decay_start or decay_frac <= 0:
            return 1.0
        # Linear cool-down to the floor over the last `decay_frac` of the run.
        frac = (progress - decay_start) / decay_frac
        return 1.0 - (1.0 - min_lr_ratio) * frac
    raise ValueError(f"unknown schedule kind {kind!r}")  # config validation prevents this


def set_lr(optimizer, factor: float) -> float:  # noqa: ANN001 - any torch optimizer
    """Scale every group's `initial_lr` by `factor`; returns the first group's new rate."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]
