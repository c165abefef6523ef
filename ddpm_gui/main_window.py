"""The main window: a header with the training controls, a sidebar of the four steps (data,
configure, train, sample) and the page for each, and the Explore page beside them.

The window is the one place that connects the parts: the config editor owns the config, the
dataset panel owns the scanned dataset, the training runner owns the run, the sampling panel
owns samples. Each reports through signals; the window decides what follows (a new im_path
means a new scan, a stopped run becomes the model to sample and the run to continue).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Signal, qVersion
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from core.choices import BUILTIN_PREFIX
from core.config import Config, load_config
from core.errors import UserError
from core.presets import DEFAULT_PRESET

from .banner import Banner, error_text
from .config_editor import ConfigEditor
from .dataset_panel import DatasetPanel
from .engine import DatasetKey, EngineInfo, ScanResult, load_engine, run_history
from .evaluation_panel import EvaluationPanel
from .explore_jobs import ModelSource
from .explore_panel import ExplorePanel
from .sampling_panel import SamplingPanel
from .settings import APP_NAME, Settings, load_geometry, new_run_dir, runs_dir, save_geometry
from .training import State, TrainingRunner
from .training_panel import TrainControls, TrainingPanel
from .turns import next_turn
from .workers import Worker, start_worker, stop_workers

PAGES = ("Data", "Configure", "Train", "Sample", "Explore", "Evaluate")
EXPLORE_PAGE = 4
EVALUATE_PAGE = 5
DEFAULT_SIZE = QSize(1280, 820)
#: How long closing waits for workers to stop; each checks between steps, so they stop within a
#: step, and one that does not is stuck where waiting would not help.
CLOSE_WAIT_S = 5.0


class MainWindow(QMainWindow):
    """DDPM Studio's window; see the module docstring for who owns what."""

    engineReady = Signal(object)  # EngineInfo
    shown = Signal()

    def __init__(self, store: QSettings | None = None) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self._store = store or QSettings()
        self.settings = Settings.load(self._store)
        self.engine: EngineInfo | None = None
        self.resume_run: Path | None = None  # the run Train continues, if any
        #: Asked before closing while training; tests replace it to answer without a dialog.
        self.confirm_close: Callable[[], bool] = self._ask_close
        self._closing = False
        self.shown_at: float | None = None

        self.runner = TrainingRunner(self)
        self.controls = TrainControls()
        self.dataset_panel = DatasetPanel()
        self.config_editor = ConfigEditor()
        self.training_panel = TrainingPanel(self.controls)
        self.sampling_panel = SamplingPanel()
        self.explore_panel = ExplorePanel()
        self.evaluation_panel = EvaluationPanel()
        self.banner = Banner()
        self._build()
        self._connect()
        self._build_menus()

        self.dataset_panel.set_recent(self.settings.recent_folders)
        self.config_editor.select_preset(DEFAULT_PRESET)
        geometry = load_geometry(self._store)
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(DEFAULT_SIZE)
        self.statusBar().showMessage("Loading the engine (PyTorch)…")

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        title = QLabel(f"<span style='font-size:17px; font-weight:600'>{APP_NAME}</span>")
        header = QHBoxLayout()
        header.addWidget(title)
        header.addSpacing(24)
        header.addWidget(self.controls, 1)

        self.nav = QListWidget()
        self.nav.setObjectName("navigation")
        self.nav.addItems([f"{i + 1}   {name}" for i, name in enumerate(PAGES)])
        self.nav.setFixedWidth(150)
        self.nav.setStyleSheet(
            "QListWidget { border:none; background:palette(window); font-size:14px; }"
            "QListWidget::item { padding:10px 8px; border-radius:6px; margin:2px 4px; }"
            "QListWidget::item:selected { background:#1f6feb; color:white; }"
        )
        self.pages = QStackedWidget()
        for page in (self.dataset_panel, self.config_editor, self.training_panel, self.sampling_panel,
                     self.explore_panel, self.evaluation_panel):
            self.pages.addWidget(page)
        self.nav.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.nav.setCurrentRow(0)

        body = QHBoxLayout()
        body.addWidget(self.nav)
        body.addWidget(self.pages, 1)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(header)
        layout.addWidget(self.banner)
        layout.addLayout(body, 1)
        self.setCentralWidget(central)

    def _connect(self) -> None:
        self.dataset_panel.pathChosen.connect(self._on_path_chosen)
        self.dataset_panel.scanned.connect(self._on_scanned)
        self.dataset_panel.scanFailed.connect(lambda _: self._update_controls())
        self.dataset_panel.channelsChosen.connect(
            lambda n: self.config_editor.set_value("model_params.im_channels", n))
        self.config_editor.configChanged.connect(self._on_config_changed)
        self.controls.trainClicked.connect(self.start_training)
        self.controls.newRunClicked.connect(lambda: self._set_resume_run(None))
        self.controls.pauseClicked.connect(self.runner.pause)
        self.controls.resumeClicked.connect(self.runner.resume)
        self.controls.stopClicked.connect(self.runner.stop)
        self.runner.event.connect(self.training_panel.on_event)
        self.runner.failed.connect(self._on_training_failed)
        self.runner.stateChanged.connect(lambda _: self._update_controls())
        self.runner.ended.connect(self._on_training_ended)
        self.dataset_panel.imageClicked.connect(
            lambda index: (self.explore_panel.show_dataset_image(index), self._show_page(EXPLORE_PAGE)))
        self.sampling_panel.sampled.connect(lambda: self.explore_panel.set_samples(self.sampling_panel.result.images))
        self.sampling_panel.sourceChecked.connect(lambda ok: ok and self._model_chosen(
            self.sampling_panel.source, self.sampling_panel.source_config, self.sampling_panel.source.name))

    def _build_menus(self) -> None:
        file = self.menuBar().addMenu("&File")
        self._action(file, "Open Image &Folder…", self.dataset_panel.browse, QKeySequence.StandardKey.Open)
        self._action(file, "Open &Run…", lambda: self.open_run(), "Ctrl+Shift+O")
        self.reopen_action = self._action(file, "Reopen &Last Run", self._reopen_last_run)
        self.reopen_action.setEnabled(bool(self.settings.last_run) and Path(self.settings.last_run).is_dir())
        self._action(file, "&Import Tutorial Checkpoint (.pth)…", lambda: self.import_checkpoint())
        file.addSeparator()
        self._action(file, "&Load Config…", lambda: self._show_page(1) or self.config_editor.load_yaml())
        self._action(file, "&Save Config…", lambda: self.config_editor.save_yaml(), QKeySequence.StandardKey.Save)
        file.addSeparator()
        self._action(file, "&Quit", self.close, "Ctrl+Q")  # StandardKey.Quit is empty on Windows
        run = self.menuBar().addMenu("&Run")
        self.train_action = self._action(run, "&Train / Continue", self.start_training, "Ctrl+T")
        self.pause_action = self._action(run, "&Pause / Resume", self.controls.pause_button.click, "Ctrl+P")
        self.stop_action = self._action(run, "&Stop", self.controls.stop_button.click, "Ctrl+.")
        run.addSeparator()
        self.sample_action = self._action(run, "Sa&mple", self._sample_shortcut, "Ctrl+R")
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About DDPM Studio", self._about)

    def _action(self, menu: Any, text: str, slot: Callable, shortcut: Any = None) -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(lambda _=False: slot())
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        return action

    def _show_page(self, index: int) -> None:
        self.nav.setCurrentRow(index)

    def _model_chosen(self, source: Path, config: Config, name: str) -> None:
        """The pages that read a model (Explore, Evaluate) follow the one the Sample page holds."""
        self.explore_panel.set_source(ModelSource(source, config, name))
        self.evaluation_panel.set_source(source, config, name)

    def _sample_shortcut(self) -> None:
        self._show_page(3)
        self.sampling_panel.start()

    # -- startup: the engine loads after the window is on screen ---------------------------------
    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self.shown_at is None and not self.testAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen):
            self.shown_at = time.perf_counter()
            self.shown.emit()
            self._load_engine()

    def _load_engine(self) -> None:
        worker = start_worker(load_engine, self, returned=self._on_engine_loaded, errored=lambda e: (
            self.banner.show_message(
                error_text(e, "The engine (PyTorch) could not be loaded; reinstalling DDPM Studio may help"))))
        worker.finished.connect(worker.deleteLater)

    def _on_engine_loaded(self, info: EngineInfo) -> None:
        """Take the answer a timer's turn later, so that the first frame and the setup the answer
        starts (a scan, the Explore page) fall in separate turns of the event loop rather than one
        long one (the answer is usually there before that frame)."""
        next_turn(self, lambda: self._on_engine_ready(info))

    def _on_engine_ready(self, info: EngineInfo) -> None:
        """Show the engine's facts, then, a turn later (each half about 3 ms of the UI thread,
        with a repaint after it), start what they allow: the dataset's scan, the Explore page."""
        self.engine = info
        self.config_editor.set_devices(info.devices)
        self.statusBar().showMessage(f"Engine ready · {', '.join(info.devices.values())}", 8000)
        next_turn(self, lambda: self._start_with_engine(info))

    def _start_with_engine(self, info: EngineInfo) -> None:
        self._on_config_changed(self.config_editor.config)
        self.explore_panel.set_engine_ready()
        self.engineReady.emit(info)

    # -- config and dataset ----------------------------------------------------------------------
    def load_demo_now(self) -> None:
        """Load the config's dataset here and now if it is a built-in demo (see
        :meth:`DatasetPanel.load_now`): for a window not yet on screen."""
        config = self.config_editor.config
        if config is not None:
            self.dataset_panel.load_now(DatasetKey.of(config))

    def _on_path_chosen(self, path: str) -> None:
        self.banner.clear()
        self.config_editor.set_value("dataset_params.im_path", path)
        self._show_page(0)

    def _on_config_changed(self, config: Config | None) -> None:
        if config is not None:
            self.dataset_panel.show_path(config.dataset_params.im_path)
            self.sampling_panel.device = self.evaluation_panel.device = config.train_params.device
            self.explore_panel.set_config(config)
            key = DatasetKey.of(config)
            if self.engine is not None and key != self.dataset_panel.key:
                self.dataset_panel.scan(key)
        self._update_controls()

    def _on_scanned(self, result: ScanResult) -> None:
        self.explore_panel.set_dataset(result.dataset)
        path = result.key.im_path
        if not path.lower().startswith(BUILTIN_PREFIX):
            self.settings.add_recent(path)
            self.dataset_panel.set_recent(self.settings.recent_folders)
        self._update_controls()

    def current_dataset(self) -> Any:
        """The scanned dataset if it is the one the config names, else None."""
        config, result = self.config_editor.config, self.dataset_panel.result
        if config is None or result is None or result.key != DatasetKey.of(config):
            return None
        return result.dataset

    def _why_not_train(self) -> str:
        if self._closing:
            return "Closing…"
        if self.engine is None:
            return "Loading the engine…"
        if self.config_editor.config is None:
            return "Fix the config fields marked in red first."
        if self.dataset_panel.is_scanning():
            return "Reading the dataset…"
        if self.current_dataset() is None:
            return "Choose a dataset with usable images first."
        return ""

    def _update_controls(self) -> None:
        why = self._why_not_train()
        state = self.runner.state.value
        self.controls.set_state(state, can_train=not why, why=why, resuming=self.resume_run is not None)
        self.config_editor.set_locked(self.runner.is_active())
        self.dataset_panel.set_locked(self.runner.is_active())
        self.sampling_panel.set_busy_elsewhere(self.runner.state not in (State.IDLE, State.PAUSED))
        self.evaluation_panel.set_busy_elsewhere(self.runner.state not in (State.IDLE, State.PAUSED))

    # -- training ---------------------------------------------------------------------------------
    def start_training(self) -> bool:
        """Start a new run, or continue ``resume_run``, with the current config and dataset."""
        config, dataset = self.config_editor.config, self.current_dataset()
        if self._why_not_train() or self.runner.is_active():
            return False
        resume = self.resume_run is not None
        run_dir = self.resume_run or new_run_dir(config.train_params.task_name)
        self.banner.clear()
        self.training_panel.begin(run_dir, resume)
        self.runner.start(config, run_dir, dataset=dataset, resume=resume)
        self.settings.last_run = str(run_dir)
        self._show_page(2)
        return True

    def _on_training_failed(self, message: str) -> None:
        self.training_panel.show_failure(message)
        self._show_page(2)

    def _on_training_ended(self, finished: Any) -> None:
        run_dir = self.runner.run_dir
        if finished is not None or (run_dir is not None and run_dir.is_dir()):
            stopped = finished is None or finished.reason == "stopped"
            self._set_resume_run(run_dir if stopped and _has_checkpoint(run_dir) else None)
            self._offer_for_sampling(run_dir)
        self._update_controls()
        if self._closing:
            self.close()

    def _set_resume_run(self, run_dir: Path | None) -> None:
        self.resume_run = run_dir
        self._update_controls()

    def _offer_for_sampling(self, run_dir: Path) -> None:
        """Make a run the model the sampling page uses, if it holds weights."""
        if not _has_checkpoint(run_dir):
            return
        try:
            config = load_config(run_dir / "config.yaml")
        except UserError as e:
            self.banner.show_message(str(e))
            return
        self.sampling_panel.set_source(run_dir, config, f"run {run_dir.name}")
        self._model_chosen(run_dir, config, f"run {run_dir.name}")
        self.reopen_action.setEnabled(True)

    # -- runs and checkpoints ----------------------------------------------------------------------
    def open_run(self, path: str | Path | None = None) -> bool:
        """Open a run folder: its config, its loss curve; Train continues it, Sample samples it."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Open a run folder", str(runs_dir()))
            if not path:
                return False
        run_dir = Path(path)
        if self.runner.is_active():
            self.banner.show_message("Stop training before opening another run.", "warning")
            return False
        try:
            config = load_config(run_dir / "config.yaml")
        except UserError as e:
            self.banner.show_message(f"{run_dir} is not a DDPM Studio run folder: {e}")
            return False
        self.config_editor.set_config(config, run_dir / "config.yaml")
        self.training_panel.begin(run_dir, resume=False)
        self._set_resume_run(run_dir if _has_checkpoint(run_dir) else None)
        self._offer_for_sampling(run_dir)
        self.settings.last_run = str(run_dir)
        loader = start_worker(lambda w: run_history(run_dir), self, returned=self._show_history, errored=(
            lambda e: self.banner.show_message(error_text(e, f"Could not read the log of {run_dir}"))))
        loader.finished.connect(loader.deleteLater)
        self._show_page(2)
        return True

    def _show_history(self, events: list[Any]) -> None:
        for event in events:
            self.training_panel.on_event(event)
            last = getattr(event, "last", None) or {}
            if last.get("total_steps") and last["step"] >= last["total_steps"]:
                self._set_resume_run(None)  # finished: nothing to continue; Train starts a new run

    def _reopen_last_run(self) -> None:
        self.open_run(self.settings.last_run)

    def import_checkpoint(self, path: str | Path | None = None) -> bool:
        """Sample from a tutorial ``.pth`` (or a weights file) with the current config's model,
        once it has loaded in the background (the sampling page says why if it cannot)."""
        config = self.config_editor.config
        if config is None:
            self.banner.show_message("Fix the config first: a .pth holds only weights, so the model "
                                     "is built from the config shown on the Configure page.")
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import a checkpoint", "",
                                                  "Checkpoints (*.pth *.pt *.safetensors);;All files (*)")
            if not path:
                return False
        path = Path(path)
        self.sampling_panel.check_source(path, config, f"{path.name} (with the current config's model)")
        self._show_page(3)
        return True

    # -- drag and drop -----------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if _dropped_path(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        path = _dropped_path(event)
        if path is not None:
            event.acceptProposedAction()
            self.dataset_panel.choose(path)

    # -- closing -----------------------------------------------------------------------------------
    def _ask_close(self) -> bool:
        answer = QMessageBox.question(
            self, "Stop training?",
            "Training is running. Stop it and quit? A checkpoint is saved first, so you can continue "
            "this run later (File ▸ Open Run…).",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """While training: ask, stop, and close only after the checkpoint is written. Then join
        every worker, so no thread outlives the window (Qt aborts on destroying a running one)."""
        if self.runner.is_active():
            if not self._closing and not self.confirm_close():
                event.ignore()
                return
            self._begin_closing()
            self.runner.stop()
            self.statusBar().showMessage("Stopping training and saving a checkpoint…")
            event.ignore()  # closed again from _on_training_ended
            return
        self._begin_closing()
        stop_workers(self.findChildren(Worker), CLOSE_WAIT_S)  # scans, sampling, exports, the engine load
        self.settings.save(self._store)
        save_geometry(self.saveGeometry(), self._store)
        self._store.sync()
        super().closeEvent(event)

    def _begin_closing(self) -> None:
        """Once closing is decided, clicks and menu actions still queued must start nothing new:
        a run or a sampler started now would outlive the window."""
        self._closing = True
        self.centralWidget().setEnabled(False)
        self.menuBar().setEnabled(False)
        self._update_controls()

    def about_text(self) -> str:
        """Version, torch, device, the bundled datasets' licences and where runs go (Help ▸ About)."""
        from core import __version__

        devices = ", ".join(self.engine.devices.values()) if self.engine else "loading…"
        licences = "".join(f"<br>{name}: {text}" for name, text in dataset_licences().items())
        return (f"<b>{APP_NAME} {__version__}</b><br>Train a denoising diffusion model (DDPM) on your own "
                f"images and watch it learn.<br><br>PyTorch {_version_of('torch')} · Qt {qVersion()}<br>"
                f"Device: {devices}<br><br><b>Bundled datasets</b>{licences}<br><br>"
                f"Runs are saved in:<br>{runs_dir()}")

    def _about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}", self.about_text())


def _version_of(package: str) -> str:
    """An installed package's version without importing it (torch takes seconds to import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def dataset_licences() -> dict[str, str]:
    """Each bundled dataset's title and its licence, as its COPYING file states it (a Debian
    ``License:`` field or the line that names the licence)."""
    import re

    from core.choices import BUILTIN_DATASETS
    from core.resources import resources_dir

    found = {}
    for name, title in BUILTIN_DATASETS.items():
        copying = resources_dir() / "datasets" / name / "COPYING"
        text = copying.read_text(encoding="utf-8") if copying.exists() else ""
        field = re.search(r"^License:\s*(.+)$", text, re.MULTILINE)
        sentence = re.search(r"^.*licen[cs]e.*$", text, re.MULTILINE | re.IGNORECASE)
        licence = f"{field[1]} (MIT) licence" if field and field[1] == "Expat" else field[1] if field else (
            " ".join(sentence[0].split()) if sentence else "see its COPYING file")
        found[title] = f"{licence}; see {copying}"
    return found


def _has_checkpoint(run_dir: Path | None) -> bool:
    from core.runs import RunDir

    return run_dir is not None and (RunDir(run_dir).latest_checkpoint() is not None
                                    or any(run_dir.glob("*.safetensors")))


def _dropped_path(event: QDragEnterEvent | QDropEvent) -> str | None:
    """The first local folder or file dropped, if any."""
    for url in event.mimeData().urls():
        if url.isLocalFile() and Path(url.toLocalFile()).exists():
            return url.toLocalFile()
    return None
