"""The training controller: one run at a time on a worker thread, driven by the window.

``core.trainer.Trainer`` calls ``on_event`` on its own thread; each event is forwarded as the
``event`` signal (queued, so handlers run on the UI thread). Pause / resume / stop go straight
to the trainer, which is thread-safe and acts within one step. Requests made while the trainer
is still being built (model construction takes a moment) are remembered and applied once it
exists, so Stop always works.
"""
from __future__ import annotations

import threading
from enum import Enum
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from core.config import Config
from core.events import Failed, Paused, Resumed, Started

from .banner import error_text
from .engine import for_display, logged_losses
from .workers import Worker


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
        self._lock = threading.Lock()
        self._trainer: Any = None
        self._want_pause = False
        self._want_stop = False
        self._failure = ""
        self._result: Any = None

    def is_active(self) -> bool:
        return self.state is not State.IDLE

    def start(self, config: Config, run_dir: Path, *, dataset: Any = None, resume: bool = False) -> None:
        if self.is_active():
            raise RuntimeError("a run is already active")
        self.run_dir, self._failure = Path(run_dir), ""
        self._want_pause = self._want_stop = False
        self._trainer = None
        worker = Worker(lambda w: self._train(w, config, dataset, resume), self)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_state(State.STARTING)
        worker.start()

    def _train(self, worker: Worker, config: Config, dataset: Any, resume: bool) -> Any:
        """On the worker thread: build the trainer, apply early requests, run to the end."""
        from core.trainer import Trainer


        def on_event(event: Any) -> None:
            if resume and isinstance(event, Started):
                # the trainer has restored its checkpoint and cut the log back to it by now
                worker.report(logged_losses(self.run_dir))
            worker.report(for_display(event))

        from core.allocator import release_freed_memory

        trainer = Trainer(config, self.run_dir, dataset=dataset, resume=resume, on_event=on_event)
        with self._lock:
            self._trainer = trainer
            if self._want_stop:
                trainer.request_stop()
            elif self._want_pause:
                trainer.request_pause()
        try:
            return trainer.run()
        finally:
            release_freed_memory()  # the window lives on: what the steps kept goes back to the system

    def _call(self, method: str, **want: bool) -> None:
        with self._lock:
            for name, value in want.items():
                setattr(self, f"_want_{name}", value)
            if self._trainer is not None:
                getattr(self._trainer, method)()

    def pause(self) -> None:
        if self.state in (State.STARTING, State.RUNNING):
            self._call("request_pause", pause=True)

    def resume(self) -> None:
        if self.state is State.PAUSED or self._want_pause:
            self._call("request_resume", pause=False)

    def stop(self) -> None:
        """Ask the run to end; it saves a checkpoint, then ``ended`` fires."""
        if self.is_active() and self.state is not State.STOPPING:
            self._call("request_stop", stop=True)
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
        with self._lock:
            self._trainer = None
        result, self._result = self._result, None
        self._set_state(State.IDLE)
        self.ended.emit(result)

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self.stateChanged.emit(state.value)
