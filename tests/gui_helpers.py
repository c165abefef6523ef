"""Helpers for the GUI tests: an isolated window, image folders on disk, screenshots."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import ROOT, tiny_config_dict

SCREENSHOTS = ROOT / "docs" / "screenshots"
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
    """Save ``widget`` as docs/screenshots/<name>.png (the tests keep them current)."""
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
