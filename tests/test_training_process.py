"""A run in a child process: its events, its result and its errors arrive as the trainer made them,
and pause, stop and the parent's disappearance act on it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Config
from core.errors import ConfigError, ConfigProblem, DiskFullError, TrainingDiverged, UserError
from core.events import CheckpointSaved, Failed, Finished, Paused, Started, StepDone
from core.presets import tiny_config_dict
from core.training_process import TrainingProcess, TrainingProcessDied, _portable

TIMEOUT_S = 300


def _config(**train) -> Config:
    return Config.from_dict(tiny_config_dict(**train))


def _drain(process: TrainingProcess, on_event=lambda event: None) -> tuple[list, Finished]:
    events, stream = [], process.events()
    while True:
        try:
            event = next(stream)
        except StopIteration as done:
            return events, done.value
        events.append(event)
        on_event(event)


@pytest.mark.slow
def test_a_run_reports_its_events_and_result_and_writes_its_checkpoints(tmp_path):
    config = _config(max_steps=4, checkpoint_every_steps=2, sample_every_steps=2)
    events, finished = _drain(TrainingProcess(config, tmp_path / "run"))
    assert isinstance(events[0], Started) and events[0].total_steps == 4
    assert [e.step for e in events if isinstance(e, StepDone)] == [1, 2, 3, 4]
    assert any(getattr(e, "images", None) is not None for e in events)  # previews cross over too
    assert finished == Finished(4, "completed")
    saved = [e.path for e in events if isinstance(e, CheckpointSaved)]
    assert saved and all(path.is_file() for path in saved)


@pytest.mark.slow
def test_stop_asked_before_the_child_has_a_trainer_still_ends_with_a_checkpoint(tmp_path):
    process = TrainingProcess(_config(max_steps=10_000), tmp_path / "run")
    process.request_stop()  # the child is still starting: the request waits in the pipe
    events, finished = _drain(process)
    assert finished.reason == "stopped" and finished.step < 10_000
    assert list((tmp_path / "run" / "checkpoints").glob("step-*.safetensors"))


@pytest.mark.slow
def test_pause_holds_the_run_until_resumed(tmp_path):
    process = TrainingProcess(_config(max_steps=10_000), tmp_path / "run")

    def steer(event) -> None:
        if isinstance(event, StepDone) and event.step == 2:
            process.request_pause()
        elif isinstance(event, Paused):
            process.request_stop()  # a stop ends a paused run too

    events, finished = _drain(process, steer)
    paused = next(e for e in events if isinstance(e, Paused))
    assert finished == Finished(paused.step, "stopped")


@pytest.mark.slow
def test_a_parent_that_goes_away_leaves_a_stopped_run_with_its_checkpoint(tmp_path):
    process = TrainingProcess(_config(max_steps=10_000), tmp_path / "run")

    def vanish(event) -> None:
        if isinstance(event, StepDone) and event.step == 2:
            process._control.close()  # what the window's death does to the pipe

    events, finished = _drain(process, vanish)
    assert finished.reason == "stopped"
    assert list((tmp_path / "run" / "checkpoints").glob("step-*.safetensors"))


@pytest.mark.slow
def test_a_users_error_in_the_child_arrives_as_itself(tmp_path):
    process = TrainingProcess(_config(max_steps=50, lr=1e4, sample_every_steps=None), tmp_path / "run")
    failed = []
    with pytest.raises(TrainingDiverged) as raised:
        _drain(process, lambda e: failed.append(e) if isinstance(e, Failed) else None)
    assert "train_params.lr = 10000" in str(raised.value)
    assert failed and failed[0].message == str(raised.value) and isinstance(failed[0].error, TrainingDiverged)


@pytest.mark.slow
def test_a_child_killed_mid_run_is_reported_not_waited_for(tmp_path):
    process = TrainingProcess(_config(max_steps=10_000), tmp_path / "run")

    def kill(event) -> None:
        if isinstance(event, StepDone) and event.step == 2:
            os.kill(process._process.pid, signal.SIGKILL)

    with pytest.raises(TrainingProcessDied, match="killed by signal 9") as died:
        _drain(process, kill)
    assert isinstance(died.value, UserError) and "batch_size" in str(died.value)  # shown as said


@pytest.mark.parametrize("error", [
    DiskFullError("No space left on device while writing step-000003.safetensors. Free some space."),
    ConfigError([ConfigProblem("train_params.lr", "must be > 0")]),
    KeyError("missing"),
])
def test_errors_keep_their_kind_and_words_across_the_pipe(error):
    arrived = _portable(error)
    assert str(arrived) == str(error)
    assert isinstance(arrived, UserError) == isinstance(error, UserError)
    if not isinstance(error, ConfigError):  # its constructor takes problems, not the message
        assert type(arrived) is type(error)


def test_an_unpicklable_error_arrives_as_a_bug_report_naming_it():
    class Local(Exception):  # a local class cannot be pickled
        pass

    arrived = _portable(Local("broken"))
    assert isinstance(arrived, RuntimeError) and str(arrived) == "Local: broken"


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="Unix nice values")
def test_be_nice_only_raises_nice_and_threads_started_after_inherit_it():
    """What the training child and bench/under_load.py --niceness rely on: Linux keeps nice per
    thread, so torch's threads are below the window only if they start after the call."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base > 16:
        pytest.skip("already near the lowest priority")
    code = (
        "import os, threading\n"
        "from core.training_process import be_nice\n"
        f"be_nice({base + 3}); be_nice({base})\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))\n"
        "t.start(); t.join()\n"
        "print(os.getpriority(os.PRIO_PROCESS, 0), seen[0])\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == [str(base + 3)] * 2
