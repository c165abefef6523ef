"""Work split with next_turn lets the timers already due run in between."""
from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer

from ddpm_gui.turns import next_turn


def test_a_due_timer_runs_between_two_turns_of_split_work(qtbot):
    owner, order = QObject(), []
    beat = QTimer()
    beat.setTimerType(Qt.TimerType.PreciseTimer)
    beat.timeout.connect(lambda: order.append("beat"))
    beat.start(5)

    def first() -> None:
        order.append("first")
        busy_until = time.perf_counter() + 0.010  # a slot longer than the beat's interval
        while time.perf_counter() < busy_until:
            pass
        next_turn(owner, lambda: order.append("second"))

    next_turn(owner, first)
    qtbot.waitUntil(lambda: "second" in order)
    beat.stop()
    assert "beat" in order[order.index("first"):order.index("second")]


def test_work_is_dropped_with_its_owner(qtbot):
    owner, kept, ran = QObject(), QObject(), []
    next_turn(owner, lambda: ran.append("dropped"))
    next_turn(kept, lambda: ran.append("kept"))
    del owner  # the last reference: Qt deletes the object, and its timer with it
    qtbot.waitUntil(lambda: bool(ran))
    assert ran == ["kept"]
