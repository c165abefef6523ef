"""One editor widget per config field, chosen from the dataclass field's type hint.

Editors hand back raw values and leave judging them to ``core.config`` (``Config.from_dict``),
so the GUI and the CLI reject exactly the same things with exactly the same messages. Text the
editor cannot even turn into a list is passed through as text, and core names the problem.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

INT_MAX = 2_000_000_000
INVALID_STYLE = "border: 1.5px solid #d0342c; border-radius: 3px;"


class FieldEditor(QObject):
    """An input for ``section.name`` plus the inline message shown under it when invalid."""

    changed = Signal()

    def __init__(self, section: str, f: dataclasses.Field, input_widget: QWidget) -> None:
        super().__init__(input_widget)
        self.section, self.name = section, f.name
        self.doc = f.metadata.get("doc", "")
        self.input = input_widget
        self.input.setObjectName(f"{section}.{f.name}")
        self.input.setToolTip(self.doc)
        self.message = QLabel()
        self.message.setObjectName(f"{section}.{f.name}.message")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b3261e; font-size: 11px;")
        self.message.hide()
        self.container = QWidget()
        layout = QVBoxLayout(self.container)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.input)
        layout.addWidget(self.message)
        self.problem = ""

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def set_problem(self, problem: str) -> None:
        """Mark the input invalid with core's message, or clear the mark with ``""``."""
        if problem == self.problem:
            return
        self.problem = problem
        self.input.setStyleSheet(f"{type(self.input).__name__} {{ {INVALID_STYLE} }}" if problem else "")
        self.message.setText(problem)
        self.message.setVisible(bool(problem))
        self.input.setToolTip(f"{self.doc}\n\nProblem: {problem}" if problem else self.doc)

    def _quietly(self, setter: Any, *args: Any) -> None:
        """Apply a programmatic change without each widget emitting ``changed`` on its own."""
        self.input.blockSignals(True)
        try:
            setter(*args)
        finally:
            self.input.blockSignals(False)


class IntEditor(FieldEditor):
    """A spin box; for an optional int, its minimum shows "off" and means None."""

    def __init__(self, section: str, f: dataclasses.Field, optional: bool) -> None:
        spin = QSpinBox()
        low = int(f.metadata.get("min", 0))
        spin.setRange(low - 1 if optional else low, INT_MAX)
        if optional:
            spin.setSpecialValueText("off")
        spin.setAccelerated(True)
        super().__init__(section, f, spin)
        self.optional = optional
        spin.valueChanged.connect(self.changed)

    def value(self) -> int | None:
        if self.optional and self.input.value() == self.input.minimum():
            return None
        return self.input.value()

    def set_value(self, value: int | None) -> None:
        self._quietly(self.input.setValue, self.input.minimum() if value is None else int(value))


class TextEditor(FieldEditor):
    """Free text; floats use this too, so "1e-4" is accepted as typed."""

    def __init__(self, section: str, f: dataclasses.Field) -> None:
        edit = QLineEdit()
        super().__init__(section, f, edit)
        edit.textChanged.connect(self.changed)

    def value(self) -> str:
        return self.input.text().strip()

    def set_value(self, value: Any) -> None:
        self._quietly(self.input.setText, "" if value is None else _number_text(value))


class ListEditor(TextEditor):
    """A comma-separated list: "32, 64, 128" or "true, false"; empty means None if optional."""

    def __init__(self, section: str, f: dataclasses.Field, item: type, optional: bool) -> None:
        super().__init__(section, f)
        self.item, self.optional = item, optional
        example = "true, false" if item is bool else "32, 64, 128"
        self.input.setPlaceholderText(("empty = default · " if optional else "") + f"e.g. {example}")

    def value(self) -> list | str | None:
        text = self.input.text().strip().strip("[]")
        if not text:
            return None if self.optional else []
        parsed = [_parse_item(tok.strip(), self.item) for tok in text.split(",")]
        return text if any(v is None for v in parsed) else parsed  # unparsable: let core explain

    def set_value(self, value: list | None) -> None:
        text = "" if value is None else ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value)
        self._quietly(self.input.setText, text)


class BoolEditor(FieldEditor):
    def __init__(self, section: str, f: dataclasses.Field) -> None:
        box = QCheckBox()
        super().__init__(section, f, box)
        box.toggled.connect(self.changed)

    def value(self) -> bool:
        return self.input.isChecked()

    def set_value(self, value: bool) -> None:
        self._quietly(self.input.setChecked, bool(value))


class ChoiceEditor(FieldEditor):
    """A combo box over a Literal's options or a field's declared ``choices``."""

    def __init__(self, section: str, f: dataclasses.Field, choices: tuple) -> None:
        combo = QComboBox()
        for choice in choices:
            combo.addItem(str(choice), choice)
        super().__init__(section, f, combo)
        combo.currentIndexChanged.connect(self.changed)

    def value(self) -> Any:
        return self.input.currentData()

    def set_value(self, value: Any) -> None:
        index = self.input.findData(value)
        if index < 0:  # a value core will reject; show it so the message has something to point at
            self.input.addItem(str(value), value)
            index = self.input.count() - 1
        self._quietly(self.input.setCurrentIndex, index)


def editor_for(section: str, f: dataclasses.Field, hint: Any) -> FieldEditor:
    """The editor that fits a field's type hint (see the module docstring for the mapping)."""
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    if optional:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if "choices" in f.metadata:
        return ChoiceEditor(section, f, tuple(f.metadata["choices"]))
    if typing.get_origin(hint) is Literal:
        return ChoiceEditor(section, f, typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return ListEditor(section, f, typing.get_args(hint)[0], optional)
    if hint is bool:
        return BoolEditor(section, f)
    if hint is int:
        return IntEditor(section, f, optional)
    return TextEditor(section, f)  # str and float


def _parse_item(token: str, item: type) -> Any:
    """One list element, or None if it is not one (core then reports the whole field)."""
    if item is bool:
        return {"true": True, "false": False, "yes": True, "no": False}.get(token.lower())
    try:
        return int(token)
    except ValueError:
        return None


def _number_text(value: Any) -> str:
    """Floats as people write them in the YAML: 0.0001 -> "0.0001", 1e-05 -> "1e-05"."""
    return repr(value) if isinstance(value, float) else str(value)
