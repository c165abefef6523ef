"""Training time: what a time budget (``train_params.max_minutes``) counts and how much is left.

Only time spent in training steps counts: checkpoints, preview grids and pauses do not, so
"train for 10 minutes" gives the same number of steps whether or not previews are on, and a
resumed run continues from the time its checkpoint recorded.
"""
from __future__ import annotations

import time


class TrainClock:
    """Seconds of training so far, and what is left of an optional budget in minutes."""

    def __init__(self, max_minutes: float | None, used_s: float = 0.0) -> None:
        self.budget_s = None if max_minutes is None else max_minutes * 60.0
        self.used_s = used_s
        self._since: float | None = None

    def start(self) -> None:
        """Start (or restart, after something that does not count) counting."""
        self._since = time.perf_counter()

    def lap(self) -> None:
        """Add the time since :meth:`start` (or the last lap) and keep counting."""
        now = time.perf_counter()
        if self._since is not None:
            self.used_s += now - self._since
        self._since = now

    @property
    def left_s(self) -> float | None:
        """Seconds of budget left (never negative), or None without a budget."""
        return None if self.budget_s is None else max(0.0, self.budget_s - self.used_s)

    @property
    def exhausted(self) -> bool:
        return self.budget_s is not None and self.used_s >= self.budget_s
