"""bench/layer_times.py: every layer of a real sampling step timed once, its arithmetic counted
the way its kernel ran it."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from bench.layer_times import against_peak, cost, profile
from core import winograd
from core.config import Config
from core.presets import tiny_config_dict
from core.unet import NormActConv, SelfAttention, UNet


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict()))
    return str(path)


def test_each_layer_timed_once_within_the_step(tiny_yaml: str, one_thread: None) -> None:
    result = profile(tiny_yaml, torch.device("cpu"), batch=2, warmup=1, repeats=1)
    net = UNet(Config.from_dict(tiny_config_dict()).model_params)
    units = [n for n, m in net.named_modules() if isinstance(m, (NormActConv, SelfAttention))]
    names = [row["name"] for row in result["layers"]]
    assert len(names) == len(set(names))
    assert set(units) <= set(names)
    # nothing inside a NormActConv or an attention layer is timed apart from it
    assert not [n for n in names for u in units if n.startswith(u + ".")]
    # one step: the layers' intervals lie inside it and do not overlap
    assert all(row["ms"] > 0 for row in result["layers"])
    assert 0 <= result["other_ms"] < 1e3 * result["step_s"]


@pytest.mark.parametrize("side,tile", [(10, 4), (14, 7)])  # F(4x4, 3x3); sampling's F(7x7, 3x3)
def test_convolutions_count_the_products_of_the_kernel_that_ran(side: int, tile: int) -> None:
    layer = NormActConv(32, 64).eval()
    x = torch.randn(3, 32, side, side).contiguous(memory_format=torch.channels_last)
    out = layer(x)
    layer.winograd = True
    kind, flop = cost(layer, x, out)
    if winograd.available():
        assert kind == "conv3x3 winograd"
        assert flop == 2 * 3 * math.ceil(side / tile) ** 2 * (tile + 2) ** 2 * 32 * 64
    else:
        assert kind == "conv3x3 direct"
    layer.winograd = False
    assert cost(layer, x, out) == ("conv3x3 direct", 2 * 3 * side * side * 9 * 32 * 64)


def test_attention_counts_projections_and_both_products() -> None:
    layer = SelfAttention(16, 4)
    tokens = torch.randn(2, 49, 16)
    kind, flop = cost(layer, tokens, tokens)
    assert kind == "attention, heads of 4"
    assert flop == 2 * 2 * 49 * (16 * 48 + 16 * 16) + 2 * 2 * 2 * 49 * 49 * 16


def test_shares_of_the_peak() -> None:
    result = {"layers": [{"ms": 10.0, "gflop": 1.0}], "by_kind": {"k": {"ms": 10.0, "gflop": 1.0}},
              "gflop": 1.0, "step_s": 0.02}
    against_peak(result, peak_gflops=200.0)
    assert result["layers"][0]["gflops"] == pytest.approx(100.0)
    assert result["layers"][0]["share_of_peak"] == pytest.approx(0.5)
    assert result["floor_s"] == pytest.approx(0.005)
    assert result["share_of_peak"] == pytest.approx(0.25)
