"""Where the files shipped with the program (demo datasets, presets, icons) live.

One function so the engine, the presets and the window agree, whether the program runs from a
checkout, from an installed package or frozen by PyInstaller (which unpacks data files under
``sys._MEIPASS``; the spec must bundle the ``resources`` folder under that same name).
"""
from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    """The ``resources`` folder: inside the PyInstaller bundle when frozen, else beside ``core``:
    ``resources`` in a checkout, ``ddpm_studio_resources`` where a wheel installed it."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    beside = Path(__file__).resolve().parents[1]
    checkout = beside / "resources"
    return checkout if checkout.is_dir() else beside / "ddpm_studio_resources"
