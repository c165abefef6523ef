"""The `ddpm` command line: train, resume, sample and export; user errors exit 2 with one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import yaml
from PIL import Image

from core.cli import main
from core.runs import RunDir

from .conftest import ROOT, tiny_config_dict


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(checkpoint_every_steps=4)))
    return path


def test_train_resume_then_sample_grid_and_animation(tmp_path, config_file, capsys):
    run = tmp_path / "run"
    assert main(["train", str(config_file), "--run-dir", str(run), "--max-steps", "4"]) == 0
    assert main(["train", str(config_file), "--run-dir", str(run), "--max-steps", "6", "--resume"]) == 0
    assert [s for s, _ in RunDir(run).list_checkpoints()] == [4, 6]
    err = capsys.readouterr().err
    assert "5,000 images" in err and "completed at step 6" in err
    grid, gif = tmp_path / "g.png", tmp_path / "a.gif"
    assert main(["sample", str(run), "--sampler", "ddim", "--steps", "5", "--num", "4",
                 "--grid", str(grid), "--animation", str(gif)]) == 0
    assert Image.open(grid).size == (2 * 18 + 2, 2 * 18 + 2)  # 16px images, padding 2, nrow 2
    assert iio.improps(gif, index=None).shape[0] == 5


def test_data_override_and_tutorial_pth(tmp_path, config_file, fixtures_dir):
    import torch
    from safetensors.torch import load_file

    pth = tmp_path / "ddpm_ckpt.pth"
    torch.save(load_file(fixtures_dir / "unet_tiny_gray16.safetensors"), pth)
    out = tmp_path / "t.png"
    assert main(["sample", str(pth), "--config", str(fixtures_dir / "unet_tiny_gray16.yaml"),
                 "--sampler", "dpm++", "--steps", "3", "--num", "4", "--grid", str(out)]) == 0
    assert Image.open(out).size == (2 * 18 + 2, 2 * 18 + 2)


LEGACY_RUN = Path(__file__).parent / "fixtures" / "legacy-run"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "missing.yaml"], "config file not found"),
        (["sample", "nowhere/run"], "does not exist"),
        (["train", "preset:nope"], "unknown preset 'nope'"),
        (["sample", str(LEGACY_RUN), "--sampler", "ddpm", "--eta", "0.5"], "eta applies to the ddim sampler only"),
        (["sample", str(LEGACY_RUN), "--sampler", "ddim", "--eta", "2"], "eta must be between 0 and 1"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_bad_config_value_names_field(tmp_path, capsys):
    cfg = tiny_config_dict()
    cfg["model_params"]["num_heads"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "bad.yaml"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "divisible by num_heads (3)" in capsys.readouterr().err


def test_empty_data_folder_is_exit_2(tmp_path, config_file, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", str(config_file), "--data", str(tmp_path / "empty"), "--run-dir", str(tmp_path / "r")]) == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err


def test_console_script_entry_point_reports_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core.cli", "sample", str(tmp_path / "nope.safetensors")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "nope.safetensors" in proc.stderr
