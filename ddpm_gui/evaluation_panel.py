"""The Evaluate page: how good is the model, in numbers, and which sampler is good enough.

Evaluate scores N samples with FID and KID against the training images and shows beside each
score the same metric for real images against real images at the same N (FID at small N is
biased; the reference says what "as good as the data" means at this N). Compare samplers runs
every sampler at a few step counts, so a user can pick the fastest one that is good enough.
Everything runs on a worker with progress and Cancel; each finished result is already in the
run's ``eval.jsonl``, whose history an opened run shows here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.choices import COMPARISON_STEPS, SAMPLER_SPECS, SAMPLERS
from core.config import Config

from .banner import Banner, error_text
from .sampler_picker import SamplerPicker
from .engine import EvalProgress, EvalRequest, eval_history, run_evaluation
from .workers import Worker, start_worker

SAMPLE_COUNTS = (100, 250, 500, 1000, 2000)
DEFAULT_COUNT = 500
HISTORY_COLUMNS = ("step", "sampler", "steps", "N", "FID", "real FID", "KID", "real KID", "seconds")
COMPARISON_COLUMNS = ("sampler", "steps", "FID", "KID", "± std", "sampling s", "ms / image")


class EvaluationPanel(QWidget):
    """N and sampler choices, Evaluate / Compare samplers / Cancel, the result, history and comparison."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source: Path | None = None
        self.source_config: Config | None = None
        self.device = "auto"
        self._worker: Worker | None = None
        self._busy_elsewhere = False

        self.source_label = QLabel("No model yet: train one, or open a run (File ▸ Open Run…).")
        self.source_label.setWordWrap(True)
        self.num_combo = QComboBox()
        self.num_combo.setObjectName("evalNumCombo")
        for n in SAMPLE_COUNTS:
            self.num_combo.addItem(f"{n:,}", n)
        self.num_combo.setCurrentIndex(SAMPLE_COUNTS.index(DEFAULT_COUNT))
        self.num_combo.setToolTip("Images sampled and scored. FID is only comparable at equal N; "
                                  "KID is unbiased at any N but noisier at small N.")
        self.picker = SamplerPicker("evalSamplerCombo", "evalStepsSpin")
        self.sampler_combo, self.steps_spin = self.picker.combo, self.picker.steps
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setObjectName("evaluateButton")
        self.evaluate_button.clicked.connect(lambda: self.evaluate())
        self.compare_button = QPushButton("Compare samplers")
        self.compare_button.setObjectName("compareSamplersButton")
        self.compare_button.setToolTip("Every sampler at " + ", ".join(map(str, COMPARISON_STEPS)) + " steps, at this N.")
        self.compare_button.clicked.connect(lambda: self.compare())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("evalCancelButton")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setObjectName("evalProgressBar")
        self.progress.hide()
        self.banner = Banner()

        settings = QHBoxLayout()
        for label, widget in (("Images (N)", self.num_combo), ("Sampler", self.sampler_combo),
                              ("Steps", self.steps_spin)):
            settings.addWidget(QLabel(label))
            settings.addWidget(widget)
        settings.addStretch(1)
        for button in (self.evaluate_button, self.compare_button, self.cancel_button):
            settings.addWidget(button)

        self.result_label = QLabel("Press <b>Evaluate</b> to score samples against the training images.")
        self.result_label.setObjectName("evalResultLabel")
        self.result_label.setWordWrap(True)
        self.result_label.setStyleSheet("font-size:14px; padding:6px;")

        self.history_table = _table("evalHistoryTable", HISTORY_COLUMNS)
        history_box = QGroupBox("This run's evaluations (eval.jsonl)")
        QVBoxLayout(history_box).addWidget(self.history_table)
        self.comparison_table = _table("samplerComparisonTable", COMPARISON_COLUMNS)
        self.comparison_caption = QLabel("Compare samplers fills this table: quality and time per sampler "
                                         "and step count, for the model above.")
        self.comparison_caption.setWordWrap(True)
        comparison_box = QGroupBox("Sampler comparison")
        cl = QVBoxLayout(comparison_box)
        cl.addWidget(self.comparison_caption)
        cl.addWidget(self.comparison_table)

        layout = QVBoxLayout(self)
        layout.addWidget(self.source_label)
        layout.addLayout(settings)
        layout.addWidget(self.progress)
        layout.addWidget(self.banner)
        layout.addWidget(self.result_label)
        layout.addWidget(comparison_box, 1)
        layout.addWidget(history_box, 1)
        self._update_enabled()

    # -- setup from the window --------------------------------------------------------------------
    def set_source(self, source: Path | None, config: Config | None, description: str = "") -> Worker | None:
        """The model to evaluate; a run folder's eval.jsonl fills the history (on a worker)."""
        self.source, self.source_config = source, config
        if config is not None:
            self.picker.set_num_timesteps(config.diffusion_params.num_timesteps)
        self.source_label.setText(f"Model: <b>{description or source}</b>" if source is not None else
                                  "No model yet: train one, or open a run (File ▸ Open Run…).")
        self.history_table.setRowCount(0)
        self._update_enabled()
        if source is None or not source.is_dir():
            return None
        loader = start_worker(
            lambda w: eval_history(source), self, returned=lambda rows: self._show_history(source, rows),
            errored=lambda e: self.banner.show_message(error_text(e, f"Could not read {source}")),
        )
        loader.finished.connect(loader.deleteLater)
        return loader

    def set_busy_elsewhere(self, busy: bool) -> None:
        """Training uses the same cores: evaluation waits until it ends or pauses."""
        self._busy_elsewhere = busy
        self._update_enabled()

    def _update_enabled(self) -> None:
        running = self._worker is not None
        ready = self.source is not None and not self._busy_elsewhere and not running
        self.evaluate_button.setEnabled(ready)
        self.compare_button.setEnabled(ready)
        self.cancel_button.setEnabled(running)
        tip = ("Train a model or open a run first." if self.source is None else
               "Pause or stop training to evaluate." if self._busy_elsewhere else
               "Sample N images and score them against the training images.")
        self.evaluate_button.setToolTip(tip)

    # -- running ----------------------------------------------------------------------------------
    def request(self, grid: tuple[tuple[str, int], ...]) -> EvalRequest:
        return EvalRequest(source=self.source, config=self.source_config, num_images=self.num_combo.currentData(),
                           grid=grid, seed=0, device=self.device)

    def evaluate(self) -> Worker | None:
        """Score the chosen sampler at the chosen N; returns the worker (tests wait on it)."""
        if not self.evaluate_button.isEnabled():
            return None
        return self._start(self.request(((self.sampler_combo.currentData(), self.steps_spin.value()),)),
                           comparison=False)

    def compare(self, step_counts: tuple[int, ...] = COMPARISON_STEPS) -> Worker | None:
        """Every sampler at each of ``step_counts``, rows filling in as they finish."""
        if not self.compare_button.isEnabled():
            return None
        steps = tuple(min(k, self.picker.num_timesteps) for k in step_counts)
        self.comparison_table.setRowCount(0)
        self.comparison_caption.setText(f"N = {self.num_combo.currentData():,} per row; "
                                        "lower FID and KID are better.")
        return self._start(self.request(tuple((s, k) for s in SAMPLERS for k in steps)), comparison=True)

    def _start(self, request: EvalRequest, comparison: bool) -> Worker:
        self.banner.clear()
        self.progress.setRange(0, 0)
        self.progress.setFormat("Starting…")
        self.progress.show()
        worker = self._worker = start_worker(  # slots are queued: none runs before this returns
            lambda w: run_evaluation(w, request), self,
            yielded=lambda item: self._on_yielded(item, comparison),
            errored=lambda e: self.banner.show_message(error_text(e, "Evaluation failed")),
            aborted=lambda: self.progress.setFormat("Cancelled: finished results are kept"),
            returned=lambda _: self.progress.setFormat("Done"), finished=lambda: self._on_finished(worker),
        )
        self._update_enabled()
        return worker

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.abort()

    def is_running(self) -> bool:
        return self._worker is not None

    def _on_yielded(self, item: Any, comparison: bool) -> None:
        if isinstance(item, EvalProgress):
            what = f"{item.index + 1}/{item.count} · " if item.count > 1 else ""
            self.progress.setRange(0, item.total)
            self.progress.setValue(item.done)
            self.progress.setFormat(f"{what}{item.stage}: %v / %m")
            return
        if comparison:
            self._add_comparison_row(item)
        else:
            self.result_label.setText(describe(item))
        self._add_history_row(item)

    def _on_finished(self, worker: Worker) -> None:
        if self._worker is worker:
            self._worker = None
        worker.deleteLater()
        self._update_enabled()

    # -- tables -----------------------------------------------------------------------------------
    def _show_history(self, source: Path, rows: list[Any]) -> None:
        if source != self.source:
            return  # another model was chosen while the file was read
        self.history_table.setRowCount(0)
        for row in rows:
            if row.kind == "evaluate":
                self._add_history_row(row)
        if rows and rows[-1].kind == "evaluate":
            self.result_label.setText("Last evaluation of this run: " + describe(rows[-1]))

    def _add_history_row(self, r: Any) -> None:
        _append_row(self.history_table, (
            "" if r.step is None else f"{r.step:,}", r.sampler or "images", r.steps or "", f"{r.n:,}",
            f"{r.fid:.2f}", _fmt(r.reference_fid, ".2f"), f"{r.kid_mean:.4f}", _fmt(r.reference_kid_mean, ".4f"),
            f"{r.seconds:.0f}"))

    def _add_comparison_row(self, r: Any) -> None:
        per_image = 1000 * (r.sample_seconds or 0) / max(1, r.n)
        _append_row(self.comparison_table, (
            _title(r.sampler), r.steps, f"{r.fid:.2f}", f"{r.kid_mean:.4f}",
            f"{r.kid_std:.4f}", f"{r.sample_seconds or 0:.1f}", f"{per_image:.0f}"))
        if r.reference_fid is not None:
            self.comparison_caption.setText(
                f"N = {r.n:,} per row; lower is better. Real vs real at the same N: FID {r.reference_fid:.2f}, "
                f"KID {r.reference_kid_mean:.4f}.")


def describe(r: Any) -> str:
    """The scores with their real-vs-real reference beside them, as rich text."""
    how = f"{_title(r.sampler)}, {r.steps} steps · " if r.sampler else ""
    return (f"<b>FID {r.fid:.2f}</b> (real vs real: {_fmt(r.reference_fid, '.2f')}) &nbsp;·&nbsp; "
            f"<b>KID {r.kid_mean:.4f} ± {r.kid_std:.4f}</b> (real vs real: {_fmt(r.reference_kid_mean, '.4f')})"
            f"<br><span style='color:gray'>N = {r.n:,} · {how}{r.seconds:.0f} s"
            + ("" if r.step is None else f" · weights of step {r.step:,}") + "</span>")


def _title(sampler: str) -> str:
    spec = SAMPLER_SPECS.get(sampler)
    return spec.title if spec is not None else sampler


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _table(name: str, columns: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setObjectName(name)
    table.setHorizontalHeaderLabels(list(columns))
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    return table


def _append_row(table: QTableWidget, cells: tuple[Any, ...]) -> None:
    row = table.rowCount()
    table.insertRow(row)
    for column, value in enumerate(cells):
        table.setItem(row, column, QTableWidgetItem(str(value)))
