"""Helpers for the GUI tests: an isolated window, image folders on disk, screenshots.

``window`` is a fixture: test modules import it by name (``from tests.gui_helpers import window``).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, tiny_config_dict

#: Test screenshots, for looking at after a run; git-ignored, so the README's own
#: screenshots in docs/screenshots/ (made by docs/screenshots/make_readme_screenshots.py) stay.
SCREENSHOTS = ROOT / "docs" / "screenshots" / "test"
ENGINE_TIMEOUT_MS = 90_000  # the first window of a process imports torch (seconds on 2 cores)
STEP_TIMEOUT_MS = 60_000


def write_image_folder(folder: Path, per_class: int = 20, size: int = 20) -> Path:
    """Two class subfolders of small grayscale PNGs: bright squares and bright discs on black."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for name in ("squares", "discs"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            c = size / 2 + rng.uniform(-2, 2, 2)
            r = rng.uniform(3, 6)
            if name == "squares":
                mask = (abs(yy - c[0]) < r) & (abs(xx - c[1]) < r)
            else:
                mask = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r * r
            pixels = np.where(mask, 230, 20).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{name}-{i:02d}.png")
    return folder


def tiny_config(folder: Path | str, **train_overrides) -> dict:
    """The shared tiny 16px config, reading ``folder``, training long unless stopped."""
    overrides = {"max_steps": 5000, "checkpoint_every_steps": 1000, "sample_every_steps": 5}
    overrides.update(train_overrides)
    data = tiny_config_dict(**overrides)
    data["dataset_params"]["im_path"] = str(folder)
    return data


def screenshot(widget, name: str) -> Path:
    """Save ``widget`` as docs/screenshots/test/<name>.png, to look at after a test run."""
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()  # apply pending layout changes before grabbing
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not write {path}"
    return path


def isolate_environment(tmp_path: Path, monkeypatch) -> None:
    """Runs and QSettings go to ``tmp_path``, never to the user's real folders."""
    from PySide6.QtCore import QSettings

    monkeypatch.setenv("DDPM_STUDIO_HOME", str(tmp_path / "home"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch) -> Iterator:
    """The main window, shown, engine loaded, default dataset scanned; closed and drained after.

    Closing is awaited, not just asked for: a window that is deleted while a run still trains
    would destroy a running QThread, which aborts the whole test process.
    """
    isolate_environment(tmp_path, monkeypatch)
    from ddpm_gui.app import create_main_window

    w = create_main_window()
    w.confirm_close = lambda: True
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.engineReady, timeout=ENGINE_TIMEOUT_MS):
        w.show()
    qtbot.waitUntil(w.dataset_panel.thumbnails_shown, timeout=STEP_TIMEOUT_MS)
    yield w
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=STEP_TIMEOUT_MS)


def find(w, name: str, kind: type | None = None):
    """The one child widget called ``name`` (the automation names tests and tools rely on)."""
    from PySide6.QtWidgets import QWidget

    found = w.findChild(kind or QWidget, name)
    assert found is not None, f"no {(kind or QWidget).__name__} named {name}"
    return found


def use_tiny_config(qtbot, w, folder: Path, **train):
    """Show the tiny config for ``folder`` in the form and wait until its images are scanned."""
    from core.config import Config

    config = Config.from_dict(tiny_config(folder, **train))
    w.config_editor.set_config(config)
    qtbot.waitUntil(lambda: w.current_dataset() is not None, timeout=STEP_TIMEOUT_MS)
    return config
