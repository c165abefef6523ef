"""What a new user tripped over in the window during the first hour, each pinned by a test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QPushButton

from tests.gui_helpers import STEP_TIMEOUT_MS, find, screenshot, window  # noqa: F401 - window is a fixture

pytestmark = pytest.mark.timeout(300)


def _started(**kw):
    from core.trainer import Started

    base = dict(run_dir=Path("/tmp/run"), device="cpu", precision="fp32", num_params=1000, total_steps=700,
                start_step=0, dataset_size=10, checkpoint_every=175, preview_every=175)
    return Started(**{**base, **kw})


def test_loss_plot_early_on_labels_log_ticks_whole_steps_and_a_single_point(qtbot):
    from ddpm_gui.loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(500, 300)
    plot.show()  # a hidden plot leaves its curves alone until shown
    plot.set_log_y(True)
    plot.add(1, 0.5)
    plot.refresh()
    assert plot.raw_curve.opts["symbol"] is not None  # one point is drawn as a dot
    screenshot(plot, "first-hour-loss-plot-one-point")
    for step in range(2, 5):
        plot.add(step, 0.5 - 0.05 * step)
    plot.refresh()
    plot.show()
    left = plot.getPlotItem().getAxis("left")
    ticks = [label for level in left.tickValues(*np.log10([0.3, 0.5]), 300) for label in level[1]]
    assert left._tickLevels and len(left._tickLevels[0]) >= 3, "a log axis under a decade shows labels"
    bottom = plot.getPlotItem().getAxis("bottom")
    values = [v for _, level in bottom.tickValues(1, 4, 400) for v in level]
    assert values and all(float(v).is_integer() for v in values), values
    assert ticks is not None
    screenshot(plot, "first-hour-loss-plot-early")


def test_pause_says_so_at_once(qtbot):
    from ddpm_gui.training_panel import TrainControls

    controls = TrainControls()
    qtbot.addWidget(controls)
    controls.set_state("running", can_train=False, why="")
    qtbot.mouseClick(controls.pause_button, Qt.MouseButton.LeftButton)
    assert controls.progress.format() == "Pausing after this step…"
    assert not controls.pause_button.isEnabled()
    controls.resize(700, 40)
    screenshot(controls, "first-hour-pausing-after-this-step")
    controls.set_state("paused", can_train=False, why="")
    assert controls.pause_button.isEnabled() and controls.pause_button.text() == "Resume"


def test_sample_grid_fills_the_pane_with_sharp_pixels(qtbot):
    from ddpm_gui.images import ImageView, fit_rect

    grid = np.random.default_rng(0).integers(0, 256, (242, 242), dtype=np.uint8)  # 8x8 of 28 px + padding
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(460, 460)
    view.set_array(grid)
    shown = fit_rect(QSize(242, 242), view.size())
    assert shown.width() >= 440, shown  # not 242 px in a 460 px pane
    assert fit_rect(QSize(100, 100), QSize(410, 410)).width() == 400  # whole multiple when it nearly fills
    image = view.grab().toImage()
    assert image.pixelColor(230, 230) != image.pixelColor(5, 5) or shown.contains(5, 5)
    screenshot(view, "first-hour-sample-grid-fills-pane")


def test_preview_placeholder_says_when_the_first_preview_comes(qtbot):
    from ddpm_gui.training_panel import NO_PREVIEWS, TrainControls, TrainingPanel

    panel = TrainingPanel(TrainControls())
    qtbot.addWidget(panel)
    panel.on_event(_started(start_step=200, preview_every=175))
    assert panel.preview.placeholder() == "First preview at step 350."
    panel.on_event(_started(preview_every=None))
    assert panel.preview.placeholder() == NO_PREVIEWS
    panel.on_event(_started(preview_every=175))
    panel.resize(900, 500)
    screenshot(panel, "first-hour-first-preview-placeholder")


def test_exports_start_in_the_run_folder_named_for_run_sampler_and_steps(qtbot, tmp_path, tiny_config):
    from ddpm_gui.sampling_panel import SamplingPanel

    panel = SamplingPanel()
    qtbot.addWidget(panel)
    run = tmp_path / "mnist-run-3"
    run.mkdir()
    panel.set_source(run, tiny_config, "run mnist-run-3")
    panel.sampler_combo.setCurrentIndex(panel.sampler_combo.findData("dpm++"))
    panel.steps_spin.setValue(20)
    assert panel.export_path(".png") == run / "mnist-run-3-dpmpp-20steps-seed0.png"
    weights = tmp_path / "w" / "model.safetensors"
    panel.set_source(weights, tiny_config, "model.safetensors")
    assert panel.export_path(".gif").parent == weights.parent


def test_ddpm_studio_version_and_self_test_in_help(capsys):
    from core import __version__
    from ddpm_gui.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ddpm-studio {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--self-test" in capsys.readouterr().out


def test_about_names_version_torch_device_and_dataset_licences(window):
    from core import __version__

    text = window.about_text()
    assert f"DDPM Studio {__version__}" in text and "PyTorch 2." in text and "Device: " in text
    assert "Creative Commons Attribution-Share Alike 3.0" in text and "Expat (MIT)" in text, text
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.NoIcon, "About DDPM Studio", text, parent=window)
    box.show()
    screenshot(box, "first-hour-help-about")
    box.close()


def test_yaml_syntax_error_in_the_window_shows_line_and_column(qtbot, tmp_path):
    from ddpm_gui.config_editor import ConfigEditor

    editor = ConfigEditor()
    qtbot.addWidget(editor)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_params:\n  batch_size: 8\n  lr: [0.1\nmodel_params: {}\n")
    assert not editor.load_yaml(bad)
    assert "line 4, column 13" in editor.banner.message and "model_params: {}" in editor.banner.message
    editor.resize(1000, 400)
    editor.show()
    screenshot(editor, "first-hour-yaml-error-in-window")


def test_quit_train_pause_stop_and_sample_have_shortcuts(window):
    shortcuts = {a.text().replace("&", ""): a.shortcut().toString()
                 for menu in window.menuBar().findChildren(type(window.menuBar().actions()[0].menu()))
                 for a in menu.actions() if not a.isSeparator()}
    assert shortcuts["Quit"] == "Ctrl+Q"
    assert shortcuts["Train / Continue"] == "Ctrl+T" and shortcuts["Pause / Resume"] == "Ctrl+P"
    assert shortcuts["Stop"] == "Ctrl+." and shortcuts["Sample"] == "Ctrl+R"


def test_preset_keeps_the_picked_folder_and_colour_mismatch_offers_the_switch(window, qtbot, tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 200, 90)).save(folder / f"p{i}.png")
    with qtbot.waitSignal(window.dataset_panel.scanned, timeout=STEP_TIMEOUT_MS):
        window.dataset_panel.choose(str(folder))
    button = find(window, "switchChannelsButton", QPushButton)
    assert button.isVisibleTo(window) and "colour" in button.text()  # grayscale config, RGB files
    assert "most images are in colour" in window.dataset_panel.advice.text()
    assert window.dataset_panel.summary_labels["Classes"].text().startswith("none")  # no subfolders
    screenshot(window, "first-hour-data-page-colour-mismatch")
    with qtbot.waitSignal(window.dataset_panel.scanned, timeout=STEP_TIMEOUT_MS):
        button.click()
    assert window.config_editor.config.model_params.im_channels == 3
    assert not button.isVisibleTo(window)
    combo = window.config_editor.preset_combo
    combo.activated.emit(combo.findData("rgb-textures"))
    assert window.config_editor.config.dataset_params.im_path == str(folder)
    qtbot.waitUntil(lambda: window.current_dataset() is not None, timeout=STEP_TIMEOUT_MS)
    assert "not found" not in window.dataset_panel.banner.message
    qtbot.waitUntil(lambda: find(window, "trainButton").isEnabled(), timeout=STEP_TIMEOUT_MS)


@pytest.mark.slow
def test_finished_run_offers_train_not_continue(window, qtbot, tmp_path):
    from core.config import Config
    from core.trainer import Trainer
    from tests.conftest import tiny_config_dict

    run = tmp_path / "done-run"
    Trainer(Config.from_dict(tiny_config_dict(max_steps=3)), run).run()
    window.open_run(run)
    qtbot.waitUntil(lambda: window.training_panel.stats["step"].value.text() == "3 / 3", timeout=STEP_TIMEOUT_MS)
    assert find(window, "trainButton").text() == "Train" and window.resume_run is None
    window._show_page(3)
    screenshot(window, "first-hour-finished-run-sample-page")
