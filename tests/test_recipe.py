"""Training-recipe options: learning-rate schedule, EMA half-life, min-SNR weights, time budget,
v-prediction."""
from __future__ import annotations

import math

import pytest
import torch

from core import trainer as tr
from core.budget import TrainClock
from core.checkpoint import read_training_state
from core.config import Config, load_config
from core.denoiser import VDenoiser, make_denoiser
from core.ema import ema_beta
from core.loss_weighting import loss_weights, min_snr_weight, snr
from core.lr_schedule import lr_factor, run_progress
from core.runs import RunDir
from core.sampling import SamplingModel
from core.schedule import NoiseSchedule

from .conftest import tiny_config_dict
from .test_trainer import RandomImages


# ----------------------------------------------------------------------------- learning rate
def test_constant_schedule_is_flat_after_warmup():
    assert [lr_factor("constant", s, 4, 0.5) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor("constant", 0, 0, 0.9) == 1.0


def test_cosine_goes_from_one_to_zero_over_the_run():
    assert lr_factor("cosine", 10, 0, 0.0) == 1.0
    assert lr_factor("cosine", 10, 0, 0.5) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 0, 0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor("cosine", 10, 0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", 10, 0, 1.7) == pytest.approx(0.0, abs=1e-12)  # past the end: stays 0
    assert lr_factor("cosine", 1, 4, 0.0) == pytest.approx(0.5)  # warm-up multiplies


def test_progress_follows_steps_or_the_time_budget_whichever_is_further():
    assert run_progress(30, 100, 5.0, None) == pytest.approx(0.3)
    assert run_progress(30, 100, 45.0, 60.0) == pytest.approx(0.75)
    assert run_progress(90, 100, 6.0, 60.0) == pytest.approx(0.9)


@pytest.mark.slow
def test_trainer_applies_cosine_to_the_end_of_max_steps(tmp_path):
    cfg = Config.from_dict(tiny_config_dict(max_steps=10, lr=1e-3, lr_schedule="cosine", warmup_steps=2))
    tr.Trainer(cfg, tmp_path / "run", dataset=RandomImages()).run()
    lrs = [row["lr"] for row in RunDir(tmp_path / "run").read_log()]
    expected = [1e-3 * lr_factor("cosine", s, 2, s / 10) for s in range(10)]
    assert lrs == pytest.approx(expected)
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[-1] < 0.03e-3


# ----------------------------------------------------------------------------- EMA
def test_ema_half_life_halves_the_old_average_after_that_many_images():
    beta = ema_beta(10**9, 64, halflife_kimg=6.4, rampup=None)
    assert beta ** (6400 / 64) == pytest.approx(0.5)


def test_ema_rampup_caps_the_half_life_at_a_fraction_of_images_seen():
    # 1,000 images seen, ramp-up 0.05: half-life 50 images, not 10,000
    assert ema_beta(1000, 10, halflife_kimg=10.0, rampup=0.05) == pytest.approx(0.5 ** (10 / 50))
    # late in a run the configured half-life applies
    assert ema_beta(10**7, 10, halflife_kimg=10.0, rampup=0.05) == pytest.approx(0.5 ** (10 / 10_000))


@pytest.mark.slow
def test_trainer_ema_follows_the_half_life(tmp_path):
    """One step with ramp-up: half-life 0.05 * batch images, so beta = 0.5 ** 20 and the EMA is
    essentially the trained weights; without the key, ema_decay (with its warm-up) still applies."""
    base = dict(max_steps=1, batch_size=4, lr=1e-2)
    ramp = tr.Trainer(Config.from_dict(tiny_config_dict(**base, ema_halflife_kimg=1.0, ema_rampup=0.05)),
                      tmp_path / "a", dataset=RandomImages())
    start = [p.detach().clone() for p in ramp.ema_model.parameters()]
    ramp.run()
    beta = 0.5 ** 20
    for e, p, s in zip(ramp.ema_model.parameters(), ramp.model.parameters(), start):
        torch.testing.assert_close(e, beta * s + (1 - beta) * p)
    plain = tr.Trainer(Config.from_dict(tiny_config_dict(**base, ema_decay=0.5)), tmp_path / "b", dataset=RandomImages())
    start = [p.detach().clone() for p in plain.ema_model.parameters()]
    plain.run()
    beta = tr.ema_decay_at(0.5, 0)
    for e, p, s in zip(plain.ema_model.parameters(), plain.model.parameters(), start):
        torch.testing.assert_close(e, beta * s + (1 - beta) * p)


# ----------------------------------------------------------------------------- min-SNR
def test_min_snr_weights_for_eps_and_v():
    abar = NoiseSchedule().alpha_cum_prod64
    s = snr(abar)
    w_eps = min_snr_weight(abar, 5.0, "eps")
    w_v = min_snr_weight(abar, 5.0, "v")
    high = s > 5  # low noise: clamped
    torch.testing.assert_close(w_eps[high], 5.0 / s[high])
    torch.testing.assert_close(w_eps[~high], torch.ones_like(s[~high]))
    torch.testing.assert_close(w_v, torch.minimum(s, torch.full_like(s, 5.0)) / (s + 1))
    assert loss_weights("none", abar, 5.0, "eps") is None


@pytest.mark.slow
def test_min_snr_changes_the_loss_and_none_keeps_the_tutorials(tmp_path):
    losses = {}
    for kind in ("none", "min_snr"):
        cfg = Config.from_dict(tiny_config_dict(max_steps=2, loss_weighting=kind))
        tr.Trainer(cfg, tmp_path / kind, dataset=RandomImages()).run()
        losses[kind] = [row["loss"] for row in RunDir(tmp_path / kind).read_log()]
    assert losses["min_snr"][0] < losses["none"][0]  # weights are at most 1, some much less


# ----------------------------------------------------------------------------- time budget
def test_clock_counts_only_started_time_and_what_is_left():
    clock = TrainClock(max_minutes=1.0, used_s=50.0)
    assert clock.left_s == 10.0 and not clock.exhausted
    clock.used_s = 61.0
    assert clock.left_s == 0.0 and clock.exhausted
    assert TrainClock(None).left_s is None and not TrainClock(None).exhausted


def test_max_minutes_stops_with_a_checkpoint_that_records_the_time(tmp_path):
    events: list = []
    cfg = Config.from_dict(tiny_config_dict(max_steps=1000, max_minutes=1e-9))
    tr.Trainer(cfg, tmp_path / "run", dataset=RandomImages(), on_event=events.append).run()
    assert events[-1] == tr.Finished(1, "completed")
    done = [e for e in events if isinstance(e, tr.StepDone)]
    assert len(done) == 1 and done[0].time_used_s > 0 and done[0].time_left_s == 0.0
    (step, path), = RunDir(tmp_path / "run").list_checkpoints()
    assert step == 1 and read_training_state(path).train_seconds == pytest.approx(done[0].time_used_s)


def test_without_a_budget_there_is_no_time_left(tmp_path):
    events: list = []
    tr.Trainer(Config.from_dict(tiny_config_dict(max_steps=2)), tmp_path / "run", dataset=RandomImages(),
               on_event=events.append).run()
    done = [e for e in events if isinstance(e, tr.StepDone)]
    assert done[-1].time_left_s is None and done[-1].time_used_s >= done[0].time_used_s > 0


# ----------------------------------------------------------------------------- defaults
def test_tutorial_yaml_keeps_the_tutorial_recipe(fixtures_dir):
    tp = load_config(fixtures_dir / "tutorial_default.yaml").train_params
    assert (tp.lr_schedule, tp.warmup_steps, tp.loss_weighting) == ("constant", 0, "none")
    assert tp.ema_halflife_kimg is None and tp.max_minutes is None


@pytest.mark.parametrize("key,value", [("max_minutes", 0), ("lr_schedule", "linear"), ("warmup_steps", -1),
                                       ("ema_halflife_kimg", 0), ("loss_weighting", "snr"), ("min_snr_gamma", 0)])
def test_bad_recipe_values_name_the_field(key, value):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train_params.{key}"):
        Config.from_dict(tiny_config_dict(**{key: value}))


# ----------------------------------------------------------------------------- v-prediction
def _params(prediction: str):
    return Config.from_dict({"diffusion_params": {"prediction": prediction}}).diffusion_params


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_target_and_split_invert_each_other(prediction):
    """The network output that the trainer targets reads back as the noise and image it came from."""
    schedule = NoiseSchedule()
    d = make_denoiser(lambda x, t: x, schedule, _params(prediction))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(8, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, 100, 500, 900, 998, 999])
    eps, x0_back = d.split(schedule.add_noise(x0, noise, t), d.target(x0, noise, t), t)
    torch.testing.assert_close(eps, noise, rtol=0, atol=2e-5)
    torch.testing.assert_close(x0_back, x0, rtol=0, atol=2e-5)


def test_v_is_the_velocity():
    schedule = NoiseSchedule()
    d = make_denoiser(lambda x, t: x, schedule, _params("v"))
    x0, noise, t = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), -1.0), torch.tensor([300])
    a, s = schedule.sqrt_alpha_cum_prod[300], schedule.sqrt_one_minus_alpha_cum_prod[300]
    torch.testing.assert_close(d.target(x0, noise, t).flatten(), (a * -1.0 - s * 0.5).reshape(1))


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_denoiser_weights_are_min_snr_for_its_prediction(prediction):
    schedule = NoiseSchedule()
    d = make_denoiser(lambda x, t: x, schedule, _params(prediction), weighting="min_snr", min_snr_gamma=5.0)
    t = torch.tensor([0, 50, 300, 999])
    expected = min_snr_weight(schedule.alpha_cum_prod64, 5.0, prediction)[t].float()
    torch.testing.assert_close(d.loss_weight(t), expected)
    assert make_denoiser(lambda x, t: x, schedule, _params(prediction)).loss_weight(t) is None


def test_a_v_checkpoint_is_never_sampled_as_eps(tmp_path):
    cfg = Config.from_dict(tiny_config_dict(max_steps=2)).replace("diffusion_params", prediction="v")
    tr.Trainer(cfg, tmp_path / "run", dataset=RandomImages()).run()
    eps_config = cfg.replace("diffusion_params", prediction="eps")
    for source in (tmp_path / "run", RunDir(tmp_path / "run").weights_path(cfg)):
        model = SamplingModel.load(source, eps_config, device="cpu")  # the wrong config given
        assert model.config.diffusion_params.prediction == "v"
        assert isinstance(model.denoiser(), VDenoiser)
        assert isinstance(SamplingModel.load(source, device="cpu").denoiser(), VDenoiser)


def test_v_training_regresses_on_v(tmp_path, monkeypatch):
    """The trainer's loss for a v run is the MSE to the velocity, not to the noise."""
    cfg = Config.from_dict(tiny_config_dict(max_steps=1)).replace("diffusion_params", prediction="v")
    seen = []
    monkeypatch.setattr(VDenoiser, "target", lambda self, x0, noise, t: seen.append(1) or noise * 0)
    tr.Trainer(cfg, tmp_path / "run", dataset=RandomImages()).run()
    assert seen
