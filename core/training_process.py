"""A training run in a child process, driven over two pipes: events out, pause / resume / stop in.

Python runs one thread of a process at a time. A trainer on a thread of the window's process
holds that lock between its operators, and a small model is mostly such Python: the window's
repaints during training took two to three times as long, past what feels instant. A child has
an interpreter of its own, so the window's thread never waits for the steps; the child also gives
all of a run's memory back to the system when it ends.

Children start from a fork server that has already imported the trainer (where the platform has
one), so a run starts in a fraction of a second instead of importing torch again; elsewhere
(Windows) they spawn. The parent's environment goes with every run, so settings made after the
fork server started (a cache folder, a thread count) still apply. The pipes carry pickles made
by this process and its own child only, never a file a user handed over.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Generator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .allocator import tuned_environment
from .config import Config
from .errors import UserError
from .events import Failed, Finished

#: Imported once by the fork server, so that each run's child starts with them loaded.
PRELOAD = ["core.trainer"]


class TrainingProcessDied(UserError):
    """The child ended without a result: killed (on Linux, most often by the kernel when memory
    ran out) or crashed in native code. Said to the user with what usually helps."""

    def __init__(self, exitcode: int | None) -> None:
        how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        super().__init__(
            f"The training process ended unexpectedly ({how}); the checkpoints it wrote are kept, and "
            "Continue resumes from the newest. If the computer ran short of memory, a smaller "
            "train_params.batch_size or micro_batch_size helps."
        )
        self.exitcode = exitcode


class TrainingProcess:
    """One run of :class:`core.trainer.Trainer` in a child process.

    :meth:`events` yields the trainer's events as they come and returns its ``Finished``; the
    ``request_*`` methods may be called from any thread at any time, also before the child has
    built its trainer (they wait in the pipe and apply once it has).
    """

    def __init__(self, config: Config, run_dir: Path, *, dataset: Any = None, resume: bool = False,
                 niceness: int = 0) -> None:
        self._lock = threading.Lock()  # requests come from the UI thread and the worker alike
        context = _context()
        self._events, events_end = context.Pipe(duplex=False)
        control_end, self._control = context.Pipe(duplex=False)
        # plain pickle: multiprocessing's own would hand tensors over through shared-memory
        # handles that need a helper thread on both sides; a run's data is copied once instead
        job = pickle.dumps((config, Path(run_dir), dataset, resume, niceness, dict(os.environ)))
        self._process = context.Process(target=_child_main, name="ddpm-training", daemon=True,
                                        args=(job, events_end, control_end))
        self._process.start()
        events_end.close()  # the child holds these ends now: a closed pipe then means it has ended
        control_end.close()

    def request_pause(self) -> None:
        self._send("pause")

    def request_resume(self) -> None:
        self._send("resume")

    def request_stop(self) -> None:
        self._send("stop")

    def events(self) -> Generator[Any, None, Finished]:
        """The run's events until it ends; returns its ``Finished`` or raises its error."""
        try:
            while True:
                try:
                    kind, value = pickle.loads(self._events.recv_bytes())
                except EOFError:
                    self._process.join()
                    raise TrainingProcessDied(self._process.exitcode) from None
                if kind == "event":
                    yield value
                elif kind == "returned":
                    return value
                else:
                    raise value
        finally:
            self._close()

    def _send(self, request: str) -> None:
        with self._lock:
            try:
                self._control.send(request)
            except OSError:  # the child has ended (or is ending): nothing left to ask
                pass

    def _close(self) -> None:
        self._process.join()
        self._events.close()
        with self._lock:
            self._control.close()


def start_fork_server() -> None:
    """Start the fork server now rather than at the first run: it imports torch (seconds of CPU),
    so called early on a low-priority thread, the first Train starts at once. It takes the calling
    thread's priority. Does nothing where runs spawn instead."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver, popen_forkserver  # noqa: F401 - imported here, not at Train

        forkserver.ensure_running()


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        # the fork server starts with this process's environment, and the runs it forks keep its
        # allocator: glibc's tunables must be there before it starts (see core.allocator)
        os.environ.update(tuned_environment(os.environ))
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def _child_main(job: bytes, events: Connection, control: Connection) -> None:
    """The child's entry: train, sending every event, then the result or the error."""
    config, run_dir, dataset, resume, niceness, environ = pickle.loads(job)
    os.environ.clear()
    os.environ.update(environ)
    be_nice(niceness)
    from .allocator import keep_freed_memory
    from .trainer import Trainer

    keep_freed_memory()  # a process edge: its CPU steps reuse each other's memory

    def send(kind: str, value: Any) -> None:
        try:
            events.send_bytes(pickle.dumps((kind, value)))
        except OSError:  # the window has gone: the run still ends with its checkpoint
            pass

    def on_event(event: Any) -> None:
        if isinstance(event, Failed):
            event = Failed(event.step, event.message, _portable(event.error))
        send("event", event)

    try:
        trainer = Trainer(config, run_dir, dataset=dataset, resume=resume, on_event=on_event)
        threading.Thread(target=_obey, args=(control, trainer), daemon=True).start()
        result = trainer.run()
    except BaseException as e:  # noqa: BLE001 - every failure must reach the window
        send("error", _portable(e))
    else:
        send("returned", result)
    finally:
        events.close()


def _obey(control: Connection, trainer: Any) -> None:
    """Hand the window's requests to the trainer; if the window goes away, stop (with a checkpoint)."""
    actions = {"pause": trainer.request_pause, "resume": trainer.request_resume, "stop": trainer.request_stop}
    while True:
        try:
            request = control.recv()
        except (EOFError, OSError):
            trainer.request_stop()
            return
        actions[request]()


def be_nice(niceness: int) -> None:
    """Run below the window (and other programs the user is working in): only ever raise nice.

    Linux applies nice per thread, so call it before torch starts its threads: they inherit it.
    """
    if not hasattr(os, "getpriority"):
        return
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < niceness:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError:  # not permitted here: keep the default
        pass


def _portable(error: BaseException) -> BaseException:
    """``error`` as it will arrive in the window: itself if it survives pickling unchanged, else
    a plain one with its message (a user's message stays a UserError, shown verbatim)."""
    try:
        copy = pickle.loads(pickle.dumps(error))
        if type(copy) is type(error) and str(copy) == str(error):
            return copy
    except Exception:  # noqa: BLE001 - any exception type may fail to pickle in its own way
        pass
    if isinstance(error, UserError):
        return UserError(str(error))
    return RuntimeError(f"{type(error).__name__}: {error}")
