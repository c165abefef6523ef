"""Errors reach the window, in the words core wrote for people, where the user is looking; and
the window is usable again afterwards (never only a console line or a dead button).
"""
from __future__ import annotations

import re

import pytest
from PySide6.QtWidgets import QLineEdit, QPushButton

from tests.gui_helpers import (  # noqa: F401 - window is a fixture
    STEP_TIMEOUT_MS,
    find,
    use_tiny_config,
    window,
    write_image_folder,
)

pytestmark = pytest.mark.timeout(240)


def train_until_failed(qtbot, window) -> str:
    """Press Train; return the failure message once the run has ended."""
    with qtbot.waitSignal(window.runner.failed, timeout=STEP_TIMEOUT_MS) as failed:
        find(window, "trainButton", QPushButton).click()
    qtbot.waitUntil(lambda: not window.runner.is_active(), timeout=STEP_TIMEOUT_MS)
    return failed.args[0]


@pytest.mark.slow
def test_diverging_loss_names_the_step_and_learning_rate(window, qtbot, tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=4)
    use_tiny_config(qtbot, window, folder, lr=1e4, sample_every_steps=None)
    message = train_until_failed(qtbot, window)
    banner = window.training_panel.banner
    assert banner.isVisible() and banner.kind == "error" and banner.message == message
    assert re.search(r"at step \d+", message) and "train_params.lr = 10000" in message
    assert window.pages.currentWidget() is window.training_panel
    qtbot.waitUntil(lambda: find(window, "trainButton").isEnabled())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, about the garbage
@pytest.mark.parametrize("name", ["garbage.safetensors", "garbage.pth"])
def test_a_damaged_checkpoint_shows_why_it_cannot_be_sampled(window, qtbot, tmp_path, name):
    from core.checkpoint import load_for_sampling
    from core.errors import CheckpointError

    folder = write_image_folder(tmp_path / "images", per_class=4)
    config = use_tiny_config(qtbot, window, folder)
    path = tmp_path / name
    path.write_bytes(b"\x80\x04not a checkpoint at all" * 20)
    with pytest.raises(CheckpointError) as expected:
        load_for_sampling(path, config)
    panel = window.sampling_panel
    # chosen: it is loaded in the background at once, and refused with the reason
    with qtbot.waitSignal(panel.sourceChecked, timeout=STEP_TIMEOUT_MS) as checked:
        assert window.import_checkpoint(path)
    assert checked.args == [False] and panel.source is None
    assert panel.banner.isVisible() and panel.banner.kind == "error"
    assert panel.banner.message == str(expected.value)
    assert not find(window, "sampleButton").isEnabled()  # nothing to sample from yet
    # damaged after it was chosen (a run's checkpoint, a file replaced): Sample says why
    panel.set_source(path, config, path.name)
    worker = panel.start()
    assert worker is not None
    # The garbage fails at once, possibly before a waitSignal could connect: wait on the outcome.
    qtbot.waitUntil(lambda: not panel.is_sampling(), timeout=STEP_TIMEOUT_MS)
    assert panel.banner.isVisible() and panel.banner.kind == "error"
    assert panel.banner.message == str(expected.value)
    assert find(window, "sampleButton").isEnabled()  # another file or settings can be tried


def test_a_folder_of_only_bad_files_shows_the_dataset_error(window, qtbot, tmp_path):
    from core.data import load_dataset
    from core.errors import DatasetError

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_bytes(b"holiday notes, not a picture\n" * 10)
    (bad / "half.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(DatasetError) as expected:
        load_dataset(str(bad), 1, 16)
    edit = find(window, "datasetPathEdit", QLineEdit)
    edit.setText(str(bad))
    with qtbot.waitSignal(window.dataset_panel.scanFailed, timeout=STEP_TIMEOUT_MS):
        edit.returnPressed.emit()
    banner = window.dataset_panel.banner
    assert banner.isVisible() and banner.kind == "error" and banner.message == str(expected.value)
    assert not find(window, "trainButton").isEnabled()
