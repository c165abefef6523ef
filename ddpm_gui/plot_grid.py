"""The faint grid every plot of the window draws behind its curves.

pyqtgraph draws grid lines with the axes, at every tick level; the third level (ticks between
minor ticks) doubled the cost of repainting the live loss plot (measured: 15-23 ms against 9 ms
for an 800x600 plot), and a plot repainted several times a second while training is the UI
thread's largest single task. Major and minor lines are all a reader uses.
"""
from __future__ import annotations

import pyqtgraph as pg

GRID_ALPHA = 0.25
TICK_LEVELS = 1  # pyqtgraph's maxTickLevel: 0 major, 1 minor, 2 (its default) minor-minor


def show_grid(item: pg.PlotItem) -> None:
    item.showGrid(x=True, y=True, alpha=GRID_ALPHA)
    for side in ("left", "bottom"):
        item.getAxis(side).setStyle(maxTickLevel=TICK_LEVELS)
