"""The config form: every field of ``core.config``, grouped by the tutorial's four sections.

The form is generated from the dataclasses (type hint -> editor, ``metadata["doc"]`` ->
tooltip), so a field added to core appears here without GUI changes. After every edit the
whole form goes through ``Config.from_dict``; each problem core reports
(``core.errors.ConfigProblem``) names its field and is shown under that field. ``configChanged`` carries the valid Config,
or None while anything is invalid (the window disables Train then).
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from core.config import SECTIONS, Config, load_config, save_config
from core.errors import ConfigError, ConfigProblem, UserError

from .banner import Banner, error_text
from .fields import FieldEditor, editor_for
from .workers import Worker

SECTION_TITLES = {
    "dataset_params": "Dataset",
    "diffusion_params": "Diffusion",
    "model_params": "Model (UNet)",
    "train_params": "Training",
}
COLUMNS = (("dataset_params", "diffusion_params", "model_params"), ("train_params",))


class ConfigEditor(QWidget):
    """Presets, YAML load/save, the generated form, and the model's size and device."""

    configChanged = Signal(object)  # Config | None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config: Config | None = None
        self.problems: list[ConfigProblem] = []
        self.source: Path | None = None  # the YAML last loaded or saved, for the title and dialogs
        self.editors: dict[str, FieldEditor] = {}
        self._devices: dict[str, str] = {}
        self._counter: Worker | None = None
        self._count_wanted: Any = None
        self._count_done: Any = None
        self._validate_timer = QTimer(self)  # coalesce a burst of keystrokes into one validation
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(150)
        self._validate_timer.timeout.connect(self.validate)

        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("presetCombo")
        self.preset_combo.setToolTip("Start from a shipped config; you can edit every field after.")
        self.preset_combo.activated.connect(self._on_preset)
        load = self.load_button = QPushButton("Load YAML…")
        load.setObjectName("loadConfigButton")
        load.clicked.connect(lambda: self.load_yaml())
        save = QPushButton("Save YAML…")
        save.setObjectName("saveConfigButton")
        save.clicked.connect(lambda: self.save_yaml())
        self.params_label = QLabel("Parameters: …")
        self.params_label.setObjectName("paramCountLabel")
        self.device_label = QLabel("Device: loading…")
        self.device_label.setObjectName("deviceLabel")
        self.status_label = QLabel()
        self.status_label.setObjectName("configStatusLabel")
        self.banner = Banner()

        header = QHBoxLayout()
        header.addWidget(QLabel("Preset:"))
        header.addWidget(self.preset_combo, 1)
        header.addWidget(load)
        header.addWidget(save)
        header.addSpacing(16)
        header.addWidget(self.params_label)
        header.addSpacing(12)
        header.addWidget(self.device_label)

        form = self.form = QWidget()
        grid = QGridLayout(form)
        grid.setContentsMargins(0, 0, 0, 0)
        for col, sections in enumerate(COLUMNS):
            column = QVBoxLayout()
            for section in sections:
                column.addWidget(self._section_box(section))
            column.addStretch(1)
            grid.addLayout(column, 0, col)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(form)

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.status_label)
        layout.addWidget(self.banner)
        layout.addWidget(scroll, 1)

        self.editors["train_params.device"].input.currentIndexChanged.connect(self._show_device)
        self._fill_presets()

    # -- building -----------------------------------------------------------------------------
    def _section_box(self, section: str) -> QGroupBox:
        box = QGroupBox(SECTION_TITLES[section])
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        cls = SECTIONS[section]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            editor = editor_for(section, f, hints[f.name])
            if editor.key == "train_params.device":
                editor.input.setObjectName("deviceCombo")
            editor.changed.connect(self._validate_timer.start)
            self.editors[editor.key] = editor
            label = QLabel(f.name)
            label.setToolTip(editor.doc)
            form.addRow(label, editor.container)
        return box

    def _fill_presets(self) -> None:
        from core.presets import list_presets

        for preset in list_presets():
            self.preset_combo.addItem(preset.title, preset.name)

    def set_locked(self, locked: bool) -> None:
        """While a run trains, its config is fixed: the form is read-only until it ends."""
        self.form.setEnabled(not locked)
        for button in (self.preset_combo, self.load_button):
            button.setEnabled(not locked)

    # -- values -------------------------------------------------------------------------------
    def raw(self) -> dict[str, dict[str, Any]]:
        """The form as the nested dict ``Config.from_dict`` reads."""
        data: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        for editor in self.editors.values():
            data[editor.section][editor.name] = editor.value()
        return data

    def set_config(self, config: Config, source: Path | None = None) -> None:
        """Show ``config`` (from a preset, a file or a run) and validate it."""
        self.source = source
        for section, values in config.to_dict().items():
            for name, value in values.items():
                self.editors[f"{section}.{name}"].set_value(value)
        self.banner.clear()
        if config.warnings:
            self.banner.show_message("\n".join(config.warnings), "warning")
        self.validate()

    def set_value(self, key: str, value: Any) -> None:
        """Change one field from elsewhere (the dataset picker sets ``dataset_params.im_path``)."""
        self.editors[key].set_value(value)
        self.validate()

    def select_preset(self, name: str) -> None:
        from core.presets import load_preset

        index = self.preset_combo.findData(name)
        if index >= 0:
            self.preset_combo.setCurrentIndex(index)
        self.set_config(load_preset(name))

    def _on_preset(self, index: int) -> None:
        """A preset chosen by the user sets the model, training and diffusion; the images stay."""
        from core.presets import load_preset

        im_path = self.editors["dataset_params.im_path"].value()
        config = load_preset(self.preset_combo.itemData(index))
        self.set_config(config.replace("dataset_params", im_path=im_path) if im_path else config)

    def validate(self) -> Config | None:
        """Check the form with core; mark each problem on its field; emit ``configChanged``."""
        self._validate_timer.stop()
        try:
            config = Config.from_dict(self.raw())
            problems: list[ConfigProblem] = []
        except ConfigError as e:
            config, problems = None, e.problems
        by_field: dict[str, list[ConfigProblem]] = {}
        unplaced = []
        for problem in problems:
            (by_field.setdefault(problem.key, []) if problem.key in self.editors else unplaced).append(problem)
        for key, editor in self.editors.items():
            editor.set_problem("\n".join(_beside_field(p) for p in by_field.get(key, [])))
        self.config, self.problems = config, problems
        if problems:
            n = len(problems)
            self.status_label.setText(
                f"<span style='color:#b3261e'><b>{n} problem{'s' * (n > 1)}</b> — fix the fields marked "
                f"in red to enable Train.</span>" + "".join(f"<br>{p}" for p in unplaced)
            )
        else:
            self.status_label.setText("<span style='color:#1e7b34'>✓ Config is valid.</span>")
        if config is not None:
            self._request_count(config.model_params)
        self.configChanged.emit(config)
        return config

    # -- engine-backed info ---------------------------------------------------------------------
    def set_devices(self, devices: dict[str, str]) -> None:
        """Once torch is loaded: grey out devices this machine lacks, describe the chosen one."""
        self._devices = devices
        combo: QComboBox = self.editors["train_params.device"].input
        model = combo.model()
        for i in range(combo.count()):
            name = combo.itemData(i)
            available = name == "auto" or name in devices
            model.item(i).setEnabled(available)
            model.item(i).setText(name if available else f"{name} (not available)")
        self._show_device()
        if self.config is not None:
            self._request_count(self.config.model_params)

    def _show_device(self) -> None:
        if not self._devices:
            return  # "loading…" until the engine says what this machine has
        choice = self.editors["train_params.device"].value()
        name = next(iter(self._devices), "cpu") if choice == "auto" else choice
        text = self._devices.get(name, f"{name} — not available on this machine")
        self.device_label.setText(f"Device: <b>{text}</b>")

    def _request_count(self, params: Any) -> None:
        """Count parameters off the UI thread; only the latest request matters."""
        self._count_wanted = params
        if not self._devices or self._counter is not None or params == self._count_done:
            return
        from core.unet import parameter_count  # torch: loaded by now (devices are known)

        self._counter = Worker(lambda w: parameter_count(params), self)
        self._counter.returned.connect(lambda n: self._show_count(params, n))
        self._counter.errored.connect(self._count_failed)
        self._counter.finished.connect(self._count_finished)
        self._counter.start()

    def _show_count(self, params: Any, n: int) -> None:
        self._count_done = params
        if params == self._count_wanted:
            count = f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"
            self.params_label.setText(f"Parameters: <b>{count}</b>")
            self.params_label.setToolTip("")

    def _count_failed(self, error: BaseException) -> None:
        """Not worth a banner (training would report the real problem), but never silent."""
        self.params_label.setText("Parameters: ?")
        self.params_label.setToolTip(error_text(error, "Could not count the parameters"))

    def _count_finished(self) -> None:
        worker, self._counter = self._counter, None
        worker.deleteLater()
        if not worker.should_abort():  # aborted means the window is closing: start nothing new
            self._request_count(self._count_wanted)

    # -- files --------------------------------------------------------------------------------
    def load_yaml(self, path: str | Path | None = None) -> bool:
        """Load a config file (a dialog when no path); tutorial YAMLs load unchanged."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load config", "", "YAML (*.yaml *.yml);;All files (*)")
            if not path:
                return False
        try:
            config = load_config(path)
        except UserError as e:
            self.banner.show_message(str(e))
            return False
        self.set_config(config, Path(path))
        return True

    def save_yaml(self, path: str | Path | None = None) -> bool:
        if self.config is None:
            self.banner.show_message("Fix the fields marked in red before saving the config.")
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save config", "config.yaml", "YAML (*.yaml *.yml)")
            if not path:
                return False
        try:
            save_config(self.config, path)
        except (OSError, UserError) as e:
            self.banner.show_message(f"Could not save {path}: {e}")
            return False
        self.source = Path(path)
        self.banner.show_message(f"Saved {path}", "info")
        return True


def _beside_field(problem: ConfigProblem) -> str:
    """The problem as shown under its field, which the form already names: the message, with
    the entry (``down_channels[1]``) in front when it is about one entry of a list."""
    index = problem.field[len(problem.key):]
    return f"{problem.key.partition('.')[2]}{index} {problem.message}" if index else problem.message
