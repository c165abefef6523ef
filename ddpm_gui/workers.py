"""Threads that run engine work off the UI thread and report through a small signal set.

Modelled on napari's ``thread_worker``: a worker runs one generator (or function) and reports
``started`` / ``yielded`` (intermediate results) / ``paused`` / ``resumed`` / ``returned`` /
``errored`` / ``aborted`` / ``finished``. Exactly one of returned, errored or aborted is
emitted, then finished. Signals cross threads as queued connections, so slots always run on
the UI thread and views never touch the engine's objects while it works on them.

Workers run at a lower OS priority (and so do the math-library threads they start): on a
2-core laptop, training at normal priority competes with the UI thread for the same cores and
the window stutters by 100 ms and more; niced, the UI thread always wins when it has work,
and when it has none (almost always) training loses nothing.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol

from PySide6.QtCore import QThread, Signal

NICENESS = 10  # Unix nice value for worker threads: well below the UI, still above idle tasks


class Worker(QThread):
    """Runs ``fn(worker)`` on its own thread; if ``fn`` returns a generator, the worker drives it.

    Each value the generator yields is emitted as ``yielded``; between yields the worker honours
    :meth:`pause` (emitting ``paused``, then ``resumed``) and :meth:`abort` (closing the generator,
    then ``aborted``), so requests take effect at the next step rather than killing the thread. A
    plain function is a generator that yields nothing: it may still report through :meth:`report`
    and poll :meth:`should_abort`. Work that has its own thread-safe pause and stop (the trainer)
    hands them to the worker with :meth:`delegate`, so the window still speaks only to the worker.
    """

    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(object)  # the exception, with its traceback attached
    aborted = Signal()
    paused = Signal()
    resumed = Signal()

    def __init__(self, fn: Callable[[Worker], Any], parent: Any = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self._control = threading.Condition()
        self._abort = False
        self._pause = False
        self._target: Pausable | None = None
        self._delegated = False  # the work handed pause and stop to a target of its own
        self.finished.connect(self._let_go_of_target)  # first of the finished slots

    def abort(self) -> None:
        """Ask the work to stop at its next check; thread-safe and idempotent."""
        with self._control:
            self._abort = True
            self._control.notify_all()
            if self._target is not None:
                self._target.request_stop()

    def pause(self) -> None:
        """Ask the work to wait at its next check until :meth:`resume` or :meth:`abort`."""
        self._set_pause(True)

    def resume(self) -> None:
        self._set_pause(False)

    def is_paused(self) -> bool:
        return self._pause

    def should_abort(self) -> bool:
        return self._abort

    def delegate(self, target: Pausable) -> None:
        """From the work: route pause, resume and abort to ``target`` from now on.

        Requests made before the target existed are applied to it here, under the same lock as
        later ones, so a Stop pressed while the work was still setting up is never lost.
        """
        with self._control:
            self._target, self._delegated = target, True
            if self._abort:
                target.request_stop()
            elif self._pause:
                target.request_pause()

    def report(self, value: Any) -> None:
        """Send an intermediate result to the UI thread (from the worker thread)."""
        self.yielded.emit(value)

    def start(self) -> None:  # noqa: D102 - QThread.start, at low priority
        super().start(QThread.Priority.LowPriority)  # honoured on Windows and macOS

    def run(self) -> None:  # noqa: D102 - QThread's entry point
        lower_thread_priority()
        try:
            result = self._run_work()
        except _Aborted:
            self.aborted.emit()
            return
        except BaseException as e:  # noqa: BLE001 - every failure must reach the UI
            if self._abort and not self._delegated:
                self.aborted.emit()
            else:
                self.errored.emit(e)
            return
        if self._abort and not self._delegated:  # a delegate ends its own way, with a result
            self.aborted.emit()
        else:
            self.returned.emit(result)

    def _run_work(self) -> Any:
        result = self._fn(self)
        return self._drive(result) if isinstance(result, Generator) else result

    def _let_go_of_target(self) -> None:
        """On the UI thread, once the thread has ended: drop the delegate here.

        Its callbacks usually refer back to this worker and the window: left to the garbage
        collector, or dropped on the worker thread, the last references to Qt objects could go
        on a worker thread, and a QObject destroyed there deadlocks PySide against the UI thread.
        """
        with self._control:
            self._target = None

    def _drive(self, work: Generator[Any, None, Any]) -> Any:
        while True:
            self._checkpoint(work)
            try:
                value = next(work)
            except StopIteration as done:
                return done.value
            self.yielded.emit(value)

    def _checkpoint(self, work: Generator[Any, None, Any]) -> None:
        """Between yields: wait out a pause, and end the work if an abort came."""
        with self._control:
            if self._pause and not self._abort:
                self.paused.emit()
                self._control.wait_for(lambda: not self._pause or self._abort)
                if not self._abort:
                    self.resumed.emit()
            if self._abort:
                work.close()  # runs the generator's finally blocks on this thread
                raise _Aborted

    def _set_pause(self, pause: bool) -> None:
        with self._control:
            self._pause = pause
            self._control.notify_all()
            if self._target is not None:
                (self._target.request_pause if pause else self._target.request_resume)()


class Pausable(Protocol):
    """Work with its own thread-safe pause and stop, such as ``core.training_process.TrainingProcess``."""

    def request_pause(self) -> None: ...
    def request_resume(self) -> None: ...
    def request_stop(self) -> None: ...


class _Aborted(Exception):
    """Raised on the worker thread when an abort ends a generator between yields."""


def start_worker(fn: Callable[[Worker], Any], parent: Any, **slots: Callable[..., Any]) -> Worker:
    """Create a worker for ``fn``, connect ``slots`` by signal name (``yielded=...``,
    ``returned=...``, ``finished=...``), and start it: the one way the window starts work."""
    worker = Worker(fn, parent)
    for name, slot in slots.items():
        getattr(worker, name).connect(slot)
    worker.start()
    return worker


def lower_thread_priority() -> None:
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
