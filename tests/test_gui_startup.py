"""The window's start-up: it appears with the built-in demo already loaded and shown."""
from __future__ import annotations

from tests.gui_helpers import ENGINE_TIMEOUT_MS, STEP_TIMEOUT_MS, isolate_environment, tiny_config, write_image_folder


def test_the_window_appears_with_the_demo_loaded_and_scans_nothing_once_shown(qtbot, tmp_path, monkeypatch):
    isolate_environment(tmp_path, monkeypatch)
    from ddpm_gui.app import create_main_window

    w = create_main_window(load_demo=True)
    w.confirm_close = lambda: True
    qtbot.addWidget(w)
    assert w.dataset_panel.thumbnails_shown(), "the demo's images should be in place before the window shows"
    assert w.current_dataset() is not None
    with qtbot.waitSignal(w.engineReady, timeout=ENGINE_TIMEOUT_MS):
        w.show()
    assert not w.dataset_panel.is_scanning()
    assert w.current_dataset() is not None
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=STEP_TIMEOUT_MS)


def test_a_folder_is_left_to_the_scan_with_progress(qtbot, tmp_path, monkeypatch):
    """A folder may hold any number of files: reading it must not hold a window that cannot
    show progress or be cancelled."""
    isolate_environment(tmp_path, monkeypatch)
    from core.config import Config
    from ddpm_gui.app import create_main_window
    from ddpm_gui.engine import DatasetKey

    w = create_main_window(load_demo=True)
    w.confirm_close = lambda: True
    qtbot.addWidget(w)
    demo = w.dataset_panel.key
    folder_key = DatasetKey.of(Config.from_dict(tiny_config(write_image_folder(tmp_path / "images"))))
    w.dataset_panel.load_now(folder_key)
    assert w.dataset_panel.key == demo
