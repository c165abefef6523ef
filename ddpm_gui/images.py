"""Showing the engine's uint8 image arrays in Qt, crisply at any size.

Samples are tiny (16-64 px), so they are scaled with nearest-neighbour to whole multiples
where possible: smoothing would hide exactly the pixel noise the user is watching disappear.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

WHOLE_MULTIPLE_FILL = 0.85  # round the scale down to a whole number only if it still fills this much
CANVAS = QColor("#e4e6ea")  # neutral behind images, so black and white digits both stand out


def to_qimage(array: np.ndarray) -> QImage:
    """An (H, W), (H, W, 1) or (H, W, 3) uint8 array as a QImage that owns its pixels."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    height, width = array.shape[:2]
    if array.ndim == 2:
        fmt, line = QImage.Format.Format_Grayscale8, width
    elif array.shape[2] == 3:
        fmt, line = QImage.Format.Format_RGB888, width * 3
    else:
        raise ValueError(f"expected 1 or 3 channels, got shape {array.shape}")
    return QImage(array.data, width, height, line, fmt).copy()  # copy: the array may go away


class ImageView(QWidget):
    """Paints one image scaled to fit, centred, with sharp pixels; empty shows a hint."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._placeholder = placeholder
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 120)

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def placeholder(self) -> str:
        return self._placeholder

    def set_array(self, array: np.ndarray | None) -> None:
        self.set_image(None if array is None else to_qimage(array))

    def set_image(self, image: QImage | None) -> None:
        self._image = image
        self.update()

    def image(self) -> QImage | None:
        return self._image

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(320, 320)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), CANVAS)
        if self._image is None or self._image.isNull():
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder)
            return
        target = fit_rect(self._image.size(), self.size())
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, target.width() < self._image.width())
        painter.drawImage(target, self._image)


def fit_rect(image: QSize, pane: QSize) -> QRect:
    """Where an image goes in a pane: as large as fits, centred. Whole multiples when they fill
    most of the pane (every source pixel the same size); otherwise the exact fit, since a grid of
    64 small images at 1:1 in a large empty pane shows nothing (nearest-neighbour keeps it sharp)."""
    scale = min(pane.width() / image.width(), pane.height() / image.height())
    if scale >= 1 and int(scale) >= WHOLE_MULTIPLE_FILL * scale:
        scale = float(int(scale))
    w, h = int(image.width() * scale), int(image.height() * scale)
    return QRect((pane.width() - w) // 2, (pane.height() - h) // 2, w, h)


def thumbnail(array: np.ndarray, size: int) -> QPixmap:
    """A square pixmap of ``size`` px with the image scaled by nearest-neighbour."""
    image = to_qimage(array)
    return QPixmap.fromImage(
        image.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
    )
