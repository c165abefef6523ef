"""Threads that run engine work off the UI thread and report through a small signal set.

Modelled on napari's ``thread_worker``: a worker runs one function and reports
``started`` / ``yielded`` (intermediate results) / ``returned`` / ``errored`` / ``aborted`` /
``finished``. Exactly one of returned, errored or aborted is emitted, then finished. Signals
cross threads as queued connections, so slots always run on the UI thread and views never
touch the engine's objects while it works on them.

Workers run at a lower OS priority (and so do the math-library threads they start): on a
2-core laptop, training at normal priority competes with the UI thread for the same cores and
the window stutters by 100 ms and more; niced, the UI thread always wins when it has work,
and when it has none (almost always) training loses nothing.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QThread, Signal

NICENESS = 10  # Unix nice value for worker threads: well below the UI, still above idle tasks


class Worker(QThread):
    """Runs ``fn(worker)``; ``fn`` reports through :meth:`report` and polls :meth:`should_abort`
    between steps, so an abort takes effect at the next step rather than killing the thread.
    """

    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(object)  # the exception, with its traceback attached
    aborted = Signal()

    def __init__(self, fn: Callable[[Worker], Any], parent: Any = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self._abort = threading.Event()

    def abort(self) -> None:
        """Ask the work to stop at its next check; thread-safe and idempotent."""
        self._abort.set()

    def should_abort(self) -> bool:
        return self._abort.is_set()

    def report(self, value: Any) -> None:
        """Send an intermediate result to the UI thread (from the worker thread)."""
        self.yielded.emit(value)

    def start(self) -> None:  # noqa: D102 - QThread.start, at low priority
        super().start(QThread.Priority.LowPriority)  # honoured on Windows and macOS

    def run(self) -> None:  # noqa: D102 - QThread's entry point
        _lower_thread_priority()
        try:
            result = self._fn(self)
        except BaseException as e:  # noqa: BLE001 - every failure must reach the UI
            if self.should_abort():
                self.aborted.emit()
            else:
                self.errored.emit(e)
            return
        if self.should_abort():
            self.aborted.emit()
        else:
            self.returned.emit(result)


def _lower_thread_priority() -> None:
    """Nice the calling thread (Linux applies nice per thread; Qt's priority does nothing there).

    Threads it starts, such as torch's OpenMP pool, inherit the value.
    """
    if not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except OSError:  # not permitted, or not a per-thread id on this system: keep the default
        pass


class Throttle:
    """Lets a call through at most every ``interval`` seconds (plus the last one when asked).

    Progress callbacks fire per file or per step; forwarding each would flood the UI thread's
    event queue, so workers pass them through one of these.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._last = 0.0

    def ready(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False


#: Workers let go by :func:`stop_workers`, referenced until they end: a QThread object destroyed
#: while its thread runs takes the process down.
_LET_GO: set[Worker] = set()


def stop_workers(workers: list[Worker], timeout_s: float) -> list[Worker]:
    """Abort ``workers`` and wait for them together, ``timeout_s`` in all; return the late ones.

    A worker still running at the deadline is blocked where abort cannot reach (a read from a
    hung network drive, a long kernel call): waiting longer would freeze the window for good.
    It is detached from its parent, so closing the window does not destroy a running thread,
    and kept referenced until it ends.
    """
    for worker in workers:  # all asked first, so they wind down together
        worker.abort()
    deadline = time.monotonic() + timeout_s
    late = [w for w in workers if not w.wait(max(0, round((deadline - time.monotonic()) * 1000)))]
    for worker in late:
        worker.setParent(None)
        _LET_GO.add(worker)
        worker.finished.connect(lambda w=worker: _LET_GO.discard(w))
    return late


class Mailbox:
    """A one-slot queue that keeps only the newest request: a worker serving a slider computes
    for where the slider is now, never for every position it passed on the way."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._value: Any = None
        self._full = False

    def put(self, value: Any) -> None:
        with self._ready:
            self._value, self._full = value, True
            self._ready.notify()

    def take(self, timeout: float) -> tuple[bool, Any]:
        """(True, the newest value) once one arrives, or (False, None) after ``timeout`` seconds
        without one, so the caller can check for an abort between waits."""
        with self._ready:
            if not self._full and not self._ready.wait(timeout):
                return False, None
            value, self._value, self._full = self._value, None, False
            return True, value
