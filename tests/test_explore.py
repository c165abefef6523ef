"""core.explore: the Explore view's numbers are the schedule's own, its loss curve is
deterministic, and its UNet table adds up to the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.config import Config, load_config
from core.denoiser import EpsDenoiser
from core.explore import (
    ExploreCancelled,
    compared_schedules,
    fixed_batch,
    loss_by_timestep,
    noised,
    predict,
    spaced_timesteps,
    unet_levels,
)
from core.schedule import NoiseSchedule
from core.unet import UNet, count_parameters


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return load_file(fixtures_dir / "scheduler_linear.safetensors")


class Oracle(torch.nn.Module):
    """A 'network' that knows the noise: what a perfect model would predict."""

    def __init__(self, noise: torch.Tensor) -> None:
        super().__init__()
        self.noise = noise
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.noise.expand_as(xt)


def test_forward_process_matches_tutorial(ref):
    schedule = NoiseSchedule()
    for i, t in enumerate(ref["t"].tolist()):
        xt = noised(schedule, ref["x0"][i], ref["noise"][i], [t])
        torch.testing.assert_close(xt[0], ref["xt"][i], rtol=1e-5, atol=1e-6)


def test_forward_strip_is_one_noise_at_many_t(ref):
    schedule = NoiseSchedule()
    ts = [0, 250, 999]
    strip = noised(schedule, ref["x0"][0], ref["noise"][0], ts)
    assert strip.shape == (3, *ref["x0"][0].shape)
    for row, t in zip(strip, ts, strict=True):
        torch.testing.assert_close(row, noised(schedule, ref["x0"][0], ref["noise"][0], [t])[0])


def test_schedule_curves_match_tutorial_and_compare_the_other_kind(ref, fixtures_dir):
    config = load_config(fixtures_dir / "tutorial_default.yaml")
    mine, other = compared_schedules(config.diffusion_params)
    assert (mine.kind, other.kind) == ("linear", "cosine")
    np.testing.assert_allclose(mine.betas, ref["betas"].double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(mine.alpha_bar, ref["alpha_cum_prod"].double().numpy(), rtol=1e-5)
    abar = ref["alpha_cum_prod"].double().numpy()
    np.testing.assert_allclose(mine.log_snr, np.log(abar / (1 - abar)), rtol=1e-4, atol=1e-3)  # fixture: float32
    np.testing.assert_allclose(other.alpha_bar, NoiseSchedule(1000, kind="cosine").alpha_cum_prod64.numpy())
    assert np.all(np.diff(mine.log_snr) < 0) and np.all(np.diff(other.log_snr) < 0)  # less signal at every step
    cosine = config.replace("diffusion_params", schedule="cosine")
    assert [c.kind for c in compared_schedules(cosine.diffusion_params)] == ["cosine", "linear"]


def test_spaced_timesteps_cover_both_ends():
    ts = spaced_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and ts == sorted(ts)
    assert spaced_timesteps(5, 50) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("t", [0, 1, 500, 999])
def test_prediction_uses_the_schedules_x0(ref, t):
    """A model that predicts the true noise recovers x0 exactly; the x0 shown is
    ``NoiseSchedule.predict_x0`` of what the model said."""
    schedule = NoiseSchedule()
    x0, noise = ref["x0"][0], ref["noise"][0]
    p = predict(EpsDenoiser(Oracle(noise), schedule), x0, noise, t)
    assert p.noise_mse == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(p.x0_pred, x0.clamp(-1, 1), atol=1e-3 if t == 999 else 1e-5, rtol=0)
    torch.testing.assert_close(p.xt, ref["xt"][0] if t == 0 else schedule.add_noise(x0[None], noise[None],
                                                                                      torch.tensor([t]))[0])
    wrong = predict(EpsDenoiser(Oracle(torch.zeros_like(noise)), schedule), x0, noise, t)
    assert wrong.noise_mse == pytest.approx(float((noise**2).mean()), rel=1e-5)
    torch.testing.assert_close(wrong.x0_pred, schedule.predict_x0(wrong.xt[None], torch.zeros(1, *noise.shape), t)[0])


@pytest.fixture(scope="module")
def tiny_model():
    from core.presets import tiny_config_dict

    config = Config.from_dict(tiny_config_dict())
    torch.manual_seed(0)
    schedule = NoiseSchedule.from_config(config.diffusion_params)
    return EpsDenoiser(UNet(config.model_params).eval(), schedule), config


def test_loss_by_timestep_shape_and_determinism(tiny_model):
    model, config = tiny_model
    m = config.model_params
    images = torch.rand(6, m.im_channels, m.im_size, m.im_size) * 2 - 1
    ts = spaced_timesteps(config.diffusion_params.num_timesteps, 5)
    calls = []
    a = loss_by_timestep(model, images, ts, progress=lambda done, total: calls.append((done, total)))
    b = loss_by_timestep(model, images, ts)
    assert a.timesteps.tolist() == ts and a.loss.shape == (5,) and np.all(a.loss > 0)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert calls == [(i + 1, 5) for i in range(5)]
    # a step's value depends on (seed, t) only, not on the other steps asked for
    np.testing.assert_array_equal(loss_by_timestep(model, images, ts[2:3]).loss, a.loss[2:3])
    assert not np.array_equal(loss_by_timestep(model, images, ts, seed=1).loss, a.loss)


def test_loss_by_timestep_of_a_perfect_model_is_zero(ref):
    """The loss is the training loss: the MSE between the true and the predicted noise."""
    images = ref["x0"]
    schedule = NoiseSchedule()
    seen = {}

    class Recorder(Oracle):
        def forward(self, xt, t):
            # recover the noise the way add_noise put it in, to predict it perfectly
            i = int(t[0])
            eps = (xt - schedule.sqrt_alpha_cum_prod[i] * images) / schedule.sqrt_one_minus_alpha_cum_prod[i]
            seen[i] = eps
            return eps

    result = loss_by_timestep(EpsDenoiser(Recorder(torch.zeros(1)), schedule), images, [10, 500])
    np.testing.assert_allclose(result.loss, 0.0, atol=1e-9)
    assert set(seen) == {10, 500}


def test_loss_by_timestep_stops_when_cancelled(tiny_model):
    model, config = tiny_model
    images = torch.zeros(2, 1, config.model_params.im_size, config.model_params.im_size)
    asked = []

    def cancel_after_two() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(ExploreCancelled):
        loss_by_timestep(model, images, [0, 1, 2, 3], should_cancel=cancel_after_two)
    assert len(asked) == 3


def test_fixed_batch_is_the_same_images_every_time():
    dataset = [torch.full((1, 2, 2), float(i)) for i in range(100)]
    a, b = fixed_batch(dataset, 10, seed=3), fixed_batch(dataset, 10, seed=3)
    torch.testing.assert_close(a, b)
    assert a.shape == (10, 1, 2, 2) and len(set(a[:, 0, 0, 0].tolist())) == 10
    assert fixed_batch(dataset[:4], 10).shape[0] == 4


def test_unet_table_adds_up_to_the_tutorial_model(fixtures_dir):
    params = load_config(fixtures_dir / "tutorial_default.yaml").model_params
    rows = unet_levels(params)
    assert sum(r.parameters for r in rows) == 10_188_081
    by_name = {r.block: r for r in rows}
    assert [by_name[f"down {i}"].resolution for i in (1, 2, 3)] == [28, 14, 7]
    assert by_name["mid 1"].resolution == 7 and by_name["up 3"].resolution == 28
    assert (by_name["down 1"].channels_in, by_name["down 1"].channels_out) == (32, 64)
    assert all(r.attention for r in rows if r.block.startswith(("down", "mid", "up")))


def test_unet_table_follows_the_config(tiny_config):
    params = tiny_config.replace("model_params", down_attention=[False, False]).model_params
    rows = unet_levels(params)
    assert sum(r.parameters for r in rows) == count_parameters(UNet(params))
    assert not any(r.attention for r in rows if r.block.startswith(("down", "up")))
    assert all(r.attention for r in rows if r.block.startswith("mid"))
