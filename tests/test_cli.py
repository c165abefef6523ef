"""The `ddpm` command line: train, resume, sample and export; user errors exit 2 with one line."""
from __future__ import annotations

import os
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


@pytest.mark.slow
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
    assert "(EMA weights" in capsys.readouterr().err  # which weights were sampled
    assert main(["sample", str(run), "--sampler", "dpm++", "--steps", "2", "--num", "1", "--raw",
                 "--grid", str(grid)]) == 0
    assert "(raw weights)" in capsys.readouterr().err


@pytest.mark.slow
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


@pytest.mark.slow
def test_console_script_entry_point_reports_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core.cli", "sample", str(tmp_path / "nope.safetensors")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "nope.safetensors" in proc.stderr


def test_console_entry_flushes_what_it_printed_before_its_fast_exit():
    """``run`` skips the interpreter's teardown; a piped stdout is block-buffered, so what a
    command printed reaches the pipe only if ``run`` flushes it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-m", "core.cli", "--version"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ddpm ")


def test_max_minutes_stops_training_and_a_bad_value_is_one_line(tmp_path, config_file, capsys):
    run = tmp_path / "run"
    assert main(["train", str(config_file), "--run-dir", str(run), "--max-minutes", "1e-9"]) == 0
    assert "completed at step 1" in capsys.readouterr().err
    assert main(["train", str(config_file), "--run-dir", str(tmp_path / "b"), "--max-minutes", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_params.max_minutes" in err[0]


# -- the first hour: what a new user typed ---------------------------------------------------------
@pytest.mark.parametrize("flag", ["--max-steps", "--device", "--data"])
def test_train_overrides_keep_config_warnings(flag, tmp_path, capsys):
    """A misspelt section must be reported even when a command-line option changes the config."""
    cfg = tiny_config_dict()
    cfg["modle_params"] = cfg["model_params"]
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(cfg))
    value = {"--max-steps": "1", "--device": "cpu", "--data": "builtin:mnist"}[flag]
    main(["train", str(tmp_path / "typo.yaml"), "--run-dir", str(tmp_path / "r"), "--max-steps", "1", flag, value])
    assert "unknown key 'modle_params' ignored (did you mean 'model_params'?)" in capsys.readouterr().err


def test_config_replace_keeps_warnings(tiny_config):
    from core.config import Config

    cfg = Config.from_dict({**tiny_config_dict(), "trian_params": {}})
    assert cfg.replace("train_params", max_steps=3).warnings == cfg.warnings != []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num", "-1"], "argument --num: must be a whole number of at least 1"),
        (["--num", "0"], "argument --num: must be a whole number of at least 1"),
        (["--steps", "0"], "argument --steps: must be a whole number of at least 1"),
        (["--steps", "-3"], "argument --steps: must be a whole number of at least 1"),
        (["--num", "two"], "argument --num: must be a whole number of at least 1"),
        (["--sampler", "ddimm"], "invalid choice: 'ddimm'"),
    ],
)
def test_sample_bad_numbers_exit_2_with_one_line(args, message, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nothing-needed"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err


def test_scan_bad_size_exit_2_with_one_line(capsys):
    assert main(["scan", "builtin:mnist", "--size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --size: must be a whole number of at least" in err[0], err


def test_bad_animation_suffix_refused_before_sampling(tmp_path, capsys, monkeypatch):
    import core.checkpoint

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the --animation name was checked")

    monkeypatch.setattr(core.checkpoint, "load_for_sampling", must_not_load)
    assert main(["sample", str(tmp_path), "--animation", str(tmp_path / "a.avi")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a.avi" in err[0] and ".gif or .mp4" in err[0], err


def test_version_flag(capsys):
    from core import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ddpm {__version__}"


def test_every_cli_option_has_help():
    from core.cli import _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in [("ddpm", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if action.dest not in ("help", "command"):
                assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_yaml_syntax_error_shows_file_line_column_and_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_params:\n  batch_size: 8\n  lr: [0.1\nmodel_params: {}\n")
    assert main(["train", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert f"{bad}: not valid YAML at line 4, column 13:" in lines[0], lines
    assert [line.strip() for line in lines[1:]] == ["model_params: {}", "^"], lines
    assert lines[1].index("model_params") + 12 == lines[2].index("^")  # the caret under column 13


def test_scan_shows_channels_size_resize_and_warns_about_small_and_colour_images(tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 40), (200, 30 * i, 10)).save(folder / f"colour-{i}.png")
    Image.new("L", (8, 8), 128).save(folder / "tiny.png")
    assert main(["scan", str(folder), "--channels", "1", "--size", "32"]) == 0
    err = capsys.readouterr().err
    assert "shorter side is 32 px, centre-cropped to 32x32" in err and "grayscale" in err, err
    assert "warning: 1 image smaller than 32 px on the shorter side (the smallest 8x8)" in err, err
    assert "warning: most images are in colour but model_params.im_channels is 1" in err, err
    assert main(["scan", str(folder), "--channels", "3", "--size", "8"]) == 0
    err = capsys.readouterr().err
    assert "centre-cropped to 8x8" in err and "converted to RGB" in err and "warning" not in err, err
