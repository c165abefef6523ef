"""The Explore page, driven through its objectNames in the real window."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtWidgets import QListWidget, QSlider

from core.checkpoint import save_weights
from core.config import Config
from core.schedule import NoiseSchedule
from core.unet import UNet
from ddpm_gui.workers import Worker
from tests.gui_helpers import (  # noqa: F401 - window is a fixture
    STEP_TIMEOUT_MS,
    find,
    screenshot,
    tiny_config,
    use_tiny_config,
    window,
    write_image_folder,
)

EXPLORE = 4


def pixels(view) -> np.ndarray:
    image = view.image()
    assert image is not None and not image.isNull()
    ptr = image.constBits()
    return np.frombuffer(ptr, np.uint8, image.sizeInBytes()).reshape(image.height(), image.bytesPerLine())[
        :, : image.width()].astype(np.int32)


def test_slider_noises_the_chosen_image(qtbot, window):  # noqa: F811
    window._show_page(EXPLORE)
    page = find(window, "explorePage")
    assert window.pages.currentWidget() is page
    slider = find(window, "exploreTimestepSlider", QSlider)
    xt_view = page.xt_view
    T = window.config_editor.config.diffusion_params.num_timesteps
    assert (slider.minimum(), slider.maximum()) == (0, T - 1)
    qtbot.waitUntil(lambda: xt_view.image() is not None, timeout=STEP_TIMEOUT_MS)

    slider.setValue(0)
    qtbot.waitUntil(lambda: page.t_label.text().startswith("t = 0 "), timeout=5000)
    clean = pixels(xt_view)
    dataset_image = window.dataset_panel.result.thumbnails[0][..., 0].astype(np.int32)  # image 0 of the dataset
    assert np.abs(clean - dataset_image).mean() < 3  # abar_0 = 0.9999: x_0 itself, nearly

    slider.setValue(T - 1)
    qtbot.waitUntil(lambda: page.t_label.text().startswith(f"t = {T - 1} "), timeout=5000)
    noisy = pixels(xt_view)
    assert np.abs(noisy - dataset_image).mean() > 40  # pure noise by the last step
    assert all(m.value() == T - 1 for m in page.schedule_plot.markers)
    screenshot(window, "explore-last-step")

    find(window, "exploreNewNoiseButton").click()
    qtbot.waitUntil(lambda: not np.array_equal(pixels(xt_view), noisy), timeout=5000)


def test_clicking_a_data_thumbnail_explores_it(qtbot, window):  # noqa: F811
    thumbs = find(window, "datasetThumbnails", QListWidget)
    item = thumbs.item(5)
    thumbs.itemClicked.emit(item)
    page = window.explore_panel
    assert window.pages.currentWidget() is page
    assert page.index_spin.value() == window.dataset_panel.result.thumbnail_indices[5] > 0


def test_the_hidden_page_draws_only_once_shown(qtbot, window):  # noqa: F811
    page = window.explore_panel
    assert window.pages.currentWidget() is not page
    assert window.engine is not None and window.current_dataset() is not None
    assert page.total_parameters is None and page.forward is None
    assert page.schedule_plot.curves["alpha_bar", "mine"].yData is None
    window._show_page(EXPLORE)
    qtbot.waitUntil(lambda: page.total_parameters is not None and page.forward is not None, timeout=STEP_TIMEOUT_MS)


def test_schedule_plot_shows_both_schedules(qtbot, window):  # noqa: F811
    window._show_page(EXPLORE)
    plot = find(window, "schedulePlot")
    T = window.config_editor.config.diffusion_params.num_timesteps
    linear, cosine = NoiseSchedule(T, kind="linear"), NoiseSchedule(T, kind="cosine")
    curves = plot.curves
    np.testing.assert_allclose(curves["alpha_bar", "mine"].yData, linear.alpha_cum_prod64.numpy())
    np.testing.assert_allclose(curves["alpha_bar", "other"].yData, cosine.alpha_cum_prod64.numpy())
    for name in ("betas", "alpha_bar", "log_snr"):
        assert len(curves[name, "mine"].yData) == len(curves[name, "other"].yData) == T
    names = [label.text for _, label in plot._legend.items]
    assert any("linear" in n for n in names) and any("cosine" in n for n in names)

    config = window.config_editor.config.replace("diffusion_params", schedule="cosine")
    window.config_editor.set_config(config)
    qtbot.waitUntil(lambda: np.allclose(curves["alpha_bar", "mine"].yData, cosine.alpha_cum_prod64.numpy()),
                    timeout=5000)
    np.testing.assert_allclose(curves["alpha_bar", "other"].yData, linear.alpha_cum_prod64.numpy())


def test_unet_table_follows_the_configure_page(qtbot, window):  # noqa: F811
    from core.unet import parameter_count as count_parameters  # what the Configure page shows

    window._show_page(EXPLORE)
    page = window.explore_panel
    config = window.config_editor.config
    qtbot.waitUntil(lambda: page.total_parameters == count_parameters(config.model_params), timeout=STEP_TIMEOUT_MS)
    wider = config.replace("model_params", down_channels=[64, 128, 128], mid_channels=[128, 128, 128])
    window.config_editor.set_config(wider)
    qtbot.waitUntil(lambda: page.total_parameters == count_parameters(wider.model_params), timeout=STEP_TIMEOUT_MS)
    table = find(window, "unetTable")
    m = wider.model_params
    assert table.rowCount() == 2 * (len(m.down_channels) - 1) + len(m.mid_channels) - 1 + 3  # + time, in, out
    assert f"{page.total_parameters:,}" in find(window, "unetTotalLabel").text()


@pytest.fixture
def tiny_model(tmp_path):
    """A tiny config over a folder of 16 px images, and weights for it (untrained, seeded)."""
    folder = write_image_folder(tmp_path / "images", per_class=10, size=16)
    config = Config.from_dict(tiny_config(folder))
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, UNet(config.model_params), config)
    return folder, config, path


@pytest.mark.slow
def test_predictions_and_loss_by_timestep_with_a_model(qtbot, window, tiny_model):  # noqa: F811
    folder, config, weights = tiny_model
    use_tiny_config(qtbot, window, folder)
    page = window.explore_panel
    assert window.import_checkpoint(weights)  # File > Import: the Sample page checks it, Explore gets it
    qtbot.waitUntil(lambda: page.source is not None and page.source.path == weights, timeout=STEP_TIMEOUT_MS)
    window._show_page(EXPLORE)
    views = page.prediction_views
    qtbot.waitUntil(lambda: all(v.image() is not None for v in views.values()), timeout=STEP_TIMEOUT_MS)
    assert float(page.error_labels["noise"].text()) > 0

    page.slider.setValue(50)  # the predictor answers for the slider's new t
    qtbot.waitUntil(lambda: page.shown_prediction.t == 50, timeout=STEP_TIMEOUT_MS)
    assert page.error_labels["noise"].text() == f"{page.shown_prediction.noise_mse:.4f}"
    page.tabs.setCurrentIndex(1)
    screenshot(window, "explore-prediction")

    plot = find(window, "lossByTimestepPlot")
    page.loss_images_spin.setValue(8)
    with qtbot.waitSignal(page.lossCurveAdded, timeout=STEP_TIMEOUT_MS) as first:
        find(window, "exploreLossButton").click()
    qtbot.waitUntil(lambda: not page.is_computing_loss(), timeout=STEP_TIMEOUT_MS)
    curve = first.args[0]
    assert page.loss_progress.maximum() == page.loss_progress.value() == 50  # it reported each t
    T = config.diffusion_params.num_timesteps
    assert curve.timesteps[0] == 0 and curve.timesteps[-1] == T - 1 and len(curve.loss) == 50
    with qtbot.waitSignal(page.lossCurveAdded, timeout=STEP_TIMEOUT_MS) as second:
        page.choose_loss_source(weights)
    np.testing.assert_array_equal(second.args[0].loss, curve.loss)  # same weights, same batch, same noise
    assert len(plot.curves) == 2
    page.tabs.setCurrentIndex(2)
    screenshot(window, "explore-loss")


def test_cancelling_loss_by_timestep_leaves_nothing_running(qtbot, window, tiny_model):  # noqa: F811
    folder, _, weights = tiny_model
    use_tiny_config(qtbot, window, folder)
    page = window.explore_panel
    window._show_page(EXPLORE)
    page.tabs.setCurrentIndex(2)
    worker = page.choose_loss_source(weights)
    assert isinstance(worker, Worker) and page.is_computing_loss()
    assert find(window, "exploreLossCancelButton").isVisibleTo(page)
    with qtbot.waitSignal(worker.aborted, timeout=STEP_TIMEOUT_MS):  # asked before it could end
        find(window, "exploreLossCancelButton").click()
    qtbot.waitUntil(lambda: not page.is_computing_loss(), timeout=STEP_TIMEOUT_MS)
    assert not [w for w in page.findChildren(Worker) if w.isRunning()]
    assert page.loss_plot.curves == []
    assert find(window, "exploreLossButton").isEnabled() is False  # no model loaded in this test
    assert find(window, "exploreLossOtherButton").isEnabled()
    assert not page.loss_progress.isVisible() and not find(window, "exploreLossCancelButton").isVisible()


def test_a_generated_sample_can_be_explored(qtbot, window):  # noqa: F811
    window._show_page(EXPLORE)
    page = window.explore_panel
    m = window.config_editor.config.model_params
    samples = torch.full((3, m.im_channels, m.im_size, m.im_size), -1.0)
    samples[2] = 1.0
    page.set_samples(samples)  # what the window passes on when sampling ends
    page.image_combo.setCurrentIndex(1)  # "Generated sample"
    assert page.index_spin.maximum() == 2
    page.index_spin.setValue(2)
    page.slider.setValue(0)
    qtbot.waitUntil(lambda: page.t_label.text().startswith("t = 0 "), timeout=5000)
    assert pixels(page.xt_view).min() > 240  # the white sample, at t = 0


def test_schedule_markers_follow_t_once_the_hidden_plot_is_shown(qtbot):
    from ddpm_gui.explore_plots import SchedulePlot

    plot = SchedulePlot()
    qtbot.addWidget(plot)
    plot.set_marker(10)  # hidden: nothing moves yet
    assert all(m.value() == 0 for m in plot.markers)
    plot.show()
    assert all(m.value() == 10 for m in plot.markers)
    plot.set_marker(20)
    assert all(m.value() == 20 for m in plot.markers)
