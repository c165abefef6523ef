"""The learning rate over a run: an optional linear warm-up, then constant or a cosine decay.

A short run gains most from decaying to zero exactly where it ends (the last steps average out
the gradient noise that a constant rate keeps injecting), so the decay follows the run's own
end: ``progress`` is the fraction of the run done, by steps or, for a time budget, by elapsed
training time, whichever is further along.
"""
from __future__ import annotations

import math
from typing import Literal

LrScheduleKind = Literal["constant", "cosine"]


def lr_factor(kind: LrScheduleKind, step: int, warmup_steps: int, progress: float) -> float:
    """The multiplier of the base learning rate for the step after ``step`` completed steps.

    Warm-up ramps linearly over the first ``warmup_steps`` steps (1/w, 2/w, ..., 1), which keeps
    Adam's first updates, made with poorly estimated second moments, small. ``cosine`` then goes
    from 1 at progress 0 to 0 at progress 1 as 0.5 (1 + cos(pi progress)) (Loshchilov & Hutter
    2017, without restarts).
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if kind == "constant":
        return warm
    if kind == "cosine":
        p = min(max(progress, 0.0), 1.0)
        return warm * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown lr_schedule {kind!r}")


def run_progress(step: int, total_steps: int, elapsed_s: float, budget_s: float | None) -> float:
    """How far along a run is, from 0 to 1: by steps, or by time used of a budget if further."""
    by_steps = step / max(total_steps, 1)
    if budget_s is None:
        return by_steps
    return max(by_steps, elapsed_s / budget_s)
