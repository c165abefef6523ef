"""The live loss plot keeps its axes still while the data stays in view, and draws only on screen."""
from __future__ import annotations

import pytest

from ddpm_gui.loss_plot import HEADROOM, MIN_FILL, LossPlot, steady_range


def test_a_range_that_holds_the_data_is_kept():
    assert steady_range((0.0, 10.0), 1.0, 9.0) == (0.0, 10.0)


def test_data_past_the_range_refits_with_headroom_on_both_sides():
    low, high = steady_range((0.0, 10.0), 2.0, 12.0)
    assert low == pytest.approx(2.0 - HEADROOM * 10) and high == pytest.approx(12.0 + HEADROOM * 10)


def test_data_shrunk_below_the_minimum_fill_refits():
    shrunk = MIN_FILL * 100 * 0.9
    assert steady_range((0.0, 100.0), 10.0, 10.0 + shrunk) != (0.0, 100.0)
    kept = MIN_FILL * 100 * 1.1
    assert steady_range((0.0, 100.0), 10.0, 10.0 + kept) == (0.0, 100.0)


def test_the_floor_keeps_a_refit_from_showing_room_below_it():
    assert steady_range(None, 0.01, 1.0, floor=0.0)[0] == 0.0
    assert steady_range(None, 1.0, 500.0, floor=1.0)[0] == 1.0


def test_a_single_value_is_centred():
    low, high = steady_range(None, 7.0, 7.0, floor=7.0)
    assert low < 7.0 < high and 7.0 - low == pytest.approx(high - 7.0)


def shown_plot(qtbot) -> LossPlot:
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(500, 300)
    plot.show()
    qtbot.waitExposed(plot)
    return plot


def view_range(plot: LossPlot) -> list[list[float]]:
    return plot.getPlotItem().getViewBox().viewRange()


def add_steps(plot: LossPlot, start: int, stop: int) -> None:
    for step in range(start, stop):
        plot.add(step, 1.0 / step)
    plot.refresh()


def test_the_view_stays_still_while_new_steps_fit_and_follows_when_they_do_not(qtbot):
    plot = shown_plot(qtbot)
    add_steps(plot, 1, 101)
    first = view_range(plot)
    assert first[0][0] <= 1 and first[0][1] >= 100
    add_steps(plot, 101, 105)  # within the headroom
    assert view_range(plot) == first
    add_steps(plot, 105, 400)
    grown = view_range(plot)
    assert grown[0][1] >= 399 and grown != first


def test_panning_by_hand_keeps_the_users_range_until_auto_range_is_asked_for(qtbot):
    plot = shown_plot(qtbot)
    add_steps(plot, 1, 101)
    view = plot.getPlotItem().getViewBox()
    view.setRange(xRange=(20, 40), padding=0)
    view.sigRangeChangedManually.emit(view.state["mouseEnabled"])  # what a drag or a wheel emits
    add_steps(plot, 101, 400)
    assert view_range(plot)[0] == pytest.approx([20, 40])
    view.enableAutoRange()  # the "A" button
    assert view_range(plot)[0][1] >= 399


def test_a_hidden_plot_draws_nothing_and_catches_up_when_shown(qtbot):
    plot = shown_plot(qtbot)
    add_steps(plot, 1, 11)
    plot.hide()
    add_steps(plot, 11, 21)
    assert len(plot.raw_curve.xData) == 10
    plot.show()
    assert len(plot.raw_curve.xData) == 20
