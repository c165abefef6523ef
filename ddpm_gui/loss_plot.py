"""The live loss curve: raw and smoothed, fast at 100k+ steps.

Steps arrive far faster than a screen refreshes, so points go into a growing numpy buffer and a
4 Hz timer pushes them to the two curves with ``setData`` (one item each, never one per
point), and only while the plot is on screen. ``setClipToView`` and peak downsampling keep each
redraw proportional to the pixels shown, not the steps trained.

The view's range is the plot's own, not pyqtgraph's auto-range: that one refits to the data at
every refresh, so both axes were laid out and drawn anew four times a second (7.6 ms a repaint,
against 3.2 ms with the range unchanged). Here a range is kept while the data fills enough of it
and refitted with headroom when the data leaves it (:func:`steady_range`), so the axes change a
few times a minute. Panning or zooming by hand hands the range to the user until the "A" button
asks for auto-range again.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from .plot_grid import show_grid

REFRESH_MS = 250  # 4 Hz: live to the eye, and each repaint of the plot is the UI thread's largest task
SMOOTHING = 0.95  # EMA factor of the smoothed curve (span ~20 steps), debiased like TensorBoard's
HEADROOM = 0.2  # a refitted range leaves this fraction of the data's span free past each moving end
MIN_FILL = 0.5  # refit once the data spans less than this fraction of the range (it shrank)


class LossHistory:
    """Steps, raw loss and its debiased EMA in amortised O(1) appends."""

    def __init__(self, capacity: int = 4096) -> None:
        self._data = np.empty((3, capacity), dtype=np.float64)
        self._n = 0
        self._ema = 0.0

    def __len__(self) -> int:
        return self._n

    def append(self, step: int, loss: float) -> None:
        if self._n == self._data.shape[1]:
            self._data = np.concatenate([self._data, np.empty_like(self._data)], axis=1)
        self._ema = SMOOTHING * self._ema + (1 - SMOOTHING) * loss
        smoothed = self._ema / (1 - SMOOTHING ** (self._n + 1))
        self._data[:, self._n] = (step, loss, smoothed)
        self._n += 1

    def clear(self) -> None:
        self._n, self._ema = 0, 0.0

    @property
    def steps(self) -> np.ndarray:
        return self._data[0, : self._n]

    @property
    def loss(self) -> np.ndarray:
        return self._data[1, : self._n]

    @property
    def smoothed(self) -> np.ndarray:
        return self._data[2, : self._n]


class StepAxis(pg.AxisItem):
    """A step axis that labels whole steps only: a run 3 steps in has no step 1.5."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph override
        levels = [(spacing, [v for v in values if float(v).is_integer()])
                  for spacing, values in super().tickValues(minVal, maxVal, size) if spacing >= 1]
        return levels or [(1.0, [float(v) for v in range(int(np.ceil(minVal)), int(maxVal) + 1)])]

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph override
        return [f"{int(round(v * scale)):,}" for v in values]


def log_ticks(low: float, high: float, count: int = 5) -> list[tuple[float, str]]:
    """Tick positions (log10) and labels for a log axis spanning less than a decade, where
    pyqtgraph would label none: ``count`` values evenly spaced in log, to two digits."""
    values = sorted({float(f"{v:.2g}") for v in np.geomspace(low, high, count)})
    return [(float(np.log10(v)), f"{v:g}") for v in values if v > 0]


def steady_range(current: tuple[float, float] | None, low: float, high: float, *,
                 floor: float | None = None) -> tuple[float, float]:
    """The range to show data spanning ``[low, high]``: ``current`` while it still holds the data
    and the data fills at least ``MIN_FILL`` of it, else a new one with ``HEADROOM`` on both
    sides (not below ``floor``), so a steadily growing curve moves the range rarely."""
    span = high - low
    if current is not None:
        a, b = current
        if a <= low and high <= b and span >= MIN_FILL * (b - a):
            return current
    if span <= 0:  # one value: centred, whatever the floor
        pad = max(abs(high) * HEADROOM, 0.5)
        return low - pad, high + pad
    pad = HEADROOM * span
    start = low - pad if floor is None else max(low - pad, min(floor, low))
    return start, high + pad


class LossPlot(pg.PlotWidget):
    """Loss against step; call :meth:`add` per step, the curves follow at 4 Hz."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="w", axisItems={"bottom": StepAxis("bottom")})
        self.setObjectName("lossPlot")
        self.history = LossHistory()
        item = self.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "loss (MSE of predicted noise)")
        item.getAxis("left").enableAutoSIPrefix(False)  # log-axis positions are exponents, not values
        show_grid(item)
        item.addLegend(offset=(-10, 10))
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self.raw_curve = item.plot(name="loss", pen=pg.mkPen((120, 160, 220), width=1))
        self.smooth_curve = item.plot(name="smoothed", pen=pg.mkPen((20, 70, 170), width=2))
        self._follow = True  # the plot sets the view's range; False once the user has set it
        self._ranges: tuple[tuple[float, float], tuple[float, float]] | None = None  # last set
        view = item.getViewBox()
        view.sigRangeChangedManually.connect(self._hand_range_to_user)
        view.sigStateChanged.connect(self._follow_if_auto_asked)
        self._follow_data()
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    def add(self, step: int, loss: float) -> None:
        """Record one step; cheap enough to call for every step."""
        self.history.append(step, loss)
        self._dirty = True

    def set_log_y(self, on: bool) -> None:
        self.getPlotItem().setLogMode(y=on)
        self._follow_data()
        self._dirty = True
        self.refresh()

    def clear_history(self) -> None:
        self.history.clear()
        self._dirty = True
        self.refresh()

    def refresh(self) -> None:
        """Push the buffer to the curves if anything changed since the last refresh and the plot
        is on screen (one hidden behind another page catches up when shown)."""
        if not self._dirty or not self.isVisible():
            return
        self._dirty = False
        h = self.history
        symbol = "o" if len(h) == 1 else None  # a single point has no line to draw
        self.raw_curve.setData(h.steps, h.loss, symbol=symbol, symbolSize=7, symbolBrush=(120, 160, 220))
        self.smooth_curve.setData(h.steps, h.smoothed)
        self._label_log_axis()
        self._range_to_data()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self.refresh()

    def _range_to_data(self) -> None:
        """Keep the data in view with :func:`steady_range`, unless the user has set the range."""
        h = self.history
        if not self._follow or not len(h):
            return
        log_y = self.getPlotItem().ctrl.logYCheck.isChecked()
        curves = (h.loss, h.smoothed)
        low = min(float(np.min(c, where=c > 0 if log_y else True, initial=np.inf)) for c in curves)
        high = max(float(np.max(c)) for c in curves)
        if not np.isfinite(low):
            return  # a log axis with no positive loss to show
        y_range = (np.log10(low), np.log10(high)) if log_y else (low, high)
        ranges = (steady_range(self._ranges and self._ranges[0], float(h.steps[0]), float(h.steps[-1]),
                               floor=float(h.steps[0])),
                  steady_range(self._ranges and self._ranges[1], *map(float, y_range),
                               floor=None if log_y else 0.0))  # no room below a zero loss
        if ranges != self._ranges:
            self._ranges = ranges
            self.getPlotItem().getViewBox().setRange(xRange=ranges[0], yRange=ranges[1], padding=0)

    def _follow_data(self) -> None:
        """The plot sets the range from now on (see the module's docstring)."""
        self._follow, self._ranges = True, None
        self.getPlotItem().getViewBox().disableAutoRange()
        self._dirty = True

    def _hand_range_to_user(self) -> None:
        self._follow = False

    def _follow_if_auto_asked(self) -> None:
        """pyqtgraph's "A" button turns its auto-range on: that means "follow the data again"."""
        if any(self.getPlotItem().getViewBox().autoRangeEnabled()):
            self._follow_data()
            self.refresh()

    def _label_log_axis(self) -> None:
        """Label a log axis that spans less than a decade (early training) with our own ticks."""
        axis, losses = self.getPlotItem().getAxis("left"), self.history.loss
        positive = losses[losses > 0]
        narrow = self.getPlotItem().ctrl.logYCheck.isChecked() and positive.size
        if narrow and positive.max() < 10 * positive.min():
            axis.setTicks([log_ticks(positive.min(), positive.max())])
        else:
            axis.setTicks(None)
