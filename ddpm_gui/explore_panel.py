"""The Explore page: how one image is noised step by step, what the schedule does to the signal,
what the network predicts at each noise level, where its loss is high, and the UNet's shape.

The timestep slider drives everything at once: the x_t view, the marker on the schedule plot
and, with a model loaded, the network's predictions. x_t of one image is computed here as the
slider moves (coalesced to one per frame); the network runs on a predictor worker that always
answers the newest t, so a drag never queues up model calls.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.config import Config

from .banner import Banner, error_text
from .explore_jobs import (
    STRIP_STEPS,
    ForwardProcess,
    LossCurve,
    LossProgress,
    ModelSource,
    PredictionRefused,
    PredictionRequest,
    PredictionView,
    PredictorReady,
    compute_loss_curve,
    schedule_curves,
    serve_predictions,
    unet_levels,
)
from .explore_plots import LossByTimestepPlot, SchedulePlot
from .images import ImageView
from .workers import Mailbox, Worker, start_worker

FRAME_MS = 16  # slider moves are drawn at most once a frame
DATASET, SAMPLES = 0, 1
SCHEDULE, IMAGE, NETWORK = "schedule", "image", "network"  # what the page redraws when shown
DEFAULT_LOSS_IMAGES = 64
UNET_COLUMNS = ("Block", "Resolution", "Channels (in → out)", "Attention", "Parameters")


class ExplorePanel(QWidget):
    """See the module docstring. The window feeds it the config, the dataset, generated samples
    and the model; it never changes any of them."""

    lossCurveAdded = Signal(object)  # noqa: N815 - Qt naming; a LossCurve

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("explorePage")
        self.config: Config | None = None
        self.dataset: Any = None
        self.samples: Any = None  # float (N, C, H, W) in [-1, 1], from the Sample page
        self.source: ModelSource | None = None
        self.device = "auto"
        self.forward: ForwardProcess | None = None
        self._engine_ready = False
        self._stale: set[str] = set()  # what changed while the page was hidden (see _refresh)
        self._noise_seed = 0
        self._predictor: Worker | None = None
        self._requests = Mailbox()
        self._loss_worker: Worker | None = None
        self._curves: Any = None  # core.explore.ScheduleCurves of the config's schedule
        self.total_parameters: int | None = None  # the Network table's total, once counted
        self.shown_prediction: PredictionView | None = None
        self._model_text = ""
        self._draw_timer = QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.setInterval(FRAME_MS)
        self._draw_timer.timeout.connect(self._draw_t)
        self.banner = Banner()
        self._build()

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.setObjectName("exploreImageCombo")
        self.image_combo.addItem("Training image", DATASET)
        self.image_combo.addItem("Generated sample", SAMPLES)
        self.image_combo.setToolTip("Explore an image of the dataset (or click one on the Data page), "
                                    "or one the model generated on the Sample page.")
        self.image_combo.currentIndexChanged.connect(lambda _: self._on_image_kind())
        self.index_spin = QSpinBox()
        self.index_spin.setObjectName("exploreIndexSpin")
        self.index_spin.setMaximum(0)
        self.index_spin.setMinimumWidth(90)
        self.index_spin.valueChanged.connect(lambda _: self._load_image())
        self.count_label = QLabel()
        self.noise_button = QPushButton("New noise")
        self.noise_button.setObjectName("exploreNewNoiseButton")
        self.noise_button.setToolTip("Draw another ε; the same draw is used at every t.")
        self.noise_button.clicked.connect(self.new_noise)
        picker = QHBoxLayout()
        for widget in (QLabel("Image"), self.image_combo, self.index_spin, self.count_label):
            picker.addWidget(widget)
        picker.addStretch(1)
        picker.addWidget(self.noise_button)

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("exploreTimestepSlider")
        self.slider.setRange(0, 999)
        self.slider.valueChanged.connect(self._on_t)
        self.t_label = QLabel()
        self.t_label.setObjectName("exploreTimestepLabel")
        self.t_label.setMinimumWidth(330)
        slider_row = QHBoxLayout()
        slider_row.addWidget(QLabel("t"))
        slider_row.addWidget(self.slider, 1)
        slider_row.addWidget(self.t_label)

        self.xt_view = ImageView("x_t appears once the engine has loaded and a dataset is chosen")
        self.xt_view.setObjectName("exploreXtView")
        left = QVBoxLayout()
        left.addWidget(QLabel("<b>x<sub>t</sub></b> = √ᾱ<sub>t</sub>·x<sub>0</sub> + √(1−ᾱ<sub>t</sub>)·ε"),
                       0, Qt.AlignmentFlag.AlignHCenter)
        left.addWidget(self.xt_view, 1)

        self.tabs = QTabWidget()
        self.tabs.setObjectName("exploreTabs")
        self.schedule_plot = SchedulePlot()
        self.tabs.addTab(self.schedule_plot, "Schedule")
        self.tabs.addTab(self._build_prediction_tab(), "Prediction")
        self.tabs.addTab(self._build_loss_tab(), "Loss by timestep")
        self.tabs.addTab(self._build_unet_tab(), "Network")

        middle = QHBoxLayout()
        middle.addLayout(left, 2)
        middle.addWidget(self.tabs, 3)

        self.strip_views: list[ImageView] = []
        self.strip_labels: list[QLabel] = []
        strip = QGridLayout()
        strip.setHorizontalSpacing(4)
        for i in range(STRIP_STEPS):
            view = ImageView()
            view.setMinimumSize(64, 64)
            view.setObjectName(f"exploreStrip{i}")
            label = QLabel()
            label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            strip.addWidget(view, 0, i)
            strip.addWidget(label, 1, i)
            self.strip_views.append(view)
            self.strip_labels.append(label)
        strip_box = QWidget()
        strip_box.setObjectName("exploreStrip")
        strip_box.setLayout(strip)
        strip_box.setMaximumHeight(130)

        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(picker)
        layout.addLayout(slider_row)
        layout.addLayout(middle, 1)
        layout.addWidget(QLabel("x<sub>t</sub> at evenly spaced t, with the same noise"))
        layout.addWidget(strip_box)

    def _build_prediction_tab(self) -> QWidget:
        tab = QWidget()
        self.prediction_label = QLabel("No model yet: train one, open a run (File ▸ Open Run…) or import a "
                                       "checkpoint, and the network's guesses at this t appear here.")
        self.prediction_label.setObjectName("explorePredictionLabel")
        self.prediction_label.setWordWrap(True)
        self.prediction_views: dict[str, ImageView] = {}
        self.error_labels: dict[str, QLabel] = {}
        grid = QGridLayout()
        for col, (title, kind) in enumerate((("true", ""), ("predicted by the network", "_pred"))):
            grid.addWidget(QLabel(f"<b>{title}</b>"), 0, col + 1, Qt.AlignmentFlag.AlignHCenter)
        for row, (name, title) in enumerate((("noise", "noise ε"), ("x0", "clean image x<sub>0</sub>"))):
            grid.addWidget(QLabel(title), row + 1, 0)
            for col, suffix in enumerate(("", "_pred")):
                view = ImageView()
                view.setObjectName(f"explore_{name}{suffix}")
                self.prediction_views[name + suffix] = view
                grid.addWidget(view, row + 1, col + 1)
            error = QLabel("–")
            error.setObjectName(f"explore_{name}_error")
            error.setMinimumWidth(120)
            self.error_labels[name] = error
            grid.addWidget(error, row + 1, 3)
        grid.addWidget(QLabel("<b>error (MSE)</b>"), 0, 3)
        grid.setRowStretch(1, 1)
        grid.setRowStretch(2, 1)
        layout = QVBoxLayout(tab)
        layout.addWidget(self.prediction_label)
        layout.addLayout(grid, 1)
        note = QLabel("Noise is shown from −2σ (black) to +2σ (white). The noise error is the training loss "
                      "for this image at this t.")
        note.setWordWrap(True)
        layout.addWidget(note)
        return tab

    def _build_loss_tab(self) -> QWidget:
        tab = QWidget()
        self.loss_plot = LossByTimestepPlot()
        self.loss_button = QPushButton("Add the current model")
        self.loss_button.setObjectName("exploreLossButton")
        self.loss_button.clicked.connect(lambda: self.compute_loss())
        self.loss_other_button = QPushButton("Add a run or checkpoint…")
        self.loss_other_button.setObjectName("exploreLossOtherButton")
        self.loss_other_button.setToolTip("Overlay another run (its newest checkpoint) or one checkpoint "
                                          "file, e.g. an early and a late one of the same run.")
        self.loss_other_button.clicked.connect(lambda: self.choose_loss_source())
        self.loss_cancel_button = QPushButton("Cancel")
        self.loss_cancel_button.setObjectName("exploreLossCancelButton")
        self.loss_cancel_button.clicked.connect(self.cancel_loss)
        self.loss_clear_button = QPushButton("Clear")
        self.loss_clear_button.setObjectName("exploreLossClearButton")
        self.loss_clear_button.clicked.connect(self.loss_plot.clear_curves)
        self.loss_images_spin = QSpinBox()
        self.loss_images_spin.setObjectName("exploreLossImagesSpin")
        self.loss_images_spin.setRange(1, 1024)
        self.loss_images_spin.setValue(DEFAULT_LOSS_IMAGES)
        self.loss_images_spin.setToolTip("Training images averaged at each t (the same ones for every model).")
        self.loss_progress = QProgressBar()
        self.loss_progress.setObjectName("exploreLossProgress")
        self.loss_progress.setFormat("t %v / %m")
        self.loss_progress.hide()
        buttons = QHBoxLayout()
        for widget in (self.loss_button, self.loss_other_button, QLabel("Images"), self.loss_images_spin,
                       self.loss_progress, self.loss_cancel_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        buttons.addWidget(self.loss_clear_button)
        layout = QVBoxLayout(tab)
        layout.addLayout(buttons)
        layout.addWidget(self.loss_plot, 1)
        self._update_loss_controls()
        return tab

    def _build_unet_tab(self) -> QWidget:
        tab = QWidget()
        self.unet_table = QTableWidget(0, len(UNET_COLUMNS))
        self.unet_table.setObjectName("unetTable")
        self.unet_table.setHorizontalHeaderLabels(list(UNET_COLUMNS))
        self.unet_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.unet_table.verticalHeader().hide()
        self.unet_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.unet_total = QLabel()
        self.unet_total.setObjectName("unetTotalLabel")
        note = QLabel("From the config on the Configure page; changes there show here at once.")
        layout = QVBoxLayout(tab)
        layout.addWidget(note)
        layout.addWidget(self.unet_table, 1)
        layout.addWidget(self.unet_total)
        return tab

    # -- what the window feeds in -----------------------------------------------------------------
    def set_engine_ready(self) -> None:
        self._engine_ready = True
        self._refresh()

    def set_config(self, config: Config | None) -> None:
        """The config of the Configure page (None while it is invalid: keep showing the last)."""
        if config is None:
            return
        previous, self.config = self.config, config
        self.device = config.train_params.device
        if previous is None or previous.diffusion_params != config.diffusion_params:
            self._stale |= {SCHEDULE, IMAGE}
        if previous is None or previous.model_params != config.model_params:
            self._stale.add(NETWORK)
        self._refresh()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self._refresh()

    def _refresh(self) -> None:
        """Redraw what changed since the page was last on screen, once it is on screen.

        Hidden, the page draws nothing: at start-up the window gets the engine, the config and
        the dataset at once while scan workers hold Python's lock, and drawing the schedule, the
        image strip and the network table then stalled the UI thread by tens of milliseconds, for
        a page nobody was looking at.
        """
        if not self._can_draw():
            return
        stale, self._stale = self._stale, set()
        if SCHEDULE in stale:
            self._show_schedule(self.config)
        if IMAGE in stale:
            self._load_image()
        if NETWORK in stale:
            self._count_unet(self.config)

    def _can_draw(self) -> bool:
        return self._engine_ready and self.config is not None and self.isVisible()

    def _show_schedule(self, config: Config) -> None:
        self.slider.setMaximum(config.diffusion_params.num_timesteps - 1)
        mine, other = schedule_curves(config.diffusion_params)
        self._curves = mine
        self.schedule_plot.set_curves(mine, other)

    def set_dataset(self, dataset: Any) -> None:
        self.dataset = dataset
        if self.image_combo.currentData() == DATASET:
            self._on_image_kind()

    def set_samples(self, images: Any) -> None:
        """The newest generated images (float (N, C, H, W)), offered under "Generated sample"."""
        self.samples = images
        if self.image_combo.currentData() == SAMPLES:
            self._on_image_kind()

    def show_dataset_image(self, index: int) -> None:
        self.image_combo.setCurrentIndex(DATASET)
        self.index_spin.setValue(index)

    def set_source(self, source: ModelSource) -> None:
        """The model whose predictions and loss to show (a run folder or a weights file)."""
        self._stop_predictor()
        self.source = source
        for view in self.prediction_views.values():
            view.set_array(None)
        self.prediction_label.setText(f"Loading <b>{source.label}</b>…")
        requests = self._requests = Mailbox()
        worker = self._predictor = start_worker(
            lambda w: serve_predictions(w, source, self.device, requests), self,
            yielded=lambda value: self._on_prediction(worker, value),
            errored=lambda e: self.prediction_label.setText(error_text(e, f"Could not load {source.label}")),
        )
        worker.finished.connect(worker.deleteLater)
        self._request_prediction()
        self._update_loss_controls()

    # -- the image and the slider -------------------------------------------------------------------
    def _on_image_kind(self) -> None:
        pool = self.dataset if self.image_combo.currentData() == DATASET else self.samples
        n = 0 if pool is None else len(pool)
        self.index_spin.blockSignals(True)
        self.index_spin.setMaximum(max(0, n - 1))
        self.index_spin.blockSignals(False)
        self.count_label.setText(f"of {n:,}" if n else (
            "no dataset yet" if self.image_combo.currentData() == DATASET else "sample on the Sample page first"))
        self._load_image()

    def _current_image(self) -> Any:
        pool = self.dataset if self.image_combo.currentData() == DATASET else self.samples
        if pool is None or not len(pool):
            return None
        return pool[min(self.index_spin.value(), len(pool) - 1)]

    def _load_image(self) -> None:
        if not self._can_draw():
            self._stale.add(IMAGE)
            return
        x0 = self._current_image()
        if x0 is None:
            self.forward = None
            self.xt_view.set_array(None)
            return
        self.forward = ForwardProcess(self.config.diffusion_params, x0, self._noise_seed)
        ts, images = self.forward.strip()
        for i, (view, label) in enumerate(zip(self.strip_views, self.strip_labels, strict=True)):
            view.set_array(images[i] if i < len(ts) else None)  # T < STRIP_STEPS leaves some empty
            label.setText(f"t = {ts[i]}" if i < len(ts) else "")
        self._draw_t()

    def new_noise(self) -> None:
        self._noise_seed += 1
        self._load_image()

    def _on_t(self, _t: int) -> None:
        if not self._draw_timer.isActive():
            self._draw_timer.start()

    def _draw_t(self) -> None:
        """Show x_t, the schedule marker and ask for predictions at the slider's t."""
        t = self.slider.value()
        self.schedule_plot.set_marker(t)
        if self.forward is None:
            return
        self.xt_view.set_array(self.forward.at(t))
        self.t_label.setText(f"t = {t} · ᾱ_t = {self._curves.alpha_bar[t]:.4f} · "
                             f"log-SNR = {self._curves.log_snr[t]:+.2f}")
        self._request_prediction()

    def _request_prediction(self) -> None:
        if self._predictor is not None and self.forward is not None:
            self._requests.put(PredictionRequest(self.forward.x0, self.forward.noise, self.slider.value()))

    def _on_prediction(self, worker: Worker, value: Any) -> None:
        if worker is not self._predictor:
            return  # a previous model's answer, still in the queue
        if isinstance(value, PredictorReady):
            self._model_text = f"Model: <b>{value.label}</b>"
            if self.config is not None and value.diffusion != self.config.diffusion_params:
                self._model_text += " — its schedule differs from this config's; predictions use the model's."
            self.prediction_label.setText(self._model_text)
        elif isinstance(value, PredictionRefused):
            self.prediction_label.setText(value.message)
            for view in self.prediction_views.values():
                view.set_array(None)
        elif isinstance(value, PredictionView):
            self.shown_prediction = value
            self.prediction_label.setText(self._model_text)  # replaces a refusal for another image
            for name in ("noise", "noise_pred", "x0", "x0_pred"):
                self.prediction_views[name].set_array(getattr(value, name))
            self.error_labels["noise"].setText(f"{value.noise_mse:.4f}")
            self.error_labels["x0"].setText(f"{value.x0_mse:.4f}")

    def _stop_predictor(self) -> None:
        if self._predictor is not None:
            self._predictor.abort()
            self._predictor = None

    # -- loss by timestep ---------------------------------------------------------------------------
    def compute_loss(self, source: ModelSource | None = None) -> Worker | None:
        """Add the loss-by-timestep curve of ``source`` (default: the current model)."""
        source = source or self.source
        if source is None or self._loss_worker is not None:
            return None
        if self.dataset is None:
            self.banner.show_message("Choose a dataset first: the loss is measured on its images.", "warning")
            return None
        self.banner.clear()
        dataset, images, device = self.dataset, self.loss_images_spin.value(), self.device
        self.loss_progress.setValue(0)
        self.loss_progress.show()
        worker = self._loss_worker = start_worker(
            lambda w: compute_loss_curve(w, source, dataset, images, device), self,
            yielded=self._on_loss_progress, returned=self._on_loss_curve,
            errored=lambda e: self.banner.show_message(
                error_text(e, f"Could not compute the loss of {source.label}")),
            finished=lambda: self._on_loss_finished(worker),
        )
        self._update_loss_controls()
        return worker

    def choose_loss_source(self, path: str | Path | None = None) -> Worker | None:
        """Overlay a run folder (its newest checkpoint) or one checkpoint or weights file."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "A checkpoint to compare", "",
                                                  "Checkpoints (*.safetensors *.pth *.pt);;All files (*)")
            if not path:
                return None
        path = Path(path)
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        label = path.name if path.is_dir() else f"{run.name} · {path.stem}"
        return self.compute_loss(ModelSource(path, self.config if path.suffix in (".pth", ".pt") else None, label))

    def cancel_loss(self) -> None:
        if self._loss_worker is not None:
            self._loss_worker.abort()

    def is_computing_loss(self) -> bool:
        return self._loss_worker is not None

    def _on_loss_progress(self, p: LossProgress) -> None:
        self.loss_progress.setMaximum(p.total)
        self.loss_progress.setValue(p.done)

    def _on_loss_curve(self, curve: LossCurve) -> None:
        self.loss_plot.add_curve(curve.label, curve.timesteps, curve.loss)
        self.lossCurveAdded.emit(curve)

    def _on_loss_finished(self, worker: Worker) -> None:
        worker.deleteLater()
        if self._loss_worker is worker:
            self._loss_worker = None
        self.loss_progress.hide()
        self._update_loss_controls()

    def _update_loss_controls(self) -> None:
        busy = self._loss_worker is not None
        self.loss_button.setEnabled(not busy and self.source is not None)
        self.loss_other_button.setEnabled(not busy)
        self.loss_cancel_button.setVisible(busy)

    # -- the network table ----------------------------------------------------------------------------
    def _count_unet(self, config: Config) -> None:
        params = config.model_params
        worker = start_worker(lambda w: unet_levels(params), self,
                              returned=lambda rows: self._show_unet(params, rows))
        worker.finished.connect(worker.deleteLater)

    def _show_unet(self, params: Any, rows: list[Any]) -> None:
        if self.config is None or params != self.config.model_params:
            return  # the config changed again while this was counted
        self.unet_table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            size = f"{row.resolution}×{row.resolution}" if row.resolution else "–"
            cells = (row.block, size, f"{row.channels_in} → {row.channels_out}", "yes" if row.attention else "",
                     f"{row.parameters:,}")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter if c < 4 else
                                          Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.unet_table.setItem(r, c, item)
        total = sum(row.parameters for row in rows)
        self.unet_total.setText(f"<b>Total: {total:,} parameters</b>")
        self.total_parameters = total
