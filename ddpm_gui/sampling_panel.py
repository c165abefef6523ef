"""The sampling view: generate images from a trained model and watch them being denoised.

The sampler runs on a worker that keeps every frame in a ``core.frames.FrameStore`` and sends
the newest one to the view as it goes. When it ends, the store is handed to the view for
playback (it is never read while the worker still writes to it). The x_t grid and the model's
current estimate of x_0 are shown side by side, so one sees both the noisy state and what the
model believes lies under it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.choices import DEFAULT_GUIDANCE
from core.config import Config

from .banner import Banner, error_text
from .engine import SampleFrame, SampleRequest, SampleResult, check_weights, class_names, run_sampling
from .frame_player import BASE_FPS, SPEEDS, FramePlayer
from .images import ImageView
from .sampler_picker import SamplerPicker
from .workers import Worker, start_worker

MAX_SEED = 2**31 - 1
ALL_CLASSES_TITLE = "All classes — one row each"


class SamplingPanel(QWidget):
    """Sampler settings, Sample / Cancel, the two animated grids, the player and exports."""

    exported = Signal(str)  # the path written
    sampled = Signal()  # a sampling run ended with frames to show
    sourceChecked = Signal(bool)  # noqa: N815 - Qt naming; a file offered by check_source was usable

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source: Path | None = None
        self.source_config: Config | None = None
        self.result: SampleResult | None = None
        self.device = "auto"
        self._worker: Worker | None = None
        self._exporter: Worker | None = None
        self._busy_elsewhere = False

        self.source_label = QLabel("No model yet: train one, or open a run (File ▸ Open Run…).")
        self.source_label.setObjectName("sampleSourceLabel")
        self.source_label.setWordWrap(True)
        self.picker = SamplerPicker("samplerCombo", "sampleStepsSpin")
        self.sampler_combo, self.steps_spin = self.picker.combo, self.picker.steps
        self.steps_spin.setToolTip("Denoising steps (model calls).")
        self.sampler_combo.setToolTip("DDPM is the tutorial's sampler; at 20 steps it gave ten-minute models "
                                      "their best images. DDIM and DPM-Solver++ add no noise on the way: compare "
                                      "them all on the Evaluate page.")
        self.count_spin = _spin("numSamplesSpin", 1, 256, 16, "How many images to generate at once.")
        self.seed_spin = _spin("seedSpin", 0, MAX_SEED, 0, "Same seed, same images.")
        self.seed_spin.setMaximumWidth(110)
        self.weights_combo = QComboBox()
        self.weights_combo.setObjectName("weightsCombo")
        self.weights_combo.addItem("EMA weights", True)
        self.weights_combo.addItem("Raw weights", False)
        self.weights_combo.setToolTip("EMA (averaged) weights usually give cleaner samples.")
        self.class_combo = QComboBox()
        self.class_combo.setObjectName("classCombo")
        self.class_combo.setToolTip("The class to draw; all classes gives one row per class.")
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setObjectName("guidanceSpin")
        self.guidance_spin.setRange(0.0, 20.0)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setValue(DEFAULT_GUIDANCE)
        self.guidance_spin.setToolTip(
            "Classifier-free guidance: 0 ignores the class, 1 follows it as trained, more follows it more "
            "strongly (less variety). Above 0 and other than 1 each step runs the model twice (one batch)."
        )
        self.class_widgets = (QLabel("Class"), self.class_combo, QLabel("Guidance"), self.guidance_spin)
        self.rows_label = QLabel()
        self.rows_label.setObjectName("sampleRowsLabel")
        self.rows_label.setWordWrap(True)
        self.sample_button = QPushButton("Sample")
        self.sample_button.setObjectName("sampleButton")
        self.sample_button.clicked.connect(lambda: self.start())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("sampleCancelButton")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setObjectName("sampleProgressBar")
        self.progress.setFormat("step %v / %m")
        self.progress.hide()
        self.banner = Banner()

        settings = QHBoxLayout()
        for label, widget in (("Sampler", self.sampler_combo), ("Steps", self.steps_spin),
                              ("Images", self.count_spin), ("Seed", self.seed_spin), (None, self.weights_combo)):
            if label:
                settings.addWidget(QLabel(label))
            settings.addWidget(widget)
        for widget in self.class_widgets:
            settings.addWidget(widget)
        settings.addStretch(1)
        settings.addWidget(self.sample_button)
        settings.addWidget(self.cancel_button)

        self.xt_view = ImageView("x_t: the noisy images, step by step")
        self.xt_view.setObjectName("xtView")
        self.x0_view = ImageView("predicted x_0: what the model believes lies under the noise")
        self.x0_view.setObjectName("x0View")
        views = QGridLayout()
        views.addWidget(QLabel("<b>x<sub>t</sub></b> — current sample"), 0, 0, Qt.AlignmentFlag.AlignHCenter)
        views.addWidget(QLabel("<b>predicted x<sub>0</sub></b> — the model's estimate of the clean image"),
                        0, 1, Qt.AlignmentFlag.AlignHCenter)
        views.addWidget(self.xt_view, 1, 0)
        views.addWidget(self.x0_view, 1, 1)
        views.setRowStretch(1, 1)

        self.player = FramePlayer()
        self.player.frameChanged.connect(self._show_frame)

        self.export_grid_button = QPushButton("Export grid…")
        self.export_grid_button.setObjectName("exportGridButton")
        self.export_grid_button.clicked.connect(lambda: self.export_grid())
        self.export_animation_button = QPushButton("Export animation…")
        self.export_animation_button.setObjectName("exportAnimationButton")
        self.export_animation_button.clicked.connect(lambda: self.export_animation())
        self.export_images_button = QPushButton("Export images…")
        self.export_images_button.setObjectName("exportImagesButton")
        self.export_images_button.clicked.connect(lambda: self.export_images())
        exports = QHBoxLayout()
        exports.addWidget(self.progress, 1)
        exports.addWidget(self.export_grid_button)
        exports.addWidget(self.export_animation_button)
        exports.addWidget(self.export_images_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.source_label)
        layout.addLayout(settings)
        layout.addWidget(self.banner)
        layout.addLayout(views, 1)
        layout.addWidget(self.rows_label)
        layout.addWidget(self.player)
        layout.addLayout(exports)
        self.set_classes([])
        self._update_enabled()

    # -- setup from the window --------------------------------------------------------------------
    def set_source(self, source: Path | None, config: Config | None, description: str = "") -> None:
        """The model to sample (a run folder or a weights file) and the config it was trained with."""
        self.source, self.source_config = source, config
        conditional = source is not None and config is not None and config.model_params.class_conditional
        self.set_classes(class_names(source) if conditional else [])
        if config is not None:
            self.picker.set_num_timesteps(config.diffusion_params.num_timesteps)
            self.count_spin.setValue(min(config.train_params.num_samples, self.count_spin.maximum()))
        self.source_label.setText(f"Model: <b>{description or source}</b>" if source is not None else
                                  "No model yet: train one, or open a run (File ▸ Open Run…).")
        self._update_enabled()

    def check_source(self, source: Path, config: Config, description: str) -> Worker:
        """Load ``source`` in the background; sample from it if it loads, else say why not and
        keep the model there was. Emits :attr:`sourceChecked` either way."""
        self.banner.clear()
        worker = start_worker(
            lambda w: check_weights(source, config), self,
            returned=lambda names: (self.set_source(source, config, description), self.set_classes(names),
                                    self.sourceChecked.emit(True)),
            errored=lambda e: (self.banner.show_message(error_text(e, f"Could not read {source}")),
                               self.sourceChecked.emit(False)),
        )
        worker.finished.connect(worker.deleteLater)
        return worker

    def set_classes(self, names: list[str]) -> None:
        """Offer a conditional model's classes (all of them first); hide the class controls for
        an unconditional one."""
        self.class_combo.clear()
        if names:
            self.class_combo.addItem(ALL_CLASSES_TITLE, tuple(range(len(names))))
            for i, name in enumerate(names):
                self.class_combo.addItem(name, (i,))
        for widget in self.class_widgets:
            widget.setVisible(bool(names))
        self.rows_label.hide()

    def set_busy_elsewhere(self, busy: bool) -> None:
        """Training uses the same cores: sampling waits until it ends or pauses."""
        self._busy_elsewhere = busy
        self._update_enabled()

    def _update_enabled(self) -> None:
        running = self._worker is not None
        ready = self.source is not None and not self._busy_elsewhere
        self.sample_button.setEnabled(ready and not running)
        self.cancel_button.setEnabled(running)
        has = self.result is not None and not running
        for button in (self.export_grid_button, self.export_animation_button, self.export_images_button):
            button.setEnabled(has and self._exporter is None)
        if self.source is None:
            self.sample_button.setToolTip("Train a model or open a run first.")
        elif self._busy_elsewhere:
            self.sample_button.setToolTip("Pause or stop training to sample.")
        else:
            self.sample_button.setToolTip("Generate images from pure noise.")

    # -- sampling -------------------------------------------------------------------------------
    def request(self) -> SampleRequest:
        return SampleRequest(
            source=self.source, config=self.source_config, sampler=self.sampler_combo.currentData(),
            steps=self.steps_spin.value(), num_images=self.count_spin.value(), seed=self.seed_spin.value(),
            use_ema=bool(self.weights_combo.currentData()), device=self.device,
            classes=self.class_combo.currentData() or (), guidance=self.guidance_spin.value(),
        )

    def start(self) -> Worker | None:
        """Sample with the current settings; returns the worker (tests wait on its signals)."""
        if not self.sample_button.isEnabled():
            return None
        request = self.request()
        self.banner.clear()
        self.result = None
        names = [self.class_combo.itemText(i + 1) for i in request.classes]
        self.rows_label.setText(_classes_caption(names, request.guidance))
        self.rows_label.setVisible(bool(names))
        self.player.set_frames([])
        self.progress.setRange(0, request.steps)
        self.progress.setValue(0)
        self.progress.show()
        self.progress.setFormat("step %v / %m")
        worker = self._worker = start_worker(  # slots are queued: none runs before this returns
            lambda w: run_sampling(w, request), self, yielded=self._on_frame, returned=self._on_done,
            errored=self._on_error, aborted=lambda: self.progress.setFormat("Cancelled at step %v / %m"),
            finished=lambda: self._on_finished(worker),
        )
        self._update_enabled()
        return worker

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.abort()

    def is_sampling(self) -> bool:
        return self._worker is not None

    def _on_frame(self, frame: SampleFrame) -> None:
        self.progress.setValue(frame.index + 1)
        self.xt_view.set_array(frame.xt)
        self.x0_view.set_array(frame.x0)
        self.player.t_label.setText(f"t = {frame.t}")

    def _on_done(self, result: SampleResult) -> None:
        self.result = result
        self.player.set_frames(list(result.store.ts))
        self.sampled.emit()

    def _on_error(self, error: BaseException) -> None:
        self.banner.show_message(error_text(error, "Sampling failed"))

    def _on_finished(self, worker: Worker) -> None:
        if self._worker is worker:
            self._worker = None
        worker.deleteLater()
        self._update_enabled()

    def _show_frame(self, index: int) -> None:
        if self.result is not None:
            self.xt_view.set_array(self.result.store.xt(index))
            self.x0_view.set_array(self.result.store.x0(index))

    # -- exports -------------------------------------------------------------------------------
    def export_grid(self, path: str | Path | None = None) -> Worker | None:
        """The final images as one PNG grid (a save dialog when no path)."""
        from core.exports import save_grid

        path = path or self._ask_path("Export grid", self.export_path(".png"), "PNG image (*.png)")
        if not path or self.result is None:
            return None
        images, nrow, labels = self.result.images, self.result.nrow, self.result.row_labels
        return self._export(lambda w: save_grid(images, path, nrow, row_labels=labels), path)

    def export_animation(self, path: str | Path | None = None) -> Worker | None:
        """The denoising (x_t beside x0) as a GIF or MP4, at the player's speed."""
        from core.exports import save_animation

        path = path or self._ask_path("Export animation", self.export_path(".gif"), "GIF (*.gif);;MP4 video (*.mp4)")
        if not path or self.result is None:
            return None
        store = self.result.store
        frames = [store.side_by_side(i) for i in range(len(store))]
        fps = BASE_FPS * SPEEDS[self.player.speed.currentText()]
        loop = self.player.loop.isChecked()
        return self._export(lambda w: save_animation(frames, path, fps=fps, loop=loop), path)

    def export_images(self, folder: str | Path | None = None) -> Worker | None:
        """Each final image as its own PNG in a folder."""
        from core.exports import save_images

        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Export images into folder", str(self.export_path("").parent))
        if not folder or self.result is None:
            return None
        images = self.result.images
        return self._export(lambda w: save_images(images, folder), folder)

    def export_path(self, suffix: str) -> Path:
        """Where a save dialog starts: beside the model (in its run folder), named for the run,
        sampler, steps and seed, so exports from different settings neither collide nor puzzle."""
        source = self.source or Path.home() / "samples"
        folder = source if source.is_dir() else source.parent
        request = self.request()
        name = f"{source.stem}-{request.sampler.replace('+', 'p')}-{request.steps}steps-seed{request.seed}"
        return folder / f"{name}{suffix}"

    def _ask_path(self, title: str, start: Path, filters: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, title, str(start), filters)
        return path

    def _export(self, write: Callable[[Worker], Any], path: str | Path) -> Worker:
        """Write on a worker (an MP4 of a large grid takes seconds); report in the banner."""
        worker = self._exporter = start_worker(
            write, self, returned=lambda _: self._on_exported(str(path)),
            errored=lambda e: self.banner.show_message(error_text(e, f"Could not write {path}")),
            finished=lambda: self._on_export_finished(worker),
        )
        self._update_enabled()
        return worker

    def _on_exported(self, path: str) -> None:
        self.banner.show_message(f"Saved {path}", "info")
        self.exported.emit(path)

    def _on_export_finished(self, worker: Worker) -> None:
        if self._exporter is worker:
            self._exporter = None
        worker.deleteLater()
        self._update_enabled()


def _classes_caption(names: list[str], guidance: float) -> str:
    """What the grids show when classes were asked for: the class of each row."""
    if not names:
        return ""
    shown = f"Rows, top to bottom: {', '.join(names)}" if len(names) > 1 else f"Class: {names[0]}"
    return f"{shown} (guidance {guidance:g})"


def _spin(name: str, low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setObjectName(name)
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    spin.setAccelerated(True)
    return spin

