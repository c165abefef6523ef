"""The training view: controls in the window's header, and a page with live statistics, the
loss curve and the trainer's preview samples.

Events arrive per step; the page stores the latest numbers and repaints labels at most 10
times a second, the same cadence as the loss curve, so a fast model cannot flood the UI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from core.events import CheckpointSaved, Finished, QualityMeasured, Started, StepDone

from .banner import Banner
from .engine import LossLog, PreviewGrid, QualityHistory
from .images import ImageView
from .loss_plot import LossPlot
from .quality_plot import QualityPlot

REFRESH_MS = 100
NO_PREVIEWS = "No previews in this run:\nset train_params.sample_every_steps to see some."


def format_duration(seconds: float) -> str:
    """'1:02:03', '4:05' or '12 s': short enough for a status line."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{m}:{s:02d}" if m else f"{s} s"


def _icon(which: QStyle.StandardPixmap) -> QIcon:
    """A standard icon of the current style: symbol fonts are not on every machine."""
    return QApplication.style().standardIcon(which)


class TrainControls(QWidget):
    """Train / New run / Pause-Resume / Stop and the progress bar, always visible in the header."""

    trainClicked = Signal()
    newRunClicked = Signal()
    pauseClicked = Signal()
    resumeClicked = Signal()
    stopClicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.train_button = QPushButton("Train")
        self.train_button.setIcon(_icon(QStyle.StandardPixmap.SP_MediaPlay))
        self.train_button.setObjectName("trainButton")
        self.train_button.setDefault(True)
        self.train_button.setMinimumWidth(110)
        self.train_button.setStyleSheet(
            "QPushButton:enabled { background:#1f6feb; color:white; font-weight:bold; border-radius:4px;"
            " padding:5px 14px; } QPushButton:enabled:hover { background:#388bfd; }"
        )
        self.train_button.clicked.connect(self.trainClicked)
        self.new_run_button = QPushButton("New run")
        self.new_run_button.setObjectName("newRunButton")
        self.new_run_button.setToolTip("Forget the current run and start the next one from scratch.")
        self.new_run_button.clicked.connect(self.newRunClicked)
        self.new_run_button.hide()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("pauseButton")
        self.pause_button.clicked.connect(self._on_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setIcon(_icon(QStyle.StandardPixmap.SP_MediaStop))
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setToolTip("Stop after the current step and save a checkpoint.")
        self.stop_button.clicked.connect(self.stopClicked)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgressBar")
        self.progress.setTextVisible(True)
        self.progress.setFormat("Ready")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setMinimumWidth(260)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.train_button, self.new_run_button, self.pause_button, self.stop_button):
            layout.addWidget(w)
        layout.addWidget(self.progress, 1)
        self._paused = False
        self.set_state("idle", can_train=False, why="")

    def set_state(self, state: str, *, can_train: bool, why: str, resuming: bool = False) -> None:
        """Enable what makes sense in ``state``; ``why`` explains a disabled Train button."""
        idle = state == "idle"
        self.train_button.setEnabled(idle and can_train)
        self.train_button.setText("Continue" if resuming else "Train")
        self.train_button.setToolTip(why or ("Continue the current run from its last checkpoint." if resuming
                                             else "Start a new training run with this config."))
        self.new_run_button.setVisible(idle and resuming)
        self._paused = state == "paused"
        self.pause_button.setText("Resume" if self._paused else "Pause")
        self.pause_button.setIcon(_icon(QStyle.StandardPixmap.SP_MediaPlay if self._paused
                                        else QStyle.StandardPixmap.SP_MediaPause))
        self.pause_button.setEnabled(state in ("running", "paused"))
        self.stop_button.setEnabled(state in ("starting", "running", "paused"))
        if state == "starting":
            self.progress.setRange(0, 0)
        elif idle and self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.progress.setFormat({
            "starting": "Starting…", "paused": "Paused · %p%", "stopping": "Stopping, saving a checkpoint…",
        }.get(state, "%p%" if not idle else self.progress.format()))

    def _on_pause(self) -> None:
        if not self._paused:  # a slow step can take seconds: say at once that the click was heard
            self.progress.setFormat("Pausing after this step…")
            self.pause_button.setEnabled(False)
        (self.resumeClicked if self._paused else self.pauseClicked).emit()


class _Stat(QFrame):
    """A small labelled number: 'STEP / 120 of 6,000'."""

    def __init__(self, title: str, name: str) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.value = QLabel("–")
        self.value.setObjectName(name)
        self.value.setStyleSheet("font-size: 16px; font-weight: 600;")
        caption = QLabel(title.upper())
        caption.setStyleSheet("color: palette(placeholder-text); font-size: 10px; letter-spacing: 1px;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(0)
        layout.addWidget(caption)
        layout.addWidget(self.value)


class TrainingPanel(QWidget):
    """Statistics, the loss curve and the latest preview grid of the active (or last) run."""

    def __init__(self, controls: TrainControls, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controls = controls
        self.banner = Banner()
        self.stats = {key: _Stat(title, f"{key}Label") for key, title in (
            ("step", "Step"), ("epoch", "Epoch"), ("loss", "Loss"), ("speed", "Images / s"),
            ("time", "Training time"), ("eta", "Time left"),
            ("device", "Device"))}
        stats_row = QHBoxLayout()
        for stat in self.stats.values():
            stats_row.addWidget(stat)

        self.loss_plot = LossPlot()
        self.log_y = QCheckBox("Log scale")
        self.log_y.setObjectName("logYCheck")
        self.log_y.setChecked(True)
        self.log_y.toggled.connect(self.loss_plot.set_log_y)
        self.loss_plot.set_log_y(True)
        plot_box = QWidget()
        pl = QVBoxLayout(plot_box)
        pl.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Training loss</b>"))
        head.addStretch(1)
        head.addWidget(self.log_y)
        pl.addLayout(head)
        pl.addWidget(self.loss_plot, 2)
        self.quality_plot = QualityPlot()  # appears with the first point (train_params.eval_every_steps)
        self.quality_plot.hide()
        pl.addWidget(self.quality_plot, 1)

        self.preview = ImageView(NO_PREVIEWS)
        self.preview.setObjectName("previewView")
        self.preview_caption = QLabel("<b>Preview</b>")
        preview_box = QWidget()
        vl = QVBoxLayout(preview_box)
        vl.setContentsMargins(0, 0, 0, 0)
        vl.addWidget(self.preview_caption)
        vl.addWidget(self.preview, 1)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(plot_box)
        split.addWidget(preview_box)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        self.run_label = QLabel("No run yet: press <b>Train</b>.")
        self.run_label.setObjectName("runLabel")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_run_button = QPushButton("Show run folder")
        self.open_run_button.setEnabled(False)
        self.open_run_button.clicked.connect(self._open_run_folder)
        self.checkpoint_label = QLabel()
        self.checkpoint_label.setObjectName("checkpointLabel")
        footer = QGridLayout()
        footer.addWidget(self.run_label, 0, 0)
        footer.addWidget(self.checkpoint_label, 1, 0)
        footer.addWidget(self.open_run_button, 0, 1, 2, 1)
        footer.setColumnStretch(0, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(stats_row)
        layout.addWidget(split, 1)
        layout.addLayout(footer)

        self.run_dir: Path | None = None
        self._latest: Any = None  # newest StepDone, shown at the next refresh
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._refresh)
        self._timer.start()

    # -- a run's lifecycle --------------------------------------------------------------------
    def begin(self, run_dir: Path, resume: bool) -> None:
        """A run is starting: clear the last run's curve unless this one continues it."""
        self.run_dir = run_dir
        self.banner.clear()
        if not resume:
            self.loss_plot.clear_history()
            self.quality_plot.set_results([])
            self.preview.set_image(None)
            self.preview_caption.setText("<b>Preview</b>")
            self.checkpoint_label.clear()
        self.run_label.setText(f"Run folder: {run_dir}")
        self.open_run_button.setEnabled(True)

    def show_failure(self, message: str) -> None:
        self.banner.show_message(message)

    def on_event(self, event: Any) -> None:
        """Show one trainer event (``core.events``, previews as ``engine.PreviewGrid``) or an
        opened run's ``engine.LossLog``; other events change nothing here."""
        handler = {
            LossLog: self._show_log, Started: self._show_started, StepDone: self._show_step,
            PreviewGrid: self._show_preview, CheckpointSaved: self._show_checkpoint, Finished: self._show_finished,
            QualityMeasured: self._show_quality, QualityHistory: self._show_quality_history,
        }.get(type(event))
        if handler is not None:
            handler(event)

    def _show_log(self, log: LossLog) -> None:
        """The steps already trained (an opened or continued run): the curve, and where it ended."""
        self.loss_plot.clear_history()
        for step, loss in zip(log.steps, log.losses, strict=True):
            self.loss_plot.add(int(step), float(loss))
        last = log.last
        if not last:
            return
        total = last.get("total_steps")
        self.stats["step"].value.setText(f"{last['step']:,}" + (f" / {total:,}" if total else ""))
        self.stats["loss"].value.setText(f"{last['loss']:.4f}")
        if "epoch" in last:
            self.stats["epoch"].value.setText(str(last["epoch"] + 1))
        if "images_per_s" in last:
            self.stats["speed"].value.setText(f"{last['images_per_s']:,.0f}")
        if "eta_s" in last:  # at the speed it last ran: the time a continued run still needs
            self.stats["eta"].value.setText(format_duration(last["eta_s"]))
        if "train_s" in last:
            self.stats["time"].value.setText(_time_used(last["train_s"], last.get("time_left_s")))
        if total:
            self.controls.progress.setMaximum(total)
            self.controls.progress.setValue(last["step"])

    def _show_started(self, e: Started) -> None:
        every = e.preview_every
        self.preview.set_placeholder(f"First preview at step {(e.start_step // every + 1) * every:,}." if every
                                     else NO_PREVIEWS)
        self.stats["device"].value.setText(e.setup or f"{e.device} · {e.precision}")
        self.stats["device"].value.setToolTip(f"{e.num_params:,} parameters, {e.dataset_size:,} images")
        self.controls.progress.setRange(0, max(1, e.total_steps))
        self.controls.progress.setValue(e.start_step)
        self.run_label.setText(f"Run folder: {e.run_dir} · {e.num_params / 1e6:.2f} M parameters · "
                               f"{e.dataset_size:,} images")

    def _show_step(self, e: StepDone) -> None:
        self.loss_plot.add(e.step, e.loss)
        self._latest = e

    def _show_preview(self, e: PreviewGrid) -> None:
        self.preview.set_array(e.grid)
        self.preview_caption.setText(f"<b>Preview</b> at step {e.step:,} (EMA weights)")

    def _show_quality(self, e: QualityMeasured) -> None:
        self.quality_plot.add(e.result)

    def _show_quality_history(self, e: QualityHistory) -> None:
        self.quality_plot.set_results(e.results)

    def _show_checkpoint(self, e: CheckpointSaved) -> None:
        self.checkpoint_label.setText(f"Checkpoint saved at step {e.step:,}: {Path(e.path).name}")

    def _show_finished(self, e: Finished) -> None:
        self._refresh()
        word = "Finished" if e.reason == "completed" else "Stopped"
        self.controls.progress.setFormat(f"{word} at step {e.step:,}")

    def _refresh(self) -> None:
        e, self._latest = self._latest, None
        if e is None:
            return
        self.stats["step"].value.setText(f"{e.step:,} / {e.total_steps:,}")
        self.stats["epoch"].value.setText(str(e.epoch + 1))
        self.stats["loss"].value.setText(f"{e.loss:.4f}")
        self.stats["speed"].value.setText(f"{e.images_per_s:,.0f}")
        self.stats["eta"].value.setText(format_duration(e.eta_s))
        self.stats["time"].value.setText(_time_used(e.time_used_s, e.time_left_s))
        bar = self.controls.progress
        if e.time_left_s is None:
            bar.setMaximum(max(1, e.total_steps))
            bar.setValue(e.step)
        else:  # a time budget ends the run: show the share of it used
            bar.setMaximum(max(1, round(e.time_used_s + e.time_left_s)))
            bar.setValue(round(e.time_used_s))

    def _open_run_folder(self) -> None:
        if self.run_dir is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run_dir)))


def _time_used(used_s: float, left_s: float | None) -> str:
    """Training time so far, and of how much when a time budget (max_minutes) is set."""
    used = format_duration(used_s)
    return used if left_s is None else f"{used} of {format_duration(used_s + left_s)}"
