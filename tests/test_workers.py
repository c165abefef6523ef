"""The one worker pattern: generator work driven off the UI thread, paused and quit between yields.

Each test's work blocks on a gate the test opens, so the test decides where in the generator a
request lands; signals are waited for with ``qtbot.waitSignal``, never with sleeps.
"""
from __future__ import annotations

import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ddpm_gui.workers import Worker, start_worker

TIMEOUT_MS = 10_000


def _logged(work: Callable[[Worker], Any], log: list[str]) -> Worker:
    """Start ``work`` with every signal appended to ``log`` in the order the UI thread sees it."""
    return start_worker(
        work, None,
        yielded=lambda v: log.append(f"yielded {v}"),
        returned=lambda v: log.append(f"returned {v}"),
        errored=lambda e: log.append(f"errored {type(e).__name__}"),
        aborted=lambda: log.append("aborted"),
        paused=lambda: log.append("paused"),
        resumed=lambda: log.append("resumed"),
        finished=lambda: log.append("finished"),
    )


def _gated(gate: threading.Event, reached: list[int], closed: list[bool]) -> Callable[[Worker], Iterator[int]]:
    def work(_worker: Worker) -> Iterator[int]:
        try:
            yield 1
            gate.wait(TIMEOUT_MS / 1000)
            yield 2
            reached.append(3)
            yield 3
            return "done"
        finally:
            closed.append(True)
    return work


def _finish(qtbot, worker: Worker, log: list[str]) -> None:
    qtbot.waitUntil(lambda: "finished" in log, timeout=TIMEOUT_MS)
    worker.wait()


def test_yields_arrive_in_order_then_the_return_value(qtbot):
    log: list[str] = []
    def count(_w: Worker) -> Iterator[int]:
        for i in range(5):
            yield i
        return "done"

    worker = _logged(count, log)
    _finish(qtbot, worker, log)
    assert log == [f"yielded {i}" for i in range(5)] + ["returned done", "finished"]


def test_a_function_is_a_generator_that_yields_nothing(qtbot):
    log: list[str] = []

    def compute(worker: Worker) -> int:
        worker.report("half way")  # a function reports through the same yielded signal
        return 42

    worker = _logged(compute, log)
    _finish(qtbot, worker, log)
    assert log == ["yielded half way", "returned 42", "finished"]


def _gated_worker_at_first_yield(qtbot):
    """A worker on :func:`_gated` work that has yielded once; its log, gate, reached and closed."""
    log: list[str] = []
    gate, reached, closed = threading.Event(), [], []
    worker = _logged(_gated(gate, reached, closed), log)
    qtbot.waitUntil(lambda: "yielded 1" in log, timeout=TIMEOUT_MS)
    return worker, log, gate, reached, closed


def test_pause_and_resume_act_between_yields(qtbot):
    worker, log, gate, reached, closed = _gated_worker_at_first_yield(qtbot)
    with qtbot.waitSignal(worker.paused, timeout=TIMEOUT_MS):
        worker.pause()
        gate.set()  # the work reaches its next yield, then the worker holds it there
    assert log == ["yielded 1", "yielded 2", "paused"]
    assert reached == [] and worker.isRunning()  # the generator did not move past the pause
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        worker.resume()
    worker.wait()
    assert log == ["yielded 1", "yielded 2", "paused", "resumed", "yielded 3", "returned done", "finished"]


def test_quit_between_yields_emits_aborted_then_finished(qtbot):
    worker, log, gate, reached, closed = _gated_worker_at_first_yield(qtbot)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        worker.abort()
        gate.set()
    worker.wait()
    assert log == ["yielded 1", "yielded 2", "aborted", "finished"]
    assert reached == [] and closed == [True]  # closed at the yield, its finally block ran


def test_quit_while_paused_ends_without_resuming(qtbot):
    worker, log, gate, reached, closed = _gated_worker_at_first_yield(qtbot)
    with qtbot.waitSignal(worker.paused, timeout=TIMEOUT_MS):
        worker.pause()
        gate.set()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        worker.abort()
    worker.wait()
    assert log == ["yielded 1", "yielded 2", "paused", "aborted", "finished"]


def test_an_error_reaches_errored_with_its_traceback(qtbot):
    def broken(_worker: Worker) -> Iterator[int]:
        yield 1
        raise ValueError("the third image is unreadable")

    errors: list[BaseException] = []
    log: list[str] = []
    worker = _logged(broken, log)
    worker.errored.connect(errors.append)
    _finish(qtbot, worker, log)
    assert log == ["yielded 1", "errored ValueError", "finished"]
    (error,) = errors
    assert str(error) == "the third image is unreadable"
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert "broken" in frames  # the traceback reaches into the work, where it failed


class _Target:
    """Stands in for the trainer: records the requests it was handed."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_pause(self) -> None:
        self.calls.append("pause")

    def request_resume(self) -> None:
        self.calls.append("resume")

    def request_stop(self) -> None:
        self.calls.append("stop")


@pytest.mark.parametrize("early, expected", [([], []), (["pause"], ["pause"]), (["pause", "abort"], ["stop"])])
def test_a_delegate_gets_requests_made_before_it_existed(qtbot, early, expected):
    target, ready, delegated, go = _Target(), threading.Event(), threading.Event(), threading.Event()

    def work(worker: Worker) -> str:
        ready.wait(TIMEOUT_MS / 1000)
        worker.delegate(target)
        delegated.set()
        go.wait(TIMEOUT_MS / 1000)
        return "finished its own way"

    log: list[str] = []
    worker = _logged(work, log)
    for request in early:
        getattr(worker, request)()
    ready.set()
    qtbot.waitUntil(delegated.is_set, timeout=TIMEOUT_MS)
    assert target.calls == expected
    worker.resume()
    worker.abort()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        go.set()
    worker.wait()
    assert target.calls == expected + ["resume", "stop"]
    assert log == ["returned finished its own way", "finished"]  # the delegate stopped, not the worker


def test_the_worker_lets_go_of_its_delegate_when_the_work_ends(qtbot):
    """The trainer's callbacks refer back to the worker; if the worker kept the trainer, the
    cycle would be collected on some worker thread, destroying the QObject there."""
    target = _Target()
    alive = weakref.ref(target)
    log: list[str] = []
    worker = _logged(lambda w: w.delegate(target), log)
    _finish(qtbot, worker, log)
    del target
    assert alive() is None
