"""Where runs live and what the app remembers between launches.

Runs go to the user's data folder (``platformdirs``), never next to the program, so a
read-only install or a frozen bundle works. ``DDPM_STUDIO_HOME`` overrides that folder for
tests and portable setups. Remembered state is a small typed record with a schema version,
stored through QSettings so each platform keeps it where it expects.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

APP_NAME = "DDPM Studio"
HOME_ENV = "DDPM_STUDIO_HOME"
MAX_RECENT = 8
SCHEMA_VERSION = 1


def data_dir() -> Path:
    """The app's data folder: ``$DDPM_STUDIO_HOME`` or the platform's user data dir."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, APP_NAME))


def runs_dir() -> Path:
    return data_dir() / "runs"


def new_run_dir(task_name: str) -> Path:
    """A fresh ``runs/<task_name>-<timestamp>`` folder name (not created), unique per second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir() / f"{task_name}-{stamp}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


@dataclass
class Settings:
    """Everything remembered between launches except window geometry (kept as Qt's blob)."""

    recent_folders: list[str] = field(default_factory=list)
    last_run: str = ""

    def add_recent(self, folder: str) -> None:
        """Most recent first, no duplicates, at most ``MAX_RECENT``."""
        self.recent_folders = [folder] + [f for f in self.recent_folders if f != folder]
        del self.recent_folders[MAX_RECENT:]

    @classmethod
    def load(cls, store: QSettings | None = None) -> Settings:
        """Read the saved settings; an unknown schema version starts fresh instead of guessing."""
        store = store or QSettings()
        if store.value("schema_version", 0, int) != SCHEMA_VERSION:
            return cls()
        recent = store.value("recent_folders", [], list) or []
        return cls(
            recent_folders=[str(r) for r in recent][:MAX_RECENT],
            last_run=str(store.value("last_run", "", str)),
        )

    def save(self, store: QSettings | None = None) -> None:
        store = store or QSettings()
        store.setValue("schema_version", SCHEMA_VERSION)
        store.setValue("recent_folders", list(self.recent_folders))
        store.setValue("last_run", self.last_run)


def load_geometry(store: QSettings | None = None) -> QByteArray | None:
    value = (store or QSettings()).value("window/geometry")
    return value if isinstance(value, QByteArray) and not value.isEmpty() else None


def save_geometry(geometry: QByteArray, store: QSettings | None = None) -> None:
    (store or QSettings()).setValue("window/geometry", geometry)
