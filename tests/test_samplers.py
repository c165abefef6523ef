"""Samplers: the step grid, exactness against the tutorial's loop, and the right distributions.

Two analytic "oracle" noise predictors make the distributions checkable in closed form. For data
that is a single image c, the ideal eps is (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t) and every
sampler must return c. For per-pixel Gaussian data N(mu, s^2), x_t ~ N(a mu, a^2 s^2 + sigma^2)
(a = sqrt(abar), sigma^2 = 1 - abar), the ideal eps is sigma (x_t - a mu) / (a^2 s^2 + sigma^2),
and the probability-flow ODE keeps z = (x_t - a mu) / sqrt(a^2 s^2 + sigma^2) fixed, so a
deterministic sampler must map its initial noise to mu + s z (up to its discretisation error).
"""
from __future__ import annotations

import math

import pytest
import torch

from core import samplers
from core.choices import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLER_SPECS, SAMPLERS, app_steps
from core.denoiser import EpsDenoiser
from core.device import Precision
from core.errors import UserError
from core.samplers import Frame, SamplingCancelled, _ddim_mean_std, default_steps, timesteps
from core.schedule import NoiseSchedule
from core.unet import UNet

T = 1000
SCHEDULE = NoiseSchedule(T)
MU, SD = 0.0, 0.2  # mu +- 5 sd stays inside [-1, 1], so clamping x0 never changes these paths
GAUSS_SHAPE, GAUSS_N = (1, 16, 16), 128  # 32768 independent pixels per run


def sample(model, schedule, *, eta=None, precision=None, sampler="ddpm", **kwargs):
    """:func:`core.samplers.sample` on an eps-predicting ``model``; ``eta`` goes to the samplers that take it."""
    options = {"eta": eta} if eta is not None and SAMPLER_SPECS[sampler].option("eta") else None
    return samplers.sample(EpsDenoiser(model, schedule, precision=precision), sampler=sampler, options=options,
                           **kwargs)


def generate(model, schedule, *, eta=None, precision=None, sampler="ddpm", **kwargs):
    options = {"eta": eta} if eta is not None and SAMPLER_SPECS[sampler].option("eta") else None
    return samplers.generate(EpsDenoiser(model, schedule, precision=precision), sampler=sampler, options=options,
                             **kwargs)


class PointMass:
    """The ideal noise predictor when every training image is ``c``."""

    def __init__(self, schedule: NoiseSchedule, c: torch.Tensor) -> None:
        self.abar, self.c = schedule.alpha_cum_prod64, c

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t].view(-1, 1, 1, 1)
        return ((x.double() - abar.sqrt() * self.c) / (1 - abar).sqrt()).float()


class Gaussian:
    """The ideal noise predictor for pixels drawn independently from N(mu, sd^2)."""

    def __init__(self, schedule: NoiseSchedule, mu: float = MU, sd: float = SD) -> None:
        self.abar, self.mu, self.sd = schedule.alpha_cum_prod64, mu, sd

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t].view(-1, 1, 1, 1)
        return ((1 - abar).sqrt() * (x.double() - abar.sqrt() * self.mu) / (abar * self.sd**2 + 1 - abar)).float()

    def ode_solution(self, x_init: torch.Tensor, t_start: int) -> torch.Tensor:
        """Where the probability-flow ODE takes x at t_start, read out as E[x0 | x at t = 0]."""
        a_start, a0 = float(self.abar[t_start]), float(self.abar[0])
        z = (x_init.double() - a_start**0.5 * self.mu) / math.sqrt(a_start * self.sd**2 + 1 - a_start)
        shrink = a0**0.5 * self.sd / math.sqrt(a0 * self.sd**2 + 1 - a0)  # E[x0|x_0] vs x0: 0.9994
        return self.mu + self.sd * shrink * z


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The documented first draw: standard normal from a CPU generator seeded with ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def gaussian_run(sampler: str, steps: int, eta: float = 0.0, seed: int = 0) -> torch.Tensor:
    return generate(Gaussian(SCHEDULE), SCHEDULE, num_images=GAUSS_N, image_shape=GAUSS_SHAPE,
                    sampler=sampler, steps=steps, eta=eta, seed=seed)


@pytest.fixture
def unet_and_schedule(tiny_config):
    """The tiny UNet with a 12-step schedule: enough steps to exercise the loop, few model calls."""
    cfg = tiny_config
    torch.manual_seed(0)
    model = UNet(cfg.model_params).eval()
    shape = (cfg.model_params.im_channels, cfg.model_params.im_size, cfg.model_params.im_size)
    return model, NoiseSchedule(12), shape


# ---------------------------------------------------------------------------------- step grid


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 50, 333, 999, 1000])
def test_grid_has_steps_distinct_descending_entries_from_T_minus_1_to_0(sampler, steps):
    ts = timesteps(sampler, T, steps)
    assert len(ts) == len(set(ts)) == steps
    assert all(isinstance(t, int) for t in ts)
    assert ts == sorted(ts, reverse=True)
    assert ts[0] == T - 1 and all(0 <= t <= T - 1 for t in ts)
    if steps > 1:
        assert ts[-1] == 0
        gaps = {a - b for a, b in zip(ts, ts[1:])}
        ideal = (T - 1) / (steps - 1)
        assert all(math.floor(ideal) <= g <= math.ceil(ideal) for g in gaps)  # evenly spaced


@pytest.mark.parametrize("num_timesteps", [1, 2, 10, 100])
def test_grid_properties_hold_for_every_step_count(num_timesteps):
    for steps in range(1, num_timesteps + 1):
        ts = timesteps("ddim", num_timesteps, steps)
        assert len(set(ts)) == steps and ts == sorted(ts, reverse=True)
        assert ts[0] == num_timesteps - 1 and (steps == 1 or ts[-1] == 0)


def test_full_grid_is_the_tutorials_loop_and_one_step_jumps_from_pure_noise():
    assert timesteps("ddpm", T, T) == list(range(T - 1, -1, -1))
    assert timesteps("dpm++", T, 1) == [T - 1]


def test_default_steps_per_sampler_capped_by_schedule_length():
    assert len(timesteps("ddpm", T)) == T
    assert len(timesteps("ddim", T)) == SAMPLER_SPECS["ddim"].default_steps == 50
    assert len(timesteps("dpm++", T)) == SAMPLER_SPECS["dpm++"].default_steps == 20
    assert len(timesteps("ddim", 10)) == 10
    assert [default_steps(name, 30) for name in SAMPLERS] == [30, 30, 20, 20, 20, 20]


def test_the_app_samples_dpmpp_sde_at_20_steps_where_ddpm_sample_keeps_the_full_chain():
    assert (DEFAULT_SAMPLER, app_steps(DEFAULT_SAMPLER, T)) == ("dpm++sde", DEFAULT_STEPS) == ("dpm++sde", 20)
    assert app_steps("ddpm", T) == 20
    assert default_steps("ddpm", T) == T
    assert [app_steps(name, 30) for name in SAMPLERS] == [20, 30, 20, 20, 20, 20]
    assert app_steps("ddpm", 10) == 10


@pytest.mark.parametrize("steps", [0, -3, T + 1, 2.5, True])
def test_invalid_steps_name_the_field_and_the_allowed_range(steps):
    with pytest.raises(UserError, match=rf"steps must be a whole number from 1 to {T}.*got"):
        timesteps("ddim", T, steps)
    with pytest.raises(UserError, match="steps"):  # raised by the call, before the first frame
        sample(PointMass(SCHEDULE, torch.zeros(1)), SCHEDULE, num_images=1, image_shape=(1, 2, 2),
               sampler="ddim", steps=steps)


def test_bad_sampler_eta_and_stride_are_user_errors():
    model = PointMass(SCHEDULE, torch.zeros(1))
    with pytest.raises(UserError, match="Unknown sampler 'euler'.*ddpm, ddim, dpm\\+\\+"):
        sample(model, SCHEDULE, num_images=1, image_shape=(1, 2, 2), sampler="euler")
    with pytest.raises(UserError, match="eta must be between 0 and 1"):
        sample(model, SCHEDULE, num_images=1, image_shape=(1, 2, 2), sampler="ddim", eta=1.5)
    with pytest.raises(UserError, match="eta applies to the ddim sampler only, not ddpm"):
        samplers.sample(EpsDenoiser(model, SCHEDULE), num_images=1, image_shape=(1, 2, 2), sampler="ddpm",
                        options={"eta": 0.0})
    with pytest.raises(UserError, match="frame_stride"):
        sample(model, SCHEDULE, num_images=1, image_shape=(1, 2, 2), frame_stride=0)


# ---------------------------------------------------------------------------------- DDPM


def test_ddpm_full_chain_equals_the_tutorial_loop_exactly(unet_and_schedule, one_thread):
    """Bit for bit at one thread: with more, sample() may change the thread count from step to
    step as the machine's load changes (core.threads), and with it the rounding of reductions."""
    model, schedule, shape = unet_and_schedule
    frames = list(sample(model, schedule, num_images=3, image_shape=shape, sampler="ddpm", seed=7))

    g = torch.Generator().manual_seed(7)
    x = torch.randn((3, *shape), generator=g)
    with torch.no_grad():
        for i, t in enumerate(reversed(range(schedule.num_timesteps))):
            x, x0 = schedule.step(x, model(x, torch.full((3,), t)), t, g)
            assert frames[i].t == t
            assert torch.equal(frames[i].xt, x) and torch.equal(frames[i].x0, x0)
    assert len(frames) == schedule.num_timesteps


@pytest.mark.parametrize("steps", [1, 2, 20, 50])
def test_ddpm_on_a_shorter_grid_is_the_posterior_step_from_the_clamped_x0(steps):
    """Respaced, DDPM's step is DDIM's at eta = 1 (whose mean and variance are the posterior's,
    checked below), draw for draw; a network whose x0 estimate runs far outside [-1, 1] (eps = 0
    makes x0 = x_t / sqrt(abar_t)) still ends in range, where the unclamped full chain does not."""
    def runs_away(x, t):
        return torch.zeros_like(x)

    ddpm = list(sample(runs_away, SCHEDULE, num_images=4, image_shape=(3, 4, 4), steps=steps, seed=5))
    ddim = list(sample(runs_away, SCHEDULE, num_images=4, image_shape=(3, 4, 4), sampler="ddim", steps=steps,
                       eta=1.0, seed=5))
    assert len(ddpm) == steps
    for a, b in zip(ddpm, ddim, strict=True):
        assert a.t == b.t and torch.equal(a.xt, b.xt) and torch.equal(a.x0, b.x0)
    assert ddpm[-1].xt.abs().max() <= 1.0
    tutorial = generate(runs_away, SCHEDULE, num_images=4, image_shape=(3, 4, 4), steps=T, seed=5)
    assert tutorial.abs().max() > 10  # the full chain is the tutorial's, unclamped, as it was


# ---------------------------------------------------------------------------------- DDIM


@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_ddim_eta1_step_is_the_ddpm_posterior(t):
    """sigma_t^2 equals the posterior variance and the mean equals the tutorial's posterior mean."""
    g = torch.Generator().manual_seed(t)
    x0 = torch.rand((4, 1, 8, 8), generator=g) * 1.6 - 0.8
    eps = torch.randn(x0.shape, generator=g)
    xt = SCHEDULE.add_noise(x0, eps, torch.full((4,), t))
    abar = SCHEDULE.alpha_cum_prod64
    predicts_eps = EpsDenoiser(lambda x, tt: eps, SCHEDULE)
    mean, std, x0_hat = _ddim_mean_std(predicts_eps, xt, t, float(abar[t - 1]), eta=1.0)
    assert std**2 == pytest.approx(float(SCHEDULE.posterior_variance[t]), rel=1e-5)
    torch.testing.assert_close(mean, SCHEDULE.posterior_mean(xt, eps, t), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-3 if t == 999 else 1e-4)
    assert _ddim_mean_std(predicts_eps, xt, t, float(abar[t - 1]), eta=0.0)[1] == 0.0


def test_ddim_recomputes_eps_from_the_clamped_x0():
    """With x0 clamped, the DDIM update must use the eps consistent with that x0."""
    abar_t, abar_prev = float(SCHEDULE.alpha_cum_prod64[300]), float(SCHEDULE.alpha_cum_prod64[200])
    xt = torch.full((1, 1, 2, 2), 3.0)  # implies x0 far above 1
    mean, _, x0 = _ddim_mean_std(EpsDenoiser(lambda x, t: torch.zeros_like(x), SCHEDULE), xt, 300, abar_prev, eta=0.0)
    assert torch.all(x0 == 1.0)
    eps = (xt - abar_t**0.5) / (1 - abar_t) ** 0.5
    torch.testing.assert_close(mean, abar_prev**0.5 * x0 + (1 - abar_prev) ** 0.5 * eps)


@pytest.mark.slow
def test_ddim_eta1_full_chain_follows_the_ddpm_path_and_distribution():
    ddpm = gaussian_run("ddpm", T)
    ddim = gaussian_run("ddim", T, eta=1.0)
    # Same seed: both draw the same noise at the same steps and take the same mean and variance,
    # so the paths coincide up to float32 rounding (clamping never acts on this data).
    torch.testing.assert_close(ddim, ddpm, rtol=0, atol=2e-3)
    # Independent seeds: two estimates of one distribution from 32768 pixels each. Their means
    # differ by ~SD*sqrt(2/N) = 0.0016 and their stds by ~sqrt(1/N) = 0.55% (1 sigma); the
    # tolerances are about 4.5 sigma.
    other = gaussian_run("ddim", T, eta=1.0, seed=1)
    assert other.mean().item() == pytest.approx(ddpm.mean().item(), abs=0.0075)
    assert other.std().item() == pytest.approx(ddpm.std().item(), rel=0.025)


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 1.0)])
@pytest.mark.slow
def test_ancestral_samplers_reproduce_the_data_distribution(sampler, eta):
    """Mean and spread of N(MU, SD^2): sampling error is 0.0011 (mean) and 0.4% (std); the
    posterior variance beta-tilde is the lower bound of the true reverse variance (Ho et al.
    2020, sec. 3.2), which leaves the std about 1% low at T = 1000. Tolerances: 0.006 and 3%."""
    out = gaussian_run(sampler, T, eta=eta)
    assert out.mean().item() == pytest.approx(MU, abs=0.006)
    assert out.std().item() == pytest.approx(SD, rel=0.03)


@pytest.mark.parametrize("steps", [2, 3])
def test_dpmpp_sde_without_history_is_ddpms_respaced_step(steps):
    """Its second-order term needs an earlier step and is left out of the step into t = 0, so on
    grids of 2 and 3 steps it takes DDPM's respaced steps, draw for draw."""
    run = lambda sampler: gaussian_run(sampler, steps, seed=4)
    torch.testing.assert_close(run("dpm++sde"), run("ddpm"), rtol=0, atol=1e-6)


def test_dpmpp_sde_spreads_samples_closer_to_the_data_than_ddpm_at_few_steps():
    """With the oracle, x0 is E[x0 | x_t], and a few large steps from it lose spread: DDPM's
    respaced chain keeps 63 % of the data's std at 20 steps and 79 % at 50; the second-order
    correction keeps 70 % and 95 %. Both keep the mean (sampling error 0.0011)."""
    for steps in (20, 50):
        ddpm, sde = gaussian_run("ddpm", steps), gaussian_run("dpm++sde", steps)
        assert abs(sde.mean().item() - MU) < 0.006
        assert abs(sde.std().item() - SD) < 0.9 * abs(ddpm.std().item() - SD)
    assert sde.std().item() == pytest.approx(SD, rel=0.1)


# ---------------------------------------------------------------------------------- ODE samplers


@pytest.mark.parametrize("sampler,steps,tol", [("ddim", T, 1e-2), ("dpm++", 100, 1e-2), ("dpm++", 200, 1e-3),
                                               ("dpm++3m", 100, 1e-2), ("dpm++3m", 200, 3e-3),
                                               ("unipc", 100, 1e-2), ("unipc", 200, 3e-3)])
@pytest.mark.slow
def test_deterministic_samplers_follow_the_probability_flow_ode(sampler, steps, tol):
    """eta = 0 DDIM and DPM-Solver++ are deterministic maps of the initial noise: the exact one."""
    model = Gaussian(SCHEDULE)
    out = gaussian_run(sampler, steps)
    exact = model.ode_solution(initial_noise(0, (GAUSS_N, *GAUSS_SHAPE)), T - 1)
    assert (out.double() - exact).abs().max().item() < tol
    assert torch.equal(out, gaussian_run(sampler, steps))


@pytest.mark.slow
def test_ddim_converges_at_first_order_and_dpmpp_2m_at_second():
    """Errors against the exact ODE map: DDIM's shrink ~10x for 10x the steps, DPM-Solver++'s
    ~4x (measured 12x) for 2x the steps, and at 100 steps DPM-Solver++ is ~10x closer than DDIM."""
    exact = Gaussian(SCHEDULE).ode_solution(initial_noise(0, (GAUSS_N, *GAUSS_SHAPE)), T - 1)
    err = {(s, n): (gaussian_run(s, n).double() - exact).abs().max().item()
           for s, n in [("ddim", 100), ("ddim", T), ("dpm++", 100), ("dpm++", 200)]}
    assert 5 < err["ddim", 100] / err["ddim", T] < 20
    assert err["dpm++", 100] / err["dpm++", 200] > 3.5
    assert err["dpm++", 100] * 5 < err["ddim", 100]


@pytest.mark.parametrize(
    "sampler,steps,eta",
    [("ddpm", T, 0.0), ("ddpm", 50, 0.0), ("ddim", 50, 0.0), ("ddim", 50, 1.0), ("ddim", 1, 0.0),
     ("dpm++", 20, 0.0), ("dpm++", 2, 0.0), ("dpm++", 1, 0.0),
     ("dpm++3m", 20, 0.0), ("dpm++3m", 3, 0.0), ("unipc", 20, 0.0), ("unipc", 3, 0.0),
     ("dpm++sde", 20, 0.0), ("dpm++sde", 2, 0.0)],
)
def test_every_sampler_recovers_a_single_training_image(sampler, steps, eta):
    c = torch.linspace(-0.9, 0.9, 3 * 4 * 4, dtype=torch.float64).view(1, 3, 4, 4)
    frames = list(sample(PointMass(SCHEDULE, c), SCHEDULE, num_images=5, image_shape=(3, 4, 4),
                         sampler=sampler, steps=steps, eta=eta, seed=3))
    assert len(frames) == steps
    torch.testing.assert_close(frames[-1].xt, c.float().expand(5, -1, -1, -1), rtol=0, atol=1e-4)
    for f in frames:  # the x0 estimate is c at every step
        torch.testing.assert_close(f.x0, c.float().expand(5, -1, -1, -1), rtol=0, atol=2e-3)


# ---------------------------------------------------------------------------------- driver


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5), ("dpm++", 0.0),
                                        ("dpm++3m", 0.0), ("unipc", 0.0), ("dpm++sde", 0.0)])
def test_seed_fixes_the_images(unet_and_schedule, sampler, eta, one_thread):
    """Bit for bit at a fixed thread count; under changing load the thread count, and with it
    the rounding, may differ between two runs (core.threads)."""
    model, schedule, shape = unet_and_schedule
    run = lambda seed: generate(model, schedule, num_images=2, image_shape=shape, sampler=sampler,
                                steps=3, eta=eta, seed=seed)
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (2, *shape) and a.dtype == torch.float32 and a.device.type == "cpu"


@pytest.mark.parametrize("steps,stride,expected", [
    (20, 1, list(range(20))), (20, 3, [2, 5, 8, 11, 14, 17, 19]), (20, 20, [19]), (20, 50, [19]),
    (1, 4, [0]),
])
def test_frame_stride_yields_every_nth_step_and_always_the_last(steps, stride, expected):
    model = PointMass(SCHEDULE, torch.zeros(1, dtype=torch.float64))
    frames = list(sample(model, SCHEDULE, num_images=1, image_shape=(1, 2, 2), sampler="ddim",
                         steps=steps, frame_stride=stride))
    assert [f.index for f in frames] == expected
    grid = timesteps("ddim", T, steps)
    assert [f.t for f in frames] == [grid[i] for i in expected]
    assert all(isinstance(f, Frame) and f.num_steps == steps for f in frames)


def test_final_frame_is_the_generated_result_and_frames_belong_to_the_caller(unet_and_schedule):
    model, schedule, shape = unet_and_schedule
    model.train()  # the sampler must not switch the caller's mode
    frames = []
    for f in sample(model, schedule, num_images=2, image_shape=shape, sampler="ddim", steps=3):
        assert not torch.is_inference_mode_enabled()  # not leaked into the consumer
        assert not f.xt.is_inference() and f.xt.dtype == torch.float32 and f.xt.device.type == "cpu"
        frames.append(f)
        f.xt.mul_(0)  # frames are copies: changing one does not change the run
    assert model.training
    model.eval()
    final = generate(model, schedule, num_images=2, image_shape=shape, sampler="ddim", steps=3)
    assert frames[-1].x0.abs().sum() > 0
    torch.testing.assert_close(final, frames[-1].x0)  # DDIM's result is its last x0 estimate


def test_cancel_between_steps_raises_sampling_cancelled():
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    it = sample(PointMass(SCHEDULE, torch.zeros(1, dtype=torch.float64)), SCHEDULE, num_images=1,
                image_shape=(1, 2, 2), sampler="ddpm", steps=10, should_cancel=should_cancel)
    got = []
    with pytest.raises(SamplingCancelled, match=r"^Sampling cancelled\.$") as info:
        for f in it:
            got.append(f)
    assert isinstance(info.value, UserError)
    assert len(got) == 3


def test_precision_autocasts_the_model_and_frames_stay_float32():
    seen = []

    def model(x, t):
        seen.append(torch.is_autocast_enabled("cpu"))
        return torch.zeros_like(x, dtype=torch.bfloat16)

    out = generate(model, SCHEDULE, num_images=2, image_shape=(1, 4, 4), sampler="dpm++", steps=3,
                   precision=Precision(torch.bfloat16), device="cpu")
    assert seen == [True] * 3 and out.dtype == torch.float32
    generate(model, SCHEDULE, num_images=2, image_shape=(1, 4, 4), sampler="dpm++", steps=3)
    assert seen[3:] == [False] * 3


def _truncated_ode_error(sampler: str, steps: int, t_end: int = 200) -> float:
    """Max error of ``steps`` evenly spaced evaluations from T-1 down to ``t_end`` against the
    exact probability-flow map read out as E[x0 | x at t_end]: the end of the full grid, where
    log-SNR jumps do not shrink with more steps, is left out so the solvers' bulk order shows."""
    g = Gaussian(SCHEDULE)
    x_init = initial_noise(0, (GAUSS_N, *GAUSS_SHAPE))
    a_s, a_e = float(g.abar[T - 1]), float(g.abar[t_end])
    z = (x_init.double() - a_s**0.5 * g.mu) / math.sqrt(a_s * g.sd**2 + 1 - a_s)
    exact = g.mu + g.sd * (a_e**0.5 * g.sd / math.sqrt(a_e * g.sd**2 + 1 - a_e)) * z
    ts = [round(T - 1 - (T - 1 - t_end) * i / (steps - 1)) for i in range(steps)]
    fn = samplers._SAMPLER_FNS[sampler]
    x = None
    for _, x, _ in fn(EpsDenoiser(g, SCHEDULE), x_init.clone(), ts, generator=None):
        pass
    return (x.double() - exact).abs().max().item()


@pytest.mark.parametrize("sampler", ["dpm++3m", "unipc"])
def test_higher_order_samplers_converge_on_the_oracle_at_least_as_fast_as_dpmpp_2m(sampler):
    """Doubling the steps shrinks the error more than 3x (second order or better, the first-order
    final step bounds it), and at each step count it is no larger than DPM-Solver++(2M)'s."""
    err = [_truncated_ode_error(sampler, n) for n in (20, 40)]
    assert err[0] / err[1] > 3
    for n, e in zip((20, 40), err):
        assert e <= _truncated_ode_error("dpm++", n)
