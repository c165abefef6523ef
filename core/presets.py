"""Named starting configs shipped in ``resources/presets`` (the app opens with ``fast-cpu``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config, load_config
from .errors import UserError
from .resources import resources_dir

DEFAULT_PRESET = "fast-cpu"

_TITLES = {
    "fast-cpu": "Fast CPU (MNIST 28px, minutes)",
    "tutorial-mnist": "Tutorial (MNIST 28px)",
    "rgb-textures": "RGB textures (64px)",
}


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    path: Path

    def load(self) -> Config:
        return load_config(self.path)


def list_presets() -> list[Preset]:
    """Shipped presets, the default first, then in title order."""
    found = [Preset(p.stem, _TITLES.get(p.stem, p.stem), p) for p in (resources_dir() / "presets").glob("*.yaml")]
    return sorted(found, key=lambda p: (p.name != DEFAULT_PRESET, p.title))


def load_preset(name: str) -> Config:
    for preset in list_presets():
        if preset.name == name:
            return preset.load()
    names = ", ".join(p.name for p in list_presets())
    raise UserError(f"unknown preset '{name}'; choose one of: {names}")
