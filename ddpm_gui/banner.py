"""An in-window message strip: errors and warnings stay visible where the user is looking.

A modal box blocks and is easy to dismiss unread; a console line is invisible in a windowed
app. The banner keeps the engine's message (which already names the file or field and the fix)
on screen until the user closes it or the next action replaces it.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QStyle, QToolButton, QWidget

from core.errors import UserError

_STYLES = {
    "error": "background:#fde8e8; border:1px solid #e0a0a0; color:#611a15;",
    "warning": "background:#fff6db; border:1px solid #e6cf86; color:#5c4400;",
    "info": "background:#e6f1fd; border:1px solid #9cc2ec; color:#0b3b6b;",
}
_TITLES = {"error": "Error", "warning": "Warning", "info": ""}


class Banner(QFrame):
    """One message at a time; ``kind`` is error, warning or info."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBanner")
        self.kind = ""
        self.message = ""
        self._label = QLabel()
        self._label.setWordWrap(True)
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setIcon(close.style().standardIcon(QStyle.StandardPixmap.SP_TitleBarCloseButton))
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self._label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str, kind: str = "error") -> None:
        self.kind, self.message = kind, text
        title = _TITLES[kind]
        self._label.setText(f"<b>{title}:</b> {_escape(text)}" if title else _escape(text))
        self.setStyleSheet(f"#messageBanner {{ {_STYLES[kind]} border-radius:4px; }} QLabel {{ border:none; }}")
        self.show()

    def clear(self) -> None:
        self.kind, self.message = "", ""
        self._label.clear()
        self.hide()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")


def error_text(error: BaseException, context: str) -> str:
    """What to show for ``error``: a UserError's own message (it names the file or field and the
    fix); anything else is a bug, shown with its type so it can be reported."""
    if isinstance(error, UserError):
        return str(error)
    return f"{context}: {type(error).__name__}: {error}. This looks like a bug in DDPM Studio; please report it."
