"""The quality curve beside the loss: KID of samples against the training images, per step.

The loss says little about sample quality (it is dominated by which timesteps were drawn);
KID at a small N is unbiased, so its points can be compared along a run and against the dashed
line of real images against real images at the same N, the best a model can do.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from .plot_grid import show_grid


class QualityPlot(pg.PlotWidget):
    """KID (mean ± std) per training step, with the real-vs-real reference as a dashed line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="w")
        self.setObjectName("qualityPlot")
        item = self.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "KID (lower is better)")
        item.getAxis("left").enableAutoSIPrefix(False)  # KID is small: "0.02", not "20 (x0.001)"
        show_grid(item)
        item.addLegend(offset=(-10, 10))
        self.curve = item.plot(name="samples vs training images", pen=pg.mkPen((200, 90, 30), width=2),
                               symbol="o", symbolSize=6, symbolBrush=(200, 90, 30))
        self.spread = pg.ErrorBarItem(pen=pg.mkPen((200, 90, 30, 120)))
        item.addItem(self.spread)
        self.reference = item.plot(name="real vs real", pen=pg.mkPen((90, 90, 90), width=1, style=Qt.PenStyle.DashLine))
        self.results: list[Any] = []

    def add(self, result: Any) -> None:
        """One point (a ``core.evaluate.EvalResult`` with a step)."""
        self.results.append(result)
        self._redraw()

    def set_results(self, results: list[Any]) -> None:
        self.results = list(results)
        self._redraw()

    def _redraw(self) -> None:
        points = sorted((r for r in self.results if r.step is not None), key=lambda r: r.step)
        steps = np.array([r.step for r in points], dtype=np.float64)
        kid = np.array([r.kid_mean for r in points], dtype=np.float64)
        std = np.array([r.kid_std for r in points], dtype=np.float64)
        self.curve.setData(steps, kid)
        self.spread.setData(x=steps, y=kid, height=2 * std)
        refs = [r.reference_kid_mean for r in points if r.reference_kid_mean is not None]
        if refs and len(steps):
            self.reference.setData([steps.min(), max(steps.max(), steps.min() + 1)], [np.mean(refs)] * 2)
        else:
            self.reference.setData([], [])
        self.setVisible(bool(points))
