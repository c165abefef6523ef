"""Train, Pause, Resume, Stop, Sample, Cancel and closing the window, fired back to back in many
orders: nothing deadlocks, nothing raises, every thread is joined, the run's checkpoint loads.

Each sequence runs in one of four tempos: ``together`` (all in one call, no event processed in
between, so requests meet a run that is still being built), ``queued`` (one action per
event-loop turn, via ``QTimer.singleShot(0)``, so signals from the workers interleave),
``running`` (like queued, but only once the first step is trained, so Pause and Stop meet a
live run) and ``settled`` (each action once the one before has taken effect, so Sample meets a
paused run and Resume a running sampler). Actions are clicks on the real buttons: a click on a
disabled button does nothing, as for a user.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
from PySide6.QtCore import QThread, QTimer
from PySide6.QtWidgets import QPushButton

from core.checkpoint import read_training_state, save_weights
from core.runs import RunDir
from ddpm_gui.banner import Banner
from tests.gui_helpers import (  # noqa: F401 - window is a fixture
    STEP_TIMEOUT_MS,
    find,
    use_tiny_config,
    window,
    write_image_folder,
)

pytestmark = pytest.mark.timeout(240)

BUTTONS = {
    "train": "trainButton",
    "pause": "pauseButton",
    "resume": "pauseButton",  # one button: Pause, then Resume
    "stop": "stopButton",
    "sample": "sampleButton",
    "cancel": "sampleCancelButton",
}

#: The runner states in which each action has taken effect (``settled`` waits for one of them).
SETTLED = {"train": ("running", "idle"), "pause": ("paused", "idle"), "resume": ("running", "idle"),
           "stop": ("idle",), "close": ("idle",)}

SEQUENCES = [
    ("train", "stop", "close"),
    ("train", "close"),
    ("train", "pause", "resume", "stop", "close"),
    ("train", "pause", "sample", "resume", "cancel", "stop", "close"),
    ("train", "pause", "sample", "close"),
    ("train", "sample", "cancel", "pause", "stop", "resume", "close"),
    ("train", "stop", "pause", "resume", "sample", "cancel", "close"),
    ("train", "pause", "stop", "sample", "train"),
    ("sample", "train", "cancel", "stop", "close"),
    ("sample", "close", "cancel", "train"),
    ("close", "train", "sample", "stop"),
    ("pause", "resume", "stop", "cancel", "train", "close"),
]


def _ids(sequence: tuple[str, ...]) -> str:
    return "-".join(sequence)


@pytest.fixture
def ready(window, qtbot, tmp_path):
    """The window with a tiny dataset and config, and a tiny model to sample from."""
    import torch

    from core.unet import UNet

    folder = write_image_folder(tmp_path / "images", per_class=4)
    config = use_tiny_config(qtbot, window, folder)
    weights = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    save_weights(weights, UNet(config.model_params), config)
    panel = window.sampling_panel
    panel.set_source(weights, config, "tiny weights")
    panel.steps_spin.setValue(100)  # every step of the tiny schedule: long enough to cancel
    panel.count_spin.setValue(16)
    return window


def _fire(window, action: str) -> None:
    if action == "close":
        window.close()
    else:
        find(window, BUTTONS[action], QPushButton).click()


def _chain(actions: list[Callable[[], None]]) -> None:
    """Run each action in its own event-loop turn, in order."""
    if actions:
        first, rest = actions[0], actions[1:]
        QTimer.singleShot(0, lambda: (first(), _chain(rest)))


CASES = [pytest.param(sequence, tempo, id=f"{_ids(sequence)}-{tempo}")
         for sequence in SEQUENCES for tempo in ("together", "queued", "running", "settled")
         if tempo != "running" or sequence[0] == "train"]  # 'running' waits for the first step


@pytest.mark.slow
@pytest.mark.parametrize(("sequence", "tempo"), CASES)
def test_any_order_of_actions_ends_cleanly(ready, qtbot, sequence, tempo):
    window = ready
    with qtbot.captureExceptions() as exceptions:
        actions = [lambda a=a: _fire(window, a) for a in sequence]
        if tempo == "together":
            for act in actions:
                act()
        elif tempo == "settled":
            for action, act in zip(sequence, actions, strict=True):
                act()
                if action == "sample" and window.isVisible() and window.runner.state.value in ("idle", "paused"):
                    assert window.sampling_panel.is_sampling(), "Sample did nothing while training was idle or paused"
                states = SETTLED.get(action, (window.runner.state.value,))
                qtbot.waitUntil(lambda s=states: window.runner.state.value in s, timeout=STEP_TIMEOUT_MS)
        else:
            if tempo == "running":
                actions.pop(0)()
                qtbot.waitUntil(lambda: len(window.training_panel.loss_plot.history) > 0, timeout=STEP_TIMEOUT_MS)
            done = []
            _chain([*actions, lambda: done.append(True)])
            qtbot.waitUntil(lambda: bool(done), timeout=STEP_TIMEOUT_MS)
        window.close()  # also when the sequence had no close: the window must always be able to go
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=STEP_TIMEOUT_MS)

    assert not exceptions, "".join(str(e[1]) for e in exceptions)
    running = [t for t in window.findChildren(QThread) if t.isRunning()]
    assert not running, f"threads still running after close: {running}"
    errors = [b.message for b in window.findChildren(Banner) if b.kind == "error"]
    assert not errors, errors
    run_dir = window.runner.run_dir
    trained = "close" not in sequence or sequence.index("train") < sequence.index("close")
    assert (run_dir is not None) == trained, "a run started after the window closed, or none before"
    if trained:
        newest = RunDir(run_dir).latest_checkpoint()
        assert newest is not None, f"no checkpoint in {run_dir}"
        read_training_state(newest)


def test_exceptions_in_slots_are_captured(qtbot, request):
    """The checks above rely on pytest-qt capturing exceptions raised in Qt slots."""
    assert not request.config.getini("qt_no_exception_capture")
    with qtbot.captureExceptions() as exceptions:
        QTimer.singleShot(0, lambda: 1 / 0)
        qtbot.waitUntil(lambda: bool(exceptions))
    assert exceptions[0][0] is ZeroDivisionError
