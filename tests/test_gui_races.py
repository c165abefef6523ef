"""Races between the window and its worker threads, each reproduced deterministically.

Signals from a worker thread are queued: a slot can run after the state it was meant for is
gone. These tests deliver such late signals on purpose.
"""
from __future__ import annotations

import sys
import threading

from PySide6.QtCore import SIGNAL
from PySide6.QtWidgets import QComboBox

import ddpm_gui.dataset_panel as dataset_panel_module
from ddpm_gui.dataset_panel import DatasetPanel
from ddpm_gui.engine import DatasetKey, ScanProgress
from tests.gui_helpers import window  # noqa: F401 - a fixture


def test_a_replaced_scan_cannot_touch_the_next_one(qtbot, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(dataset_panel_module, "scan_dataset", lambda worker, key: release.wait(30))
    panel = DatasetPanel()
    qtbot.addWidget(panel)
    panel.scan(DatasetKey("first", 1, 16))
    first = panel._worker
    panel.scan(DatasetKey("second", 1, 16))
    second = panel._worker
    try:
        panel.progress.setRange(0, 0)
        # the first scan's last signals, arriving late
        first.yielded.emit(ScanProgress(5, 10))
        first.errored.emit(RuntimeError("the first folder vanished"))
        first.returned.emit(object())
        assert panel.is_scanning() and panel._worker is second
        assert panel.progress.maximum() == 0  # still the second scan's busy indicator
        assert panel.banner.isHidden() and panel.result is None
    finally:
        ended = []
        for worker in (first, second):
            worker.finished.connect(lambda: ended.append(1))
        panel.cancel()  # the second scan's stand-in result is not a ScanResult: drop it
        release.set()
        qtbot.waitUntil(lambda: len(ended) == 2, timeout=30_000)


def test_devices_connect_the_device_label_once(qtbot):
    from ddpm_gui.config_editor import ConfigEditor

    editor = ConfigEditor()
    qtbot.addWidget(editor)
    combo: QComboBox = editor.editors["train_params.device"].input
    before = combo.receivers(SIGNAL("currentIndexChanged(int)"))
    for _ in range(3):  # the engine reloads, e.g. after a device appears
        editor.set_devices({"cpu": "cpu (2 threads)"})
    assert combo.receivers(SIGNAL("currentIndexChanged(int)")) == before
    combo.setCurrentIndex(combo.findData("cpu"))
    assert "cpu (2 threads)" in editor.device_label.text()


def test_closing_does_not_wait_forever_for_a_stuck_worker(window, qtbot, monkeypatch):
    import ddpm_gui.main_window as main_window
    from ddpm_gui.workers import Worker

    monkeypatch.setattr(main_window, "CLOSE_WAIT_S", 0.2)
    release = threading.Event()
    stuck = Worker(lambda w: release.wait(60), window)  # ignores abort, as a hung read would
    stuck.start()
    try:
        assert window.close()
        assert stuck.parent() is None and not stuck.isFinished()
    finally:
        release.set()
        qtbot.waitUntil(stuck.isFinished, timeout=30_000)


def test_garbage_is_collected_on_the_ui_thread_only(qtbot):
    """Automatic collection is off (it could run on a worker thread); a UI-thread timer collects."""
    import gc

    from PySide6.QtCore import QThread

    from ddpm_gui.app import get_qapp

    app = get_qapp(route_exceptions=False)
    collector = app._ui_thread_gc
    assert not gc.isenabled()
    assert collector.timer.isActive() and collector.timer.thread() is QThread.currentThread()


def test_modules_imported_after_start_up_are_frozen_out_of_collections(qtbot):
    """A worker's first torchvision import adds ~150,000 objects that live as long as the process;
    the next check freezes them, so full collections on the UI thread stay short."""
    import gc
    import types

    from ddpm_gui.app import get_qapp

    collector = get_qapp(route_exceptions=False)._ui_thread_gc
    collector.check()
    frozen = gc.get_freeze_count()
    sys.modules["ddpm_late_import"] = module = types.ModuleType("ddpm_late_import")
    try:
        module.tables = [[i] for i in range(1000)]  # what a newly imported module holds
        collector.check()
        after = gc.get_freeze_count()
        assert after >= frozen + 1000
        junk = [[i] for i in range(1000)]  # noqa: F841 - young objects, no new module
        collector.check()  # nothing new imported: nothing more frozen
        # (frozen objects that other threads let go of leave the count: CI once saw it fall by 2)
        assert gc.get_freeze_count() <= after
    finally:
        del sys.modules["ddpm_late_import"]
