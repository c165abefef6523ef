"""Play / pause / scrub controls for a denoising animation; knows frames and their t, not images."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QStyle,
    QWidget,
)

SPEEDS = {"0.25×": 0.25, "0.5×": 0.5, "1×": 1.0, "2×": 2.0, "4×": 4.0}
BASE_FPS = 20
MAX_SHOWN_FPS = 40  # faster speeds skip frames: 4× at 80 drawn frames a second kept the UI
# thread busy half the time, for frames a 60 Hz screen could not all show


class FramePlayer(QWidget):
    """Emits ``frameChanged(index)`` when the slider moves, by hand or while playing."""

    frameChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ts: list[int] = []
        self.play_button = QPushButton("Play")
        self.play_button.setIcon(QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.play_button.setObjectName("playButton")
        self.play_button.setCheckable(True)
        self.play_button.toggled.connect(self._set_playing)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("frameSlider")
        self.slider.valueChanged.connect(self._on_slider)
        self.t_label = QLabel("t = –")
        self.t_label.setMinimumWidth(110)
        self.speed = QComboBox()
        self.speed.setObjectName("speedCombo")
        self.speed.addItems(list(SPEEDS))
        self.speed.setCurrentText("1×")
        self.speed.setToolTip("Playback speed")
        self.speed.currentTextChanged.connect(self._apply_speed)
        self.loop = QCheckBox("Loop")
        self.loop.setObjectName("loopCheck")
        self.loop.setChecked(True)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._advance)
        self._stride = 1  # frames advanced a tick
        self._apply_speed()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.play_button)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.t_label)
        layout.addWidget(self.speed)
        layout.addWidget(self.loop)
        self.set_frames([])

    def set_frames(self, ts: list[int], index: int | None = None) -> None:
        """Frames are now ``ts`` (one t per frame); shows ``index`` (default: the last)."""
        self._ts = list(ts)
        enabled = bool(self._ts)
        for w in (self.play_button, self.slider, self.speed, self.loop):
            w.setEnabled(enabled)
        if not enabled:
            self.play_button.setChecked(False)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(self._ts) - 1))
        self.slider.blockSignals(False)
        self.show_frame(len(self._ts) - 1 if index is None else index)

    def show_frame(self, index: int) -> None:
        if not self._ts:
            self.t_label.setText("t = –")
            return
        if self.slider.value() != index:
            self.slider.setValue(index)  # emits via _on_slider
        else:
            self._on_slider(index)

    def _on_slider(self, index: int) -> None:
        if 0 <= index < len(self._ts):
            self.t_label.setText(f"t = {self._ts[index]}  ({index + 1}/{len(self._ts)})")
            self.frameChanged.emit(index)

    def _set_playing(self, playing: bool) -> None:
        self.play_button.setText("Pause" if playing else "Play")
        self.play_button.setIcon(QApplication.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay))
        if playing:
            if self.slider.value() >= self.slider.maximum():
                self.show_frame(0)  # play from the start once the end is reached
            self._timer.start()
        else:
            self._timer.stop()

    def _apply_speed(self) -> None:
        fps = BASE_FPS * SPEEDS[self.speed.currentText()]
        self._stride = max(1, round(fps / MAX_SHOWN_FPS))
        self._timer.setInterval(round(1000 * self._stride / fps))

    def _advance(self) -> None:
        current, last = self.slider.value(), self.slider.maximum()
        nxt = min(current + self._stride, last)  # a skipping speed still shows the final frame
        if current >= last:
            if not self.loop.isChecked():
                self.play_button.setChecked(False)
                return
            nxt = 0
        self.show_frame(nxt)
