"""The window and class-conditional runs: a class picker and guidance only where they mean
something, the chosen classes in the animation and the exported grid, the switch's cost on
the Configure page."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox

from tests.gui_helpers import STEP_TIMEOUT_MS, find, screenshot, window  # noqa: F401 - window is a fixture
from tests.test_class_conditional import NAMES, LabelledImages, _cond_config

pytestmark = pytest.mark.timeout(300)


def _train(config, run_dir):
    from core.trainer import Trainer

    Trainer(config, run_dir, dataset=LabelledImages()).run()
    return run_dir


@pytest.mark.slow
def test_sample_page_offers_classes_of_a_conditional_run(window, qtbot, tmp_path):
    run = _train(_cond_config(max_steps=2), tmp_path / "cond")
    assert window.open_run(run)
    panel = window.sampling_panel
    window._show_page(3)
    combo, spin = find(window, "classCombo", QComboBox), find(window, "guidanceSpin", QDoubleSpinBox)
    assert combo.isVisible() and spin.isVisible()
    assert [combo.itemText(i) for i in range(combo.count())] == ["All classes — one row each", *NAMES]
    assert "twice" in spin.toolTip()
    panel.sampler_combo.setCurrentIndex(panel.sampler_combo.findData("ddim"))
    panel.steps_spin.setValue(3)
    panel.count_spin.setValue(6)
    with qtbot.waitSignal(panel.sampled, timeout=STEP_TIMEOUT_MS):
        assert panel.start() is not None
    result = panel.result
    assert result.row_labels == NAMES and result.nrow == 2 and len(result.images) == 6
    xt = result.store.xt(-1)
    assert xt.shape[:2] == (3 * 18 + 2, 2 * 18 + 2)  # the animation's grid: one row per class
    assert "Rows, top to bottom: cat, dog, owl" in find(window, "sampleRowsLabel").text()
    screenshot(window, "sample-page-classes")
    out = tmp_path / "grid.png"
    with qtbot.waitSignal(panel.exported, timeout=STEP_TIMEOUT_MS):
        panel.export_grid(out)
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] == 3 * 18 + 2 and grid.shape[1] > 2 * 18 + 2  # labels to the left
    combo.setCurrentIndex(combo.findText("dog"))
    assert panel.request().classes == (1,)


def test_unconditional_run_shows_no_class_controls(window, qtbot, tmp_path):
    from core.config import Config

    from .conftest import tiny_config_dict

    run = _train(Config.from_dict(tiny_config_dict(max_steps=2)), tmp_path / "plain")
    assert window.open_run(run)
    window._show_page(3)
    assert not find(window, "classCombo").isVisible() and not find(window, "guidanceSpin").isVisible()
    assert window.sampling_panel.request().classes == ()


def test_configure_page_explains_the_switch(window):
    editor = window.config_editor.editors["model_params.class_conditional"]
    assert "twice the work per sampling step" in editor.doc
    window._show_page(1)
    screenshot(window, "configure-class-conditional")
