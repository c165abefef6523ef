"""Choosing the training images and seeing them as the model will: count, sizes, classes,
thumbnails after resize/crop, and every skipped file with its reason.

The panel only reports what the user picked (``pathChosen``); the window turns that into the
config's ``im_path`` and asks the panel to :meth:`scan` whatever the config then names, so the
form and the picker can never disagree about which images will be trained.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.choices import BUILTIN_DATASETS, BUILTIN_PREFIX

from .banner import Banner, error_text
from .engine import DatasetKey, ScanProgress, ScanResult, read_dataset, scan_dataset
from .images import thumbnail
from .turns import next_turn
from .workers import Worker, start_worker

THUMB_PX = 64
THUMBNAILS_PER_TURN = 32  # about 3.5 ms of the UI thread a batch
MAX_NAME_COLUMN_PX = 200  # the reason, not the path, is what the user needs to read


class DatasetPanel(QWidget):
    """Picker (path, browse, recent, demos), scan progress, summary, thumbnails, skipped files."""

    pathChosen = Signal(str)  # a folder, file or builtin:<name> the user picked
    scanned = Signal(object)  # ScanResult
    scanFailed = Signal(str)
    channelsChosen = Signal(int)  # noqa: N815 - Qt naming; the user took the offered im_channels
    imageClicked = Signal(int)  # noqa: N815 - Qt naming; the dataset index of a clicked thumbnail

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: ScanResult | None = None
        self.key: DatasetKey | None = None  # what the latest scan (running or done) is for
        self._worker: Worker | None = None
        self._recent: list[str] = []

        self.path_edit = QLineEdit()
        self.path_edit.setObjectName("datasetPathEdit")
        self.path_edit.setPlaceholderText("A folder of images (subfolders become classes), or builtin:mnist")
        self.path_edit.setToolTip("Type or paste a path and press Enter, browse, or drop a folder on the window.")
        self.path_edit.returnPressed.connect(lambda: self._choose(self.path_edit.text().strip()))
        browse = self.browse_button = QPushButton("Browse…")
        browse.setObjectName("datasetBrowseButton")
        browse.clicked.connect(lambda: self.browse())
        self.recent_button = QToolButton()
        self.recent_button.setObjectName("recentFoldersButton")
        self.recent_button.setText("Recent")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_button.setMenu(QMenu(self.recent_button))
        self.recent_button.setEnabled(False)

        self.demo_row = QHBoxLayout()
        self.demo_row.addWidget(QLabel("Built-in demos:"))
        self.demo_buttons = QButtonGroup(self)
        self.demo_buttons.setExclusive(False)  # checked from im_path, which may name no demo
        for name, title in BUILTIN_DATASETS.items():
            button = QPushButton(title)
            button.setObjectName(f"demo-{name}")
            button.setCheckable(True)
            button.clicked.connect(lambda _=False, n=name: self._choose(BUILTIN_PREFIX + n))
            self.demo_buttons.addButton(button)
            self.demo_row.addWidget(button)
        self.demo_row.addStretch(1)

        self.progress = QProgressBar()
        self.progress.setObjectName("scanProgressBar")
        self.progress.setFormat("Scanning… %v / %m")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("scanCancelButton")
        self.cancel_button.clicked.connect(self.cancel)
        progress_row = QWidget()
        row = QHBoxLayout(progress_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        self.progress_row = progress_row
        progress_row.hide()

        self.banner = Banner()
        self.advice = QLabel()
        self.advice.setObjectName("datasetAdviceLabel")
        self.advice.setWordWrap(True)
        self.advice.setStyleSheet("color:#9a6700")
        self.switch_channels_button = QPushButton()
        self.switch_channels_button.setObjectName("switchChannelsButton")
        self.switch_channels_button.clicked.connect(
            lambda: self.channelsChosen.emit(int(self.switch_channels_button.property("channels"))))
        advice_row = self.advice_row = QWidget()
        ar = QHBoxLayout(advice_row)
        ar.setContentsMargins(0, 0, 0, 0)
        ar.addWidget(self.advice, 1)
        ar.addWidget(self.switch_channels_button)
        advice_row.hide()
        self.summary = QFormLayout()
        self.summary_labels = {}
        for name in ("Source", "Images", "Sizes", "Modes", "Classes"):
            label = QLabel("–")
            label.setObjectName(f"dataset{name}Label")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.summary_labels[name] = label
            self.summary.addRow(f"{name}:", label)

        self.thumbs = QListWidget()
        self.thumbs.setObjectName("datasetThumbnails")
        self.thumbs.setViewMode(QListView.ViewMode.IconMode)
        self.thumbs.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.thumbs.setGridSize(QSize(THUMB_PX + 18, THUMB_PX + 26))
        self.thumbs.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbs.setMovement(QListView.Movement.Static)
        self.thumbs.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.thumbs.itemClicked.connect(lambda item: self.imageClicked.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.skipped = QTableWidget(0, 2)
        self.skipped.setObjectName("skippedTable")
        self.skipped.setHorizontalHeaderLabels(["File", "Why it was skipped"])
        self.skipped.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.skipped.horizontalHeader().setStretchLastSection(True)
        self.skipped.verticalHeader().hide()
        self.skipped.setWordWrap(True)
        self.skipped.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.skipped_title = QLabel("<b>Skipped files</b>")

        thumbs_box = QWidget()
        tl = QVBoxLayout(thumbs_box)
        tl.setContentsMargins(0, 0, 0, 0)
        self.thumbs_title = QLabel("<b>As the model will see them</b> (after resize and centre crop)")
        self.thumbs_title.setToolTip("Each image is resized so its shorter side is model_params.im_size, then "
                                     "centre-cropped square: the longer side loses its edges.")
        tl.addWidget(self.thumbs_title)
        tl.addWidget(self.thumbs)
        skipped_box = self.skipped_box = QWidget()
        skipped_box.hide()
        sl = QVBoxLayout(skipped_box)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.skipped_title)
        sl.addWidget(self.skipped)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(thumbs_box)
        split.addWidget(skipped_box)
        split.setSizes([700, 400])

        picker = QHBoxLayout()
        picker.addWidget(QLabel("Images:"))
        picker.addWidget(self.path_edit, 1)
        picker.addWidget(browse)
        picker.addWidget(self.recent_button)
        layout = QVBoxLayout(self)
        layout.addLayout(picker)
        layout.addLayout(self.demo_row)
        layout.addWidget(self.banner)
        layout.addWidget(progress_row)
        layout.addLayout(self.summary)
        layout.addWidget(advice_row)
        layout.addWidget(split, 1)

    # -- choosing -----------------------------------------------------------------------------
    def browse(self) -> None:
        start = self.path_edit.text() if Path(self.path_edit.text()).is_dir() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of training images", start)
        if folder:
            self._choose(folder)

    def choose(self, path: str) -> None:
        """Pick ``path`` as if the user had typed it (drag-and-drop and the menu use this)."""
        self._choose(path)

    def _choose(self, path: str) -> None:
        if path:
            self.pathChosen.emit(path)

    def set_locked(self, locked: bool) -> None:
        """While a run trains on the current images, picking others waits until it ends."""
        for w in (self.path_edit, self.browse_button, *self.demo_buttons.buttons()):
            w.setEnabled(not locked)
        self.recent_button.setEnabled(not locked and bool(self._recent))

    def set_recent(self, folders: list[str]) -> None:
        self._recent = list(folders)
        menu = self.recent_button.menu()
        menu.clear()
        for folder in folders:
            menu.addAction(folder, lambda f=folder: self._choose(f))
        self.recent_button.setEnabled(bool(folders))

    def show_path(self, im_path: str) -> None:
        """Reflect the config's ``im_path`` in the picker."""
        if self.path_edit.text() != im_path:
            self.path_edit.setText(im_path)
        self._check_demo()

    def _check_demo(self) -> None:
        current = self.path_edit.text()
        for button in self.demo_buttons.buttons():
            button.setChecked(BUILTIN_PREFIX + button.objectName().removeprefix("demo-") == current)

    # -- scanning -----------------------------------------------------------------------------
    def scan(self, key: DatasetKey) -> None:
        """Load ``key``'s images off the UI thread; a newer scan replaces a running one."""
        self.cancel()
        self.key = key
        self.result = None
        self.banner.clear()
        self.progress.setRange(0, 0)
        self.progress_row.show()
        self._worker = start_worker(
            lambda w: scan_dataset(w, key), self, yielded=self._on_progress,
            returned=self._on_scanned, errored=self._on_failed,
        )
        self._worker.finished.connect(self._worker.deleteLater)

    def load_now(self, key: DatasetKey) -> None:
        """Load a built-in demo's images on the UI thread and show them whole, for a window that
        is not on screen yet: it then appears complete, instead of filling in after it appeared,
        in pieces that each held the UI thread (its longest stalls at start-up). A
        folder's scan may take minutes, so only the demos load this way; a failure is left for
        the scan the shown window starts, which reports it."""
        if not key.im_path.lower().startswith(BUILTIN_PREFIX):
            return
        try:
            result = read_dataset(key)
        except Exception:  # noqa: BLE001 - reported by the window's own scan, with its banner
            return
        self.cancel()
        self.key, self.result = key, result
        self._show(result, thumbnails_in_turns=False)
        self.scanned.emit(result)

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.abort()
            self._worker = None
            self.progress_row.hide()

    def is_scanning(self) -> bool:
        return self._worker is not None

    def _from_replaced_scan(self) -> bool:
        """Signals are queued: a replaced scan's last ones can arrive after the next scan has
        started, and must not touch its progress, result or banner."""
        return self.sender() is not self._worker

    def _on_progress(self, p: ScanProgress) -> None:
        if self._from_replaced_scan():
            return
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done)

    def _on_scanned(self, result: ScanResult) -> None:
        if self._from_replaced_scan():
            return
        self._not_scanning()
        self.result = result
        self._show(result)
        self.scanned.emit(result)

    def _on_failed(self, error: BaseException) -> None:
        if self._from_replaced_scan():
            return
        self._not_scanning()
        message = error_text(error, "Could not read the dataset")
        self._clear_views()
        self.banner.show_message(message)
        self.scanFailed.emit(message)

    def _not_scanning(self) -> None:
        """Called before announcing a result, so listeners already see the panel idle."""
        self._worker = None
        self.progress_row.hide()

    # -- showing ------------------------------------------------------------------------------
    def _clear_views(self) -> None:
        self.advice_row.hide()
        for label in self.summary_labels.values():
            label.setText("–")
        self.thumbs.clear()
        self.skipped.setRowCount(0)
        self.skipped_box.hide()

    def _show(self, result: ScanResult, *, thumbnails_in_turns: bool = True) -> None:
        r = result.report
        labels = self.summary_labels
        labels["Source"].setText(str(r.source))
        labels["Images"].setText(f"<b>{r.num_images:,}</b> → {result.key.size}×{result.key.size}, "
                                 f"{'RGB' if result.key.channels == 3 else 'grayscale'}")
        labels["Sizes"].setText(_counts(r.sizes, lambda s: f"{s[0]}×{s[1]}" if isinstance(s, tuple) else str(s)))
        labels["Modes"].setText(_counts(r.modes, str))
        classes = r.named_classes
        labels["Classes"].setText(
            f"{len(classes)}: {', '.join(classes[:12])}{' …' if len(classes) > 12 else ''}" if classes
            else "none (one folder, no class subfolders)"
        )
        self.thumbs.clear()
        if thumbnails_in_turns:
            next_turn(self, lambda: self._show_thumbnails(result))
        else:
            self._show_thumbnails(result, per_turn=len(result.thumbnails))
        self.skipped.setRowCount(len(r.skipped))
        for i, s in enumerate(r.skipped):
            name = QTableWidgetItem(_relative(s.path, r.source))
            name.setToolTip(str(s.path))
            reason = QTableWidgetItem(s.reason)
            reason.setToolTip(s.reason)
            self.skipped.setItem(i, 0, name)
            self.skipped.setItem(i, 1, reason)
        self.skipped.setColumnWidth(0, min(self.skipped.sizeHintForColumn(0) + 12, MAX_NAME_COLUMN_PX))
        self.skipped.resizeRowsToContents()
        self.skipped_title.setText(f"<b>Skipped files ({len(r.skipped)})</b>")
        self.skipped_box.setVisible(bool(r.skipped))
        self._show_advice(result)
        labels["Images"].setText(labels["Images"].text() + (
            f" · <span style='color:#9a6700'>{len(r.skipped):,} skipped (see the list)</span>" if r.skipped
            else " · every file was usable"))

    def _show_thumbnails(self, result: ScanResult, start: int = 0, per_turn: int = THUMBNAILS_PER_TURN) -> None:
        """The sample images, a turn of the event loop after the summary and in batches a turn
        apart: the 96 of the demo at once held the UI thread for 11 ms, as long as the summary."""
        if result is not self.result:  # a newer scan has been shown since
            return
        batch = slice(start, start + per_turn)
        for image, label, index in zip(result.thumbnails[batch], result.thumbnail_labels[batch],
                                       result.thumbnail_indices[batch], strict=True):
            item = QListWidgetItem(QIcon(thumbnail(image, THUMB_PX)), label)
            item.setToolTip(f"{label + ' · ' if label else ''}image {index:,}: click to explore its noising")
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.thumbs.addItem(item)
        if batch.stop < len(result.thumbnails):
            next_turn(self, lambda: self._show_thumbnails(result, batch.stop))

    def thumbnails_shown(self) -> bool:
        """Whether every sample image of the scan shown is in the list (they arrive in batches)."""
        return self.result is not None and self.thumbs.count() == len(self.result.thumbnails)

    def _show_advice(self, result: ScanResult) -> None:
        """Images smaller than the model's size, and a colour setting unlike the files (with the
        switch offered): said before training, not discovered after."""
        from core.data import dataset_advice, fit_description, stored_channels

        key = result.key
        advice = dataset_advice(result.report, key.channels, key.size)
        self.advice.setText("<br>".join(f"⚠ {a}" for a in advice))
        self.thumbs_title.setToolTip(fit_description(key.channels, key.size).capitalize() + ".")
        stored = stored_channels(result.report)
        self.switch_channels_button.setProperty("channels", stored)
        self.switch_channels_button.setText("Train in colour (3 channels)" if stored == 3
                                            else "Train in grayscale (1 channel)")
        self.switch_channels_button.setVisible(bool(result.report.modes) and stored != key.channels)
        self.advice_row.setVisible(bool(advice))


def _relative(path: str, source: str) -> str:
    """A skipped file's path inside the dataset folder (the full path is in the tooltip)."""
    try:
        return str(Path(path).relative_to(source))
    except ValueError:
        return str(path)


def _counts(counter, fmt) -> str:
    """'28×28 (5,000), 32×32 (12)': the most common first, at most five."""
    items = counter.most_common(5)
    more = len(counter) - len(items)
    text = ", ".join(f"{fmt(k)} ({v:,})" for k, v in items)
    return text + (f", and {more} more" if more > 0 else "") if text else "–"
