"""Python's cycle collector, run on the UI thread only, and kept short there."""
from __future__ import annotations

import gc
import sys

from PySide6.QtCore import QObject, QTimer


class UiThreadCollector(QObject):
    """Collects cycles from a UI-thread timer, with automatic collection turned off.

    Left automatic, the collector runs on whichever thread allocates when a threshold is crossed,
    often a worker building a model; if the cycle it frees holds a Qt object, Qt's destructor runs
    on that thread and waits for a Qt lock the UI thread holds while it waits for the GIL: the
    window and the worker freeze together. (pyqtgraph's ``GarbageCollector`` does the same.)

    Run on the UI thread, a full collection holds the window for as long as it takes to traverse
    every tracked object. Modules a worker imports after start-up are most of them: the first
    resize of a dataset or the first grid imports torchvision, and with it torch._dynamo and
    sympy, some 150,000 objects that made each full collection a 200-400 ms stall during
    training. Module objects live as long as the process, so whenever new modules have appeared
    everything tracked is frozen out of the collector's sight (``gc.freeze``, a constant-time
    move); the cost is that cycles already garbage at that moment are never freed, a few objects
    each time the app imports something new.
    """

    def __init__(self, interval_s: float, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._modules = len(sys.modules)
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(round(interval_s * 1000))

    def check(self) -> None:
        if len(sys.modules) != self._modules:
            self._modules = len(sys.modules)
            gc.freeze()
        # CPython's own rule: a generation is due once its count passes its threshold, an older
        # one only when every younger one is due too; collecting it collects the younger ones.
        counts = gc.get_count()
        due = [g for g in range(3) if all(counts[y] > self._thresholds[y] for y in range(g + 1))]
        if due:
            gc.collect(due[-1])
