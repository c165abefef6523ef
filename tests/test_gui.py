"""The real window, driven end to end with pytest-qt: pick data, configure, train, sample, export.

Every wait is on a signal or a condition (``waitSignal`` / ``waitUntil``), never a sleep. Runs
and settings go to ``tmp_path``. Tests leave screenshots in docs/screenshots/test (git-ignored).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit, QPushButton, QWidget

from core.events import Started
from core.runs import RunDir
from ddpm_gui.training_panel import format_duration
from tests.conftest import ROOT
from tests.gui_helpers import (  # noqa: F401 - window is a fixture
    STEP_TIMEOUT_MS,
    find,
    screenshot,
    use_tiny_config,
    window,
    write_image_folder,
)

pytestmark = pytest.mark.timeout(240)


def pick_folder(qtbot, w, folder: Path) -> None:
    """Type a folder into the dataset path and press Enter, as a user would; wait for the scan."""
    edit = find(w, "datasetPathEdit", QLineEdit)
    edit.clear()
    qtbot.keyClicks(edit, str(folder))
    with qtbot.waitSignals([w.dataset_panel.scanned], timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(edit, Qt.Key.Key_Return)


def train_until(qtbot, w, points: int) -> None:
    """Press Train and wait until the loss curve shows ``points`` steps."""
    qtbot.mouseClick(find(w, "trainButton", QPushButton), Qt.MouseButton.LeftButton)
    curve = w.training_panel.loss_plot.raw_curve
    qtbot.waitUntil(lambda: curve.xData is not None and len(curve.xData) >= points, timeout=STEP_TIMEOUT_MS)


def stop(qtbot, w):
    with qtbot.waitSignal(w.runner.ended, timeout=STEP_TIMEOUT_MS) as ended:
        qtbot.mouseClick(find(w, "stopButton", QPushButton), Qt.MouseButton.LeftButton)
    return ended.args[0]


def test_starts_ready_to_train_on_mnist(window, qtbot):
    assert find(window, "presetCombo").currentData() == "fast-cpu"
    assert find(window, "datasetPathEdit", QLineEdit).text() == "builtin:mnist"
    assert window.dataset_panel.result.report.num_images == 5000
    qtbot.waitUntil(lambda: find(window, "trainButton").isEnabled())
    qtbot.waitUntil(lambda: "M" in window.config_editor.params_label.text())  # counted on the meta device
    assert find(window, "deviceCombo").currentData() == "auto"
    assert "cpu" in window.config_editor.device_label.text()
    assert window.width() >= 1000 and window.windowTitle() == "DDPM Studio"
    screenshot(window, "main-window")


AUTOMATION_NAMES = (
    "datasetPathEdit", "datasetBrowseButton", "presetCombo", "deviceCombo", "trainButton", "pauseButton",
    "stopButton", "lossPlot", "trainProgressBar", "sampleButton", "samplerCombo", "sampleStepsSpin",
    "numSamplesSpin", "frameSlider", "playButton", "exportGridButton", "exportAnimationButton",
)


def test_every_automation_name_exists_once(window):
    for name in AUTOMATION_NAMES:
        assert len(window.findChildren(QWidget, name)) == 1, name


@pytest.mark.slow
def test_train_sample_and_export_end_to_end(window, qtbot, tmp_path):
    folder = write_image_folder(tmp_path / "images")
    (folder / "discs" / "broken.png").write_bytes(b"\x89PNG not really")
    pick_folder(qtbot, window, folder)
    labels = window.dataset_panel.summary_labels
    assert "40" in labels["Images"].text() and "discs" in labels["Classes"].text()
    table = find(window, "skippedTable")
    assert table.rowCount() == 1 and "broken.png" in table.item(0, 0).text() and table.item(0, 1).text()
    use_tiny_config(qtbot, window, folder)
    qtbot.waitUntil(window.dataset_panel.thumbnails_shown)
    assert window.dataset_panel.thumbs.count() == 40
    window.nav.setCurrentRow(0)
    screenshot(window, "dataset-panel")

    train_until(qtbot, window, points=10)
    qtbot.waitUntil(lambda: window.training_panel.preview.image() is not None, timeout=STEP_TIMEOUT_MS)
    qtbot.waitUntil(lambda: find(window, "trainProgressBar").value() > 0)
    window.training_panel.loss_plot.refresh()
    screenshot(window, "training")
    finished = stop(qtbot, window)
    assert finished.reason == "stopped"
    run_dir = window.runner.run_dir
    assert run_dir.parent == tmp_path / "home" / "runs"
    assert list((run_dir / "checkpoints").glob("step-*.safetensors"))
    assert find(window, "trainButton").text() == "Continue"

    panel = window.sampling_panel
    window.nav.setCurrentRow(3)
    combo = find(window, "samplerCombo")
    combo.setCurrentIndex(combo.findData("ddim"))
    find(window, "sampleStepsSpin").setValue(5)
    find(window, "numSamplesSpin").setValue(16)
    with qtbot.waitSignal(panel.sampled, timeout=STEP_TIMEOUT_MS):
        qtbot.mouseClick(find(window, "sampleButton", QPushButton), Qt.MouseButton.LeftButton)
    store = panel.result.store
    assert len(store) == 5
    slider = find(window, "frameSlider")
    seen = []
    for i in range(slider.maximum() + 1):
        slider.setValue(i)
        assert f"t = {store.ts[i]}" in panel.player.t_label.text()
        seen.append(panel.xt_view.image().copy())
    assert seen[0] != seen[-1]  # the frames differ: noise becomes an image
    slider.setValue(0)
    with qtbot.waitSignal(panel.player.frameChanged, timeout=STEP_TIMEOUT_MS):
        qtbot.mouseClick(find(window, "playButton", QPushButton), Qt.MouseButton.LeftButton)
    qtbot.mouseClick(find(window, "playButton", QPushButton), Qt.MouseButton.LeftButton)  # pause
    slider.setValue(2)
    screenshot(window, "sampling")

    out = tmp_path / "out"
    out.mkdir()
    grid, gif, mp4 = out / "grid.png", out / "denoise.gif", out / "denoise.mp4"
    for export, path in ((panel.export_grid, grid), (panel.export_animation, gif),
                         (panel.export_animation, mp4), (panel.export_images, out / "single")):
        with qtbot.waitSignal(panel.exported, timeout=STEP_TIMEOUT_MS):
            export(path)
    import imageio.v3 as iio
    from PIL import Image

    with Image.open(grid) as im:
        assert im.size[0] > 16 and im.size[1] > 16
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == len(store)
    assert mp4.read_bytes()[4:8] == b"ftyp"
    assert len(list((out / "single").glob("*.png"))) == 16


@pytest.mark.slow
def test_pause_resume_then_continue_the_run(window, qtbot, tmp_path):
    folder = write_image_folder(tmp_path / "images")
    use_tiny_config(qtbot, window, folder)
    events = []
    window.runner.event.connect(events.append)
    train_until(qtbot, window, points=3)
    pause = find(window, "pauseButton", QPushButton)
    with qtbot.waitSignal(window.runner.stateChanged, check_params_cb=lambda s: s == "paused",
                          timeout=STEP_TIMEOUT_MS):
        qtbot.mouseClick(pause, Qt.MouseButton.LeftButton)
    assert pause.text() == "Resume"
    steps = len(window.training_panel.loss_plot.history)
    qtbot.wait(300)  # a check that nothing happens, not a synchronisation
    assert len(window.training_panel.loss_plot.history) == steps
    qtbot.mouseClick(pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(window.training_panel.loss_plot.history) > steps + 2, timeout=STEP_TIMEOUT_MS)
    stopped_at = stop(qtbot, window).step

    events.clear()
    qtbot.mouseClick(find(window, "trainButton", QPushButton), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(isinstance(e, Started) for e in events), timeout=STEP_TIMEOUT_MS)
    started = next(e for e in events if isinstance(e, Started))
    assert started.start_step == stopped_at and started.run_dir == window.runner.run_dir
    stop(qtbot, window)

    run_dir = window.runner.run_dir
    window.training_panel.loss_plot.clear_history()
    assert window.open_run(run_dir)
    qtbot.waitUntil(lambda: len(window.training_panel.loss_plot.history) >= stopped_at, timeout=STEP_TIMEOUT_MS)
    assert window.resume_run == run_dir and window.sampling_panel.source == run_dir
    assert window.training_panel.preview.image() is not None  # the newest preview grid the run saved
    last = RunDir(run_dir).read_log()[-1]
    stats = window.training_panel.stats  # where the run stood when it stopped, as its log says
    assert stats["step"].value.text() == f"{last['step']:,} / {last['total_steps']:,}"
    assert stats["epoch"].value.text() == str(last["epoch"] + 1)
    assert stats["speed"].value.text() == f"{last['images_per_s']:,.0f}"
    assert stats["eta"].value.text() == format_duration(last["eta_s"]) != "–"
    screenshot(window, "opened-run")


@pytest.mark.slow
def test_closing_while_training_asks_stops_and_keeps_a_checkpoint(window, qtbot, tmp_path):
    folder = write_image_folder(tmp_path / "images")
    use_tiny_config(qtbot, window, folder)
    train_until(qtbot, window, points=2)
    window.confirm_close = lambda: False
    window.close()
    assert window.isVisible() and window.runner.is_active()
    window.confirm_close = lambda: True
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=STEP_TIMEOUT_MS)
    assert not window.runner.is_active()
    assert list((window.runner.run_dir / "checkpoints").glob("step-*.safetensors"))


def test_empty_folder_shows_the_reason_and_blocks_training(window, qtbot, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    edit = find(window, "datasetPathEdit", QLineEdit)
    edit.setText(str(empty))
    with qtbot.waitSignal(window.dataset_panel.scanFailed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(edit, Qt.Key.Key_Return)
    banner = window.dataset_panel.banner
    assert banner.isVisible() and banner.kind == "error" and str(empty) in banner.message
    assert not find(window, "trainButton").isEnabled()
    assert "dataset" in find(window, "trainButton").toolTip().lower()


def test_invalid_field_is_marked_and_disables_train(window, qtbot):
    qtbot.waitUntil(lambda: find(window, "trainButton").isEnabled())
    editor = window.config_editor
    window.nav.setCurrentRow(1)
    field = find(window, "model_params.down_channels", QLineEdit)
    valid = field.text()
    field.setText("32, 60, 128")
    qtbot.waitUntil(lambda: not find(window, "trainButton").isEnabled())
    message = find(window, "model_params.down_channels.message")
    assert message.isVisible() and "multiple of 8" in message.text()
    assert "border" in field.styleSheet()
    assert "problem" in editor.status_label.text()
    find(window, "train_params.lr", QLineEdit).setText("1e-4")  # valid as typed
    screenshot(window, "config-invalid-field")
    field.setText(valid)
    qtbot.waitUntil(lambda: find(window, "trainButton").isEnabled())
    assert not message.isVisible()
    assert editor.config.train_params.lr == pytest.approx(1e-4)


def test_config_round_trips_through_yaml_and_shows_warnings(window, tmp_path):
    editor = window.config_editor
    path = tmp_path / "saved.yaml"
    assert editor.save_yaml(path)
    data = yaml.safe_load(path.read_text())
    data["train_params"]["lrr"] = 0.5  # a typo: loads, with a warning naming the real key
    path.write_text(yaml.safe_dump(data))
    assert editor.load_yaml(path)
    assert editor.config.train_params.task_name == "fast-cpu"
    assert editor.banner.kind == "warning" and "train_params.lr" in editor.banner.message
    (tmp_path / "bad.yaml").write_text("model_params: [1, 2]")
    assert not editor.load_yaml(tmp_path / "bad.yaml")
    assert editor.banner.kind == "error" and "model_params" in editor.banner.message


def test_dropping_a_folder_on_the_window_selects_it(window, qtbot, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    folder = write_image_folder(tmp_path / "dropped", per_class=2)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.dataset_panel.scanned, timeout=STEP_TIMEOUT_MS):
        window.dropEvent(event)
    assert find(window, "datasetPathEdit", QLineEdit).text() == str(folder)
    assert window.config_editor.config.dataset_params.im_path == str(folder)


@pytest.mark.slow
def test_training_error_is_shown_in_the_window(window, qtbot, tmp_path):
    from core.device import available_devices

    missing = [d for d in ("cuda", "mps") if d not in available_devices()]
    if not missing:
        pytest.skip("this machine has every device")
    folder = write_image_folder(tmp_path / "images", per_class=4)
    use_tiny_config(qtbot, window, folder, device=missing[0])
    with qtbot.waitSignal(window.runner.failed, timeout=STEP_TIMEOUT_MS):
        qtbot.mouseClick(find(window, "trainButton", QPushButton), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.runner.is_active(), timeout=STEP_TIMEOUT_MS)
    banner = window.training_panel.banner
    assert banner.isVisible() and missing[0].upper() in banner.message and "auto" in banner.message
    assert window.pages.currentWidget() is window.training_panel


@pytest.mark.slow
def test_tutorial_pth_can_be_imported_and_sampled(window, qtbot, tmp_path):
    import torch

    from core.unet import UNet

    folder = write_image_folder(tmp_path / "images", per_class=4)
    config = use_tiny_config(qtbot, window, folder)
    pth = tmp_path / "ddpm_ckpt.pth"
    torch.save(UNet(config.model_params).state_dict(), pth)
    panel = window.sampling_panel
    with qtbot.waitSignal(panel.sourceChecked, timeout=STEP_TIMEOUT_MS) as checked:
        assert window.import_checkpoint(pth)
    assert checked.args == [True] and panel.source == pth
    combo = find(window, "samplerCombo")
    combo.setCurrentIndex(combo.findData("dpm++"))
    find(window, "sampleStepsSpin").setValue(3)
    find(window, "numSamplesSpin").setValue(2)
    with qtbot.waitSignal(panel.sampled, timeout=STEP_TIMEOUT_MS):
        panel.start()
    assert len(panel.result.store) == 3 and tuple(panel.result.images.shape) == (2, 1, 16, 16)


def test_settings_remember_recent_folders_and_geometry(window, qtbot, tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=3)
    pick_folder(qtbot, window, folder)
    window.resize(1100, 700)
    window.close()
    from ddpm_gui.app import create_main_window

    again = create_main_window()
    qtbot.addWidget(again)
    assert again.settings.recent_folders[0] == str(folder)
    assert again.dataset_panel.recent_button.isEnabled()
    # restored, not the default size, though never narrower than the window's layout allows
    assert again.height() == 700 and again.width() == max(1100, again.minimumSizeHint().width())


WINDOW_WITHOUT_TORCH = """
import sys
from ddpm_gui.app import create_main_window
w = create_main_window()
demos = [b.objectName() for b in w.dataset_panel.demo_buttons.buttons()]
assert demos == ["demo-mnist", "demo-fashion-mnist"], demos
combo = w.sampling_panel.sampler_combo
assert [combo.itemData(i) for i in range(combo.count())] == ["ddpm", "ddim", "dpm++", "dpm++3m", "dpm++sde", "unipc"]
steps = w.sampling_panel.steps_spin
assert (combo.currentData(), steps.value()) == ("dpm++sde", 20), "the app's default: SDE-DPM-Solver++(2M), 20 steps"
combo.setCurrentIndex(combo.findData("ddim"))
assert steps.value() == 50
combo.setCurrentIndex(combo.findData("ddpm"))
assert steps.value() == 20
w.sampling_panel.picker.set_num_timesteps(10)
assert steps.value() == 10
assert "torch" not in sys.modules, "torch imported"
"""


@pytest.mark.slow
def test_window_is_built_without_torch_and_app_reports_start_time(tmp_path):
    """The window, with its demo buttons and sampler list, exists before torch is imported."""
    env = dict(os.environ, DDPM_STUDIO_HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               QT_QPA_PLATFORM="offscreen")
    subprocess.run([sys.executable, "-c", WINDOW_WITHOUT_TORCH], cwd=ROOT, env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-m", "ddpm_gui", "--timing", "--quit-after-ready"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "start-to-window:" in out.stdout and "start-to-engine-ready:" in out.stdout


STARTUP_IMPORTS = """
import sys
from ddpm_gui.app import create_main_window
from ddpm_gui.engine import DatasetKey, load_engine, scan_dataset
from ddpm_gui.workers import Worker
w = create_main_window()
load_engine()  # what the window loads once it is shown
scan_dataset(Worker(lambda _: None), DatasetKey.of(w.config_editor.config))  # and the default dataset
heavy = [m for m in ("torchvision", "torch._dynamo", "triton") if m in sys.modules]
assert not heavy, f"imported at start-up: {heavy}"
"""


@pytest.mark.slow
def test_window_start_up_does_not_import_torchvision_dynamo_or_triton(tmp_path):
    """Seconds of imports the window never uses at start-up: they load when an image is resized."""
    env = dict(os.environ, DDPM_STUDIO_HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", STARTUP_IMPORTS], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
