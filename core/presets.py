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
    "rgb-fast-cpu": "Fast CPU RGB (32px crops, minutes)",
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


def tiny_config_dict(**train_overrides: object) -> dict:
    """The smallest model worth training: 16px grayscale, 0.13 M parameters, a step in milliseconds.

    Shared by the app's ``--self-test`` and the test suite, which need a real run that finishes
    in seconds; ``train_overrides`` replace ``train_params`` entries.
    """
    train = {
        "task_name": "tiny", "batch_size": 8, "num_epochs": 1, "num_samples": 4, "num_grid_rows": 2,
        "lr": 1e-3, "seed": 0, "device": "cpu", "ema_decay": 0.9, "checkpoint_every_steps": 5,
        "keep_checkpoints": 2, "precision": "fp32",
    }
    train.update(train_overrides)
    return {
        "dataset_params": {"im_path": "builtin:mnist"},
        "diffusion_params": {"num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02},
        "model_params": {
            "im_channels": 1, "im_size": 16, "down_channels": [16, 32, 32], "mid_channels": [32, 32],
            "down_sample": [True, False], "time_emb_dim": 32, "num_down_layers": 1,
            "num_mid_layers": 1, "num_up_layers": 1, "num_heads": 2, "down_attention": [False, True],
        },
        "train_params": train,
    }
