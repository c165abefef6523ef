"""Showing the engine's uint8 image arrays in Qt, crisply at any size.

Samples are tiny (16-64 px), so they are scaled with nearest-neighbour to whole multiples
where possible: smoothing would hide exactly the pixel noise the user is watching disappear.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

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
        size = self._image.size()
        scale = min(self.width() / size.width(), self.height() / size.height())
        if scale >= 1:
            scale = float(int(scale))  # whole multiples keep every source pixel the same size
        w, h = int(size.width() * scale), int(size.height() * scale)
        x, y = (self.width() - w) // 2, (self.height() - h) // 2
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 1)
        painter.drawImage(QRect(x, y, w, h), self._image)


def thumbnail(array: np.ndarray, size: int) -> QPixmap:
    """A square pixmap of ``size`` px with the image scaled by nearest-neighbour."""
    image = to_qimage(array)
    return QPixmap.fromImage(
        image.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
    )
