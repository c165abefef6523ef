"""The training controller: one run at a time, driven by the window.

The trainer runs in a child process (``core.training_process``: a trainer thread here would hold
the interpreter lock the UI thread paints with); a worker thread here waits on its events and
forwards each as the ``event`` signal (queued, so handlers run on the UI thread). Pause / resume /
stop go to the worker, which hands them to the child (acted on within one step); requests made
while the child is still starting wait in its pipe, so Stop always works.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from core.config import Config
from core.events import Failed, Paused, Resumed, Started

from .banner import error_text
from .engine import for_display, logged_losses
from .workers import NICENESS, Worker, start_worker


class State(str, Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"


class TrainingRunner(QObject):
    """Starts, pauses, resumes and stops a Trainer; reports events, failures and the end."""

    stateChanged = Signal(str)
    event = Signal(object)  # core.events (PreviewReady as engine.PreviewGrid); on resume,
    # an engine.LossLog of the steps already trained comes just before Started
    failed = Signal(str)  # a message for people: what went wrong and what to do
    ended = Signal(object)  # core.events.Finished, or None after a failure

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = State.IDLE
        self.run_dir: Path | None = None
        self._worker: Worker | None = None
        self._failure = ""
        self._result: Any = None

    def is_active(self) -> bool:
        return self.state is not State.IDLE

    def start(self, config: Config, run_dir: Path, *, dataset: Any = None, resume: bool = False) -> None:
        if self.is_active():
            raise RuntimeError("a run is already active")
        self.run_dir, self._failure = Path(run_dir), ""
        self._set_state(State.STARTING)
        self._worker = start_worker(
            lambda w: self._train(w, config, dataset, resume), self,
            yielded=self._on_event, returned=self._on_returned,
            errored=self._on_error, finished=self._on_finished,
        )

    def _train(self, worker: Worker, config: Config, dataset: Any, resume: bool) -> Any:
        """On the worker thread: run the trainer in a child process, passing its events on."""
        from core.training_process import TrainingProcess

        process = TrainingProcess(config, self.run_dir, dataset=dataset, resume=resume, niceness=NICENESS)
        worker.delegate(process)
        events = process.events()
        while True:
            try:
                event = next(events)
            except StopIteration as done:
                return done.value
            if resume and isinstance(event, Started):
                # the trainer has restored its checkpoint and cut the log back to it by now
                worker.report(logged_losses(self.run_dir))
            worker.report(for_display(event))

    def pause(self) -> None:
        if self.state in (State.STARTING, State.RUNNING):
            self._worker.pause()

    def resume(self) -> None:
        if self.state is State.PAUSED or (self._worker is not None and self._worker.is_paused()):
            self._worker.resume()

    def stop(self) -> None:
        """Ask the run to end; it saves a checkpoint, then ``ended`` fires."""
        if self.is_active() and self.state is not State.STOPPING:
            self._worker.abort()
            self._set_state(State.STOPPING)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Started) and self.state is State.STARTING:
            self._set_state(State.RUNNING)
        elif isinstance(event, Paused) and self.state is not State.STOPPING:
            self._set_state(State.PAUSED)
        elif isinstance(event, Resumed) and self.state is not State.STOPPING:
            self._set_state(State.RUNNING)
        elif isinstance(event, Failed):
            self._failure = event.message
            self.failed.emit(event.message)
        self.event.emit(event)

    def _on_error(self, error: BaseException) -> None:
        message = error_text(error, "Training stopped (the last checkpoint is kept)")
        if message != self._failure:  # the trainer already reported it through a Failed event
            self.failed.emit(message)

    def _on_returned(self, finished: Any) -> None:
        self._result = finished

    def _on_finished(self) -> None:
        """After the thread ends: go idle first, so ``ended`` handlers may start the next run."""
        self._worker.deleteLater()
        self._worker = None
        result, self._result = self._result, None
        self._set_state(State.IDLE)
        self.ended.emit(result)

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self.stateChanged.emit(state.value)
