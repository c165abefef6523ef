"""Shared test fixtures: the reference fixtures folder and small configs that train in seconds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDPM_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures: required in CI, skipped for a bare clone elsewhere."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"reference fixtures missing at {path}")
        pytest.skip(f"reference fixtures not found at {path} (set DDPM_SHARED)")
    return path


def tiny_config_dict(**train_overrides) -> dict:
    """A 16px grayscale model small enough to train a few steps in well under a second."""
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


@pytest.fixture
def tiny_config():
    from core.config import Config

    return Config.from_dict(tiny_config_dict())
