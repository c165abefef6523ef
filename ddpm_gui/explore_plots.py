"""The Explore page's two plots: the schedule (beta_t, alpha_bar_t, log-SNR) of the config with
the other kind overlaid, and the model's loss at each timestep for several models at once."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from .plot_grid import show_grid

#: (attribute of core.explore.ScheduleCurves, axis label)
QUANTITIES = (("betas", "β_t"), ("alpha_bar", "ᾱ_t"), ("log_snr", "log-SNR(t)"))
MINE_PEN = pg.mkPen((31, 111, 235), width=2)
OTHER_PEN = pg.mkPen((200, 110, 30), width=2, style=Qt.PenStyle.DashLine)
MARKER_PEN = pg.mkPen((90, 90, 90), width=1)
LEGEND_TEXT = (40, 40, 40)
#: Curves of the loss plot, one colour each in the order they are added.
CURVE_COLOURS = ((31, 111, 235), (200, 60, 40), (40, 150, 70), (140, 70, 180), (200, 140, 20))


class SchedulePlot(pg.GraphicsLayoutWidget):
    """Three stacked plots sharing the t axis, each with both schedules and a marker at t."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("schedulePlot")
        self.setBackground("w")
        #: (quantity, "mine" | "other") -> curve; the window's tests read them
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self.markers: list[pg.InfiniteLine] = []
        self._marked = 0  # the t the markers show once visible
        first = None
        for row, (name, label) in enumerate(QUANTITIES):
            plot = self.addPlot(row=row, col=0)
            plot.setLabel("left", label)
            show_grid(plot)
            if first is None:
                first = plot
                plot.addLegend(offset=(10, 5), labelTextColor=LEGEND_TEXT)  # top left, where both betas are small
            else:
                plot.setXLink(first)
            if row == len(QUANTITIES) - 1:
                plot.setLabel("bottom", "t")
            if name == "betas":
                plot.setLogMode(y=True)  # the cosine schedule's last betas near 1 would flatten the rest
            self.curves[name, "mine"] = plot.plot(pen=MINE_PEN)
            self.curves[name, "other"] = plot.plot(pen=OTHER_PEN)
            marker = pg.InfiniteLine(0, angle=90, pen=MARKER_PEN)
            plot.addItem(marker)
            self.markers.append(marker)
        self._legend = first.legend

    def set_curves(self, mine: Any, other: Any) -> None:
        """Show two ``core.explore.ScheduleCurves``: the config's (solid) and the other (dashed)."""
        self._legend.clear()
        for which, curves in (("mine", mine), ("other", other)):
            for name, _ in QUANTITIES:
                values = getattr(curves, name)
                self.curves[name, which].setData(np.arange(len(values)), values)
        title = "{} (this config)".format(mine.kind)
        self._legend.addItem(self.curves["betas", "mine"], title)
        self._legend.addItem(self.curves["betas", "other"], f"{other.kind} (for comparison)")

    def set_marker(self, t: int) -> None:
        """Mark ``t``; while the plot is hidden (another tab) only once it is shown again: moving
        the markers of a hidden plot still cost its scene 4-7 ms a slider move."""
        self._marked = t
        if self.isVisible():
            for marker in self.markers:
                marker.setValue(t)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self.set_marker(self._marked)


class LossByTimestepPlot(pg.PlotWidget):
    """Mean loss against t, one curve per model; log scale, where early and late noise levels'
    losses (a hundredfold apart) both stay readable."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="w")
        self.setObjectName("lossByTimestepPlot")
        item = self.getPlotItem()
        item.setLabel("bottom", "t (noise level)")
        item.setLabel("left", "mean loss (MSE of predicted noise)")
        show_grid(item)
        item.setLogMode(y=True)
        item.addLegend(offset=(10, -10), labelTextColor=LEGEND_TEXT)  # bottom left: losses fall with t
        self.curves: list[pg.PlotDataItem] = []

    def add_curve(self, label: str, timesteps: np.ndarray, loss: np.ndarray) -> None:
        colour = CURVE_COLOURS[len(self.curves) % len(CURVE_COLOURS)]
        self.curves.append(self.getPlotItem().plot(timesteps, loss, name=label, pen=pg.mkPen(colour, width=2),
                                                   symbol="o", symbolSize=4, symbolBrush=colour, symbolPen=None))

    def clear_curves(self) -> None:
        item = self.getPlotItem()
        for curve in self.curves:
            item.removeItem(curve)
        item.legend.clear()
        self.curves.clear()
