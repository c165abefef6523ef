"""The noise schedule reproduces the tutorial's numbers and the closed-form identities of DDPM."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from core.schedule import NoiseSchedule


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return load_file(fixtures_dir / "scheduler_linear.safetensors")


def test_tables_match_tutorial(ref):
    s = NoiseSchedule(1000, 1e-4, 0.02)
    for name in ("betas", "alphas", "alpha_cum_prod"):
        torch.testing.assert_close(getattr(s, name), ref[name], rtol=1e-5, atol=1e-7)


def test_add_noise_matches_tutorial(ref):
    s = NoiseSchedule()
    torch.testing.assert_close(s.add_noise(ref["x0"], ref["noise"], ref["t"]), ref["xt"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [0, 1, 500, 999])
def test_reverse_step_matches_tutorial(ref, t):
    s = NoiseSchedule()
    xt, eps = ref["rev_xt"], ref["rev_eps"]
    torch.testing.assert_close(s.posterior_mean(xt, eps, t), ref[f"rev_mean_t{t}"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.predict_x0(xt, eps, t), ref[f"rev_x0_t{t}"], rtol=1e-5, atol=1e-5)
    if t > 0:
        torch.testing.assert_close(s.posterior_variance[t:t + 1], ref[f"rev_var_t{t}"], rtol=1e-5, atol=1e-9)
    mean, _ = s.step(xt, eps, t, torch.Generator().manual_seed(0))
    if t == 0:
        torch.testing.assert_close(mean, ref["rev_mean_t0"], rtol=1e-5, atol=1e-5)  # no noise at t = 0


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_form_matches_iterated_forward_steps(kind):
    """q(x_t|x_0) in one jump has the same mean and variance as t single noising steps."""
    s = NoiseSchedule(200, 1e-4, 0.02, kind)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(120):
        beta = float(s.betas[t])
        x = (1 - beta) ** 0.5 * x + beta ** 0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    abar = float(s.alpha_cum_prod64[119])
    assert x.mean().item() == pytest.approx(abar ** 0.5 * 0.7, abs=0.02)
    assert x.var().item() == pytest.approx(1 - abar, rel=0.03)
    assert abar == pytest.approx(float(torch.prod(1 - s.betas[:120].double())), rel=1e-5)


def test_posterior_inverts_forward_given_true_noise():
    """With the true eps, the clamped x0 estimate recovers x0 exactly."""
    s = NoiseSchedule()
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    eps = torch.randn_like(x0)
    for t in (0, 10, 500, 999):
        xt = s.add_noise(x0, eps, torch.full((4,), t))
        torch.testing.assert_close(s.predict_x0(xt, eps, t), x0, rtol=1e-3, atol=2e-3)


def test_cosine_schedule_shape():
    s = NoiseSchedule(1000, kind="cosine")
    assert s.alpha_cum_prod[0] > 0.999 and s.alpha_cum_prod[-1] < 1e-4
    assert torch.all(s.betas <= 0.999) and torch.all(s.betas > 0)
    assert torch.all(s.alpha_cum_prod[1:] < s.alpha_cum_prod[:-1])
