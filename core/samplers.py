"""Turning noise into images: the tutorial's ancestral DDPM sampler, DDIM, DPM-Solver++ (2M, 3M
and 2M SDE) and UniPC.

Laid out as in k-diffusion: each sampler is a pure generator function with one signature,
``sampler(denoiser, x, ts, *, generator, **options)``, that yields ``(t, x_next, x0)`` after
every step, and the step grid comes from one small function, :func:`timesteps`. A sampler reads
the network only through the :class:`~core.denoiser.Denoiser` (eps and the clamped x0), and the
schedule's conversions; what the network predicts, and how it is conditioned, is not its
concern. :func:`sample` validates, draws the initial noise, checks for cancellation between
steps and turns steps into :class:`Frame` objects for the animation view.

A new sampler is one function here, decorated with :func:`_registers`, and one row of
:data:`core.choices.SAMPLER_TABLE` (its title, default steps and options).

Conventions
-----------
* Timesteps are 0-based as in the tutorial and :mod:`core.schedule`: the model sees ``t`` in
  ``[0, T-1]``; a step from grid entry ``t`` goes to the next grid entry, and the last step goes
  to the clean image (``abar = 1``).
* Every random draw (the initial noise and each DDPM/DDIM noise term) comes from one CPU
  ``torch.Generator`` seeded with ``seed`` and passed to :func:`core.schedule.randn_like`, so a
  seed gives the same images on the CPU, CUDA or MPS.
* The model runs under ``torch.inference_mode()`` and, when the denoiser has a precision, under
  its autocast; its output is cast to float32 and the samplers' own coefficients are float64
  scalars.
* The model's train/eval mode is left as the caller set it: call ``model.eval()`` first (the
  tutorial's UNet has no dropout or batch norm, so this only matters for other models).
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from . import threads
from .choices import SAMPLER_SPECS, SAMPLERS
from .denoiser import Denoiser
from .errors import UserError
from .schedule import log_snr, randn_like

StepIter = Iterator[tuple[int, torch.Tensor, torch.Tensor]]
SamplerFn = Callable[..., StepIter]


class SamplingCancelled(UserError):
    """``should_cancel()`` returned true between two steps."""

    def __init__(self) -> None:
        super().__init__("Sampling cancelled.")


@dataclass(frozen=True)
class Frame:
    """One denoising step for display: the state after step ``index`` and its x0 estimate.

    ``index`` counts steps from 0, ``t`` is the timestep the model saw at that step, ``xt`` and
    ``x0`` are float32 CPU tensors (B, C, H, W) that belong to the caller. On the final frame
    ``xt`` is the result: on DDPM's full chain the t = 0 posterior mean (as in the tutorial; not
    clamped, exports clamp), else the clamped x0 estimate.
    """

    index: int
    num_steps: int
    t: int
    xt: torch.Tensor
    x0: torch.Tensor


# ---------------------------------------------------------------------------------- step grid


def timesteps(sampler: str, num_timesteps: int, steps: int | None = None) -> list[int]:
    """The timesteps the model is evaluated at, in sampling order (descending).

    ``steps`` entries evenly spaced over ``[0, T-1]`` including both ends ("linspace" spacing,
    rounded half up in integer arithmetic): it always starts at T-1, where the initial noise is
    closest to the training distribution, and ends at 0, so the last model call sees the
    least-noised input; the entries are distinct because the spacing (T-1)/(steps-1) is at least
    1. ``steps == 1`` gives ``[T-1]``: one jump from pure noise to the x0 estimate. ``steps == T``
    gives the tutorial's ``T-1, ..., 0``. One grid serves every sampler, so switching samplers
    at the same step count compares like with like.
    """
    _check_sampler(sampler)
    steps = _resolve_steps(sampler, num_timesteps, steps)
    if steps == 1:
        return [num_timesteps - 1]
    last, gaps = num_timesteps - 1, steps - 1
    return [(2 * last * (gaps - i) + gaps) // (2 * gaps) for i in range(steps)]


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLER_SPECS:
        raise UserError(f"Unknown sampler '{sampler}'; choose one of: {', '.join(SAMPLERS)}.")


def default_steps(sampler: str, num_timesteps: int) -> int:
    """The step count used when none is given: the sampler's row, capped at ``num_timesteps``."""
    _check_sampler(sampler)
    default = SAMPLER_SPECS[sampler].default_steps
    return num_timesteps if default is None else min(default, num_timesteps)


def _resolve_steps(sampler: str, num_timesteps: int, steps: int | None) -> int:
    if steps is None:
        return default_steps(sampler, num_timesteps)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise UserError(
            f"steps must be a whole number from 1 to {num_timesteps} (the model's num_timesteps) "
            f"for the {sampler} sampler; got {steps!r}."
        )
    return steps


def resolve_options(sampler: str, options: Mapping[str, float] | None) -> dict[str, float]:
    """Every option of ``sampler``'s row, given or default; an option it lacks or a value out of
    range is a :class:`UserError` naming the option and its range."""
    spec = SAMPLER_SPECS[sampler]
    given = dict(options or {})
    for name in given:
        if spec.option(name) is None:
            takers = [s.name for s in SAMPLER_SPECS.values() if s.option(name) is not None]
            raise UserError(f"{name} applies to the {' and '.join(takers) or 'no'} sampler only, not {sampler}.")
    resolved = {}
    for option in spec.options:
        value = given.get(option.name, option.default)
        if not option.low <= value <= option.high:
            raise UserError(f"{option.name} must be between {option.low:g} and {option.high:g} "
                            f"({option.help}); got {value}.")
        resolved[option.name] = value
    return resolved


# ---------------------------------------------------------------------------------- samplers

_SAMPLER_FNS: dict[str, SamplerFn] = {}


def _registers(name: str) -> Callable[[SamplerFn], SamplerFn]:
    """Make ``fn`` the function of the sampler table's row ``name``."""

    def register(fn: SamplerFn) -> SamplerFn:
        _check_sampler(name)
        _SAMPLER_FNS[name] = fn
        return fn

    return register


@_registers("ddpm")
def sample_ddpm(denoiser: Denoiser, x: torch.Tensor, ts: Sequence[int], *,
                generator: torch.Generator | None) -> StepIter:
    """Ho et al. 2020's ancestral sampler.

    On the full grid it is the tutorial's chain, bit for bit: the posterior mean from the
    network's eps, unclamped. On a shorter grid (the app's default of 20 steps) the mean comes
    from the x0 estimate clamped to [-1, 1], as in Ho et al.'s own code (``clip_denoised``) and
    diffusers (``clip_sample``): an unfinished model's eps can imply an x0 far outside the
    image range, and the unclamped chain follows it; after ten minutes of the RGB preset it
    ended at pixel values of +-13, at 20 steps and at 1000, where the clamped one stayed in range
    (docs/quality/README.md). The full chain keeps the tutorial's step because its fixtures and
    checkpoints promise it. With x0 clamped, DDPM's posterior step on the respaced grid is
    DDIM's at eta = 1 (Song et al. 2020, eq. 16), so that is how it runs.
    """
    schedule = denoiser.schedule
    if len(ts) < schedule.num_timesteps:
        yield from sample_ddim(denoiser, x, ts, generator=generator, eta=1.0)
        return
    for t in ts:
        d = denoiser(x, t)
        x = schedule.ancestral_step(x, d.eps, t, generator)
        yield t, x, d.x0


@_registers("ddim")
def sample_ddim(denoiser: Denoiser, x: torch.Tensor, ts: Sequence[int], *,
                generator: torch.Generator | None, eta: float) -> StepIter:
    """Song et al. 2020, eq. 12: deterministic at ``eta = 0``, the DDPM posterior at ``eta = 1``."""
    abar = denoiser.schedule.alpha_cum_prod64
    for i, t in enumerate(ts):
        abar_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        mean, std, x0 = _ddim_mean_std(denoiser, x, t, abar_prev, eta)
        x = mean + std * randn_like(x, generator) if std > 0 else mean
        yield t, x, x0


def _ddim_mean_std(
    denoiser: Denoiser, x: torch.Tensor, t: int, abar_prev: float, eta: float,
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Mean and std of x_prev given x_t, and the clamped x0 estimate.

    After clamping, eps is recomputed from x0 (diffusers' ``clip_sample``) so that x_t, x0 and eps
    stay one consistent decomposition. sigma_t = eta sqrt((1 - abar_prev) / (1 - abar_t))
    sqrt(1 - abar_t / abar_prev), which at eta = 1 is the DDPM posterior variance.
    """
    x0 = denoiser(x, t).x0
    eps = denoiser.schedule.eps_from_x0(x, x0, t)
    abar_t = float(denoiser.schedule.alpha_cum_prod64[t])
    var = eta**2 * (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    mean = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - var, 0.0)) * eps
    return mean, math.sqrt(var), x0


@_registers("dpm++")
def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, ts: Sequence[int], *,
                    generator: torch.Generator | None) -> StepIter:
    """DPM-Solver++(2M) (Lu et al. 2022, alg. 2), data prediction, discrete-time VP.

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and
    h = lambda_next - lambda_t, each step is x <- (sigma_next / sigma_t) x - alpha_next
    expm1(-h) D, where D is the x0 estimate (first order) or the multistep extrapolation
    (1 + 1/2r) x0 - (1/2r) x0_prev with r = h_prev / h (second order). The first step has no
    history and is first order. The last step goes to sigma = 0, where the first-order update is
    exactly the x0 estimate. The step into t = 0 is first order too ("lower_order_final" at every
    step count): an evenly spaced grid ends with the largest jump in lambda (beta_0 = 1e-4 puts
    lambda(0) near 4.6), where extrapolating x0 linearly in lambda overshoots; on Gaussian data
    this keeps 100 steps within 1e-3 of the exact ODE solution instead of 4e-2. The x0 estimate
    is clamped to [-1, 1] as in the tutorial.
    """
    abar = denoiser.schedule.alpha_cum_prod64
    x0_prev: torch.Tensor | None = None
    lam_prev = 0.0
    for i, t in enumerate(ts):
        a_t = float(abar[t])
        x0 = denoiser(x, t).x0
        lam_t = log_snr(a_t)
        if i + 1 == len(ts):
            x = x0
        else:
            a_next = float(abar[ts[i + 1]])
            h = log_snr(a_next) - lam_t
            d = x0
            if x0_prev is not None and i + 2 < len(ts):
                r = (lam_t - lam_prev) / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = math.sqrt((1 - a_next) / (1 - a_t)) * x - math.sqrt(a_next) * math.expm1(-h) * d
        x0_prev, lam_prev = x0, lam_t
        yield t, x, x0


@_registers("dpm++sde")
def sample_dpmpp_2m_sde(denoiser: Denoiser, x: torch.Tensor, ts: Sequence[int], *,
                        generator: torch.Generator | None) -> StepIter:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, sec. 5 and app. B; the midpoint form of
    k-diffusion's ``sample_dpmpp_2m_sde`` at eta = 1), data prediction, discrete-time VP.

    Why it is here: on young models the stochastic DDPM step beats every ODE solver, because the
    noise it adds back lets later steps correct the network's errors (docs/quality/README.md).
    This sampler's first-order step *is* DDPM's respaced step from the clamped x0; its second
    order adds the multistep correction of DPM-Solver++(2M) and still adds the fresh noise.
    With h = lambda_next - lambda_t, each step is
    x <- (sigma_next / sigma_t) e^-h x + alpha_next (1 - e^-2h) D + sigma_next sqrt(1 - e^-2h) z,
    D = x0 + (1/2r) (x0 - x0_prev) with r = h_prev / h, or x0 itself on the first step and
    into t = 0 (as in :func:`sample_dpmpp_2m`). The last step returns the x0 estimate.
    """
    abar = denoiser.schedule.alpha_cum_prod64
    x0_prev: torch.Tensor | None = None
    h_prev = 0.0
    for i, t in enumerate(ts):
        x0 = denoiser(x, t).x0
        if i + 1 == len(ts):
            x = x0
        else:
            a_t, a_next = float(abar[t]), float(abar[ts[i + 1]])
            h = log_snr(a_next) - log_snr(a_t)
            kept = -math.expm1(-2 * h)  # 1 - e^-2h: the share of x0 (and of fresh noise) in the step
            d = x0
            if x0_prev is not None and i + 2 < len(ts):
                d = x0 + (h / (2 * h_prev)) * (x0 - x0_prev)
            x = (math.sqrt((1 - a_next) / (1 - a_t)) * math.exp(-h) * x + math.sqrt(a_next) * kept * d
                 + math.sqrt((1 - a_next) * kept) * randn_like(x, generator))
            h_prev = h
        x0_prev = x0
        yield t, x, x0


@_registers("dpm++3m")
def sample_dpmpp_3m(denoiser: Denoiser, x: torch.Tensor, ts: Sequence[int], *,
                    generator: torch.Generator | None) -> StepIter:
    """DPM-Solver++(3M) (Lu et al. 2022, the third-order multistep update of their reference
    ``dpm_solver_pytorch``), data prediction, discrete-time VP.

    The update from lambda_i to lambda_next, h = lambda_next - lambda_i, with the x0 estimates
    D0, D1, D2 at the last three grid points and r0 = h_0 / h, r1 = h_1 / h the earlier gaps:
    x <- (sigma_next / sigma_i) x - alpha_next (phi1 D0 - phi2 d1 + phi3 d2), where
    phi1 = expm1(-h), phi2 = phi1 / h + 1, phi3 = phi2 / h - 1/2, d1 and d2 the first and second
    divided differences of D in lambda. The order is lowered where history is missing (first
    two steps) and on the last two steps, for the reason :func:`sample_dpmpp_2m` gives.
    """
    abar = denoiser.schedule.alpha_cum_prod64
    hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0) of the latest grid points, newest last
    for i, t in enumerate(ts):
        a_t = float(abar[t])
        x0 = denoiser(x, t).x0
        lam_t = log_snr(a_t)
        hist = (hist + [(lam_t, x0)])[-3:]
        if i + 1 == len(ts):
            x = x0
        else:
            a_next = float(abar[ts[i + 1]])
            h = log_snr(a_next) - lam_t
            order = min(3, len(hist), len(ts) - 1 - i)
            phi1 = math.expm1(-h)
            d = -phi1 * x0
            if order >= 2:
                lam1, m1 = hist[-2]
                r0 = (lam_t - lam1) / h
                d1_0 = (x0 - m1) / r0
                if order == 2:
                    d = d - 0.5 * phi1 * d1_0  # DPM-Solver++(2M): (1/2r) (D0 - D1) times -phi1
                else:
                    lam2, m2 = hist[-3]
                    r1 = (lam1 - lam2) / h
                    d1_1 = (m1 - m2) / r1
                    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    phi2 = phi1 / h + 1
                    phi3 = phi2 / h - 0.5
                    d = d + phi2 * d1 - phi3 * d2
            x = math.sqrt((1 - a_next) / (1 - a_t)) * x + math.sqrt(a_next) * d
        yield t, x, x0


@_registers("unipc")
def sample_unipc(denoiser: Denoiser, x: torch.Tensor, ts: Sequence[int], *,
                 generator: torch.Generator | None) -> StepIter:
    """UniPC (Zhao et al. 2023) with B(h) = expm1(h) ("bh2"), data prediction, order 2.

    Each step predicts with UniP (multistep, like DPM-Solver++) and, once the model has been
    evaluated at the predicted point, corrects that point with UniC using the new evaluation:
    the corrector raises the order by one at no extra model call (the evaluation is the next
    step's anyway). Laid out after diffusers' ``UniPCMultistepScheduler`` (solver_order=2,
    bh2, predict_x0); the first step is first order, and so is the step into t = 0.
    """
    abar = denoiser.schedule.alpha_cum_prod64
    hist: list[tuple[float, float, torch.Tensor]] = []  # (lambda, abar, x0) of the latest points, newest last
    x_prev: torch.Tensor | None = None  # the sample the last prediction started from
    prev_order = 1
    for i, t in enumerate(ts):
        a_t = float(abar[t])
        x0 = denoiser(x, t).x0
        lam_t = log_snr(a_t)
        if x_prev is not None and i + 1 < len(ts):  # UniC: correct the predicted x with the x0 there
            x = _unipc_update(x_prev, hist, lam_t, a_t, prev_order, x0)
        hist = (hist + [(lam_t, a_t, x0)])[-2:]
        if i + 1 == len(ts):
            x = x0
        else:
            a_next = float(abar[ts[i + 1]])
            prev_order = min(2, len(hist), len(ts) - 1 - i)
            x_prev = x
            x = _unipc_update(x, hist, log_snr(a_next), a_next, prev_order, None)
        yield t, x, x0


def _unipc_update(x: torch.Tensor, hist: list[tuple[float, float, torch.Tensor]], lam_next: float, a_next: float,
                  order: int, x0_next: torch.Tensor | None) -> torch.Tensor:
    """UniP (``x0_next`` None) or UniC (with the x0 estimate at the target) of order ``order``
    from the newest point of ``hist`` to log-SNR ``lam_next``; bh2, data prediction.

    x_next = (sigma_next / sigma_0) x - alpha_next phi1 D0 - alpha_next B(h) sum_k rho_k D1_k,
    h = lam_next - lam_0, phi1 = expm1(-h), B(h) = expm1(-h), D1_k = (D_k - D0) / r_k the
    scaled differences to earlier points (r_k = (lam_k - lam_0) / h) and, for UniC, to the target
    point (r = 1). The rho solve the order conditions R rho = b of the paper's eq. 8; order 2
    UniP uses rho = 1/2 as diffusers does, and first-order UniC rho = 1/2.
    """
    lam0, a0, d0 = hist[-1]
    h = lam_next - lam0
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = math.expm1(hh)
    rks, diffs = [], []
    for k in range(1, order):
        lam_k, _, d_k = hist[-(k + 1)]
        rk = (lam_k - lam0) / h
        rks.append(rk)
        diffs.append((d_k - d0) / rk)
    if x0_next is not None:
        rks.append(1.0)
        diffs.append(x0_next - d0)
    x_next = math.sqrt((1 - a_next) / (1 - a0)) * x - math.sqrt(a_next) * h_phi_1 * d0
    if not diffs:
        return x_next
    rhos = _unipc_rhos(rks if x0_next is not None else rks + [1.0], hh, b_h, corrector=x0_next is not None)
    res = sum(r * dk for r, dk in zip(rhos, diffs))
    return x_next - math.sqrt(a_next) * b_h * res


def _unipc_rhos(rks: list[float], hh: float, b_h: float, *, corrector: bool) -> list[float]:
    """The UniPC coefficients: solve R rho = b with R[i][k] = r_k ** i and
    b_i = i! phi_{i+1}(hh) / B(h) (diffusers' recursion), R and b cut to the unknowns."""
    n = len(rks)
    h_phi_k = math.expm1(hh) / hh - 1
    factorial = 1
    b = []
    for i in range(1, n + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    if corrector:
        if n == 1:
            return [0.5]
        r = torch.tensor([[rk ** i for rk in rks] for i in range(n)], dtype=torch.float64)
        return torch.linalg.solve(r, torch.tensor(b, dtype=torch.float64)).tolist()
    if n == 2:  # order-2 predictor: one difference
        return [0.5]
    r = torch.tensor([[rk ** i for rk in rks[:-1]] for i in range(n - 1)], dtype=torch.float64)
    return torch.linalg.solve(r, torch.tensor(b[:-1], dtype=torch.float64)).tolist()


# ---------------------------------------------------------------------------------- driver


def sample(
    denoiser: Denoiser,
    *,
    num_images: int,
    image_shape: Sequence[int],
    sampler: str = "ddpm",
    steps: int | None = None,
    options: Mapping[str, float] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    frame_stride: int = 1,
    should_cancel: Callable[[], bool] | None = None,
) -> Iterator[Frame]:
    """Sample ``num_images`` images of ``image_shape`` (C, H, W), yielding frames as it goes.

    ``steps`` defaults to the sampler's row of the table; ``options`` (such as DDIM's ``eta``)
    only those its row lists. ``device`` defaults to the network's. A frame is yielded after
    steps frame_stride, 2*frame_stride, ... and always after the final step. ``should_cancel()``
    is called before every step; when it returns true, :class:`SamplingCancelled` is raised.
    Arguments are checked here, before the first ``next()``.
    """
    ts = timesteps(sampler, denoiser.schedule.num_timesteps, steps)
    resolved = resolve_options(sampler, options)
    if num_images < 1:
        raise UserError(f"num_images must be at least 1; got {num_images}.")
    if frame_stride < 1:
        raise UserError(f"frame_stride must be at least 1; got {frame_stride}.")
    device = torch.device(device) if device is not None else _model_device(denoiser.net)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((num_images, *image_shape), generator=generator, dtype=torch.float32).to(device)
    steps_iter = _SAMPLER_FNS[sampler](denoiser, x, ts, generator=generator, **resolved)
    return _frames(steps_iter, len(ts), frame_stride, should_cancel, threads.for_device(device))


def _frames(steps_iter: StepIter, num_steps: int, stride: int, should_cancel: Callable[[], bool] | None,
            controller: threads.ThreadController) -> Iterator[Frame]:
    # inference mode only around each step, never across a yield: the consumer's code runs
    # between steps and must not find itself in inference mode
    with controller:
        for i in range(num_steps):
            if should_cancel is not None and should_cancel():
                raise SamplingCancelled()
            with controller.step(), torch.inference_mode():
                t, xt, x0 = next(steps_iter)
            if (i + 1) % stride == 0 or i + 1 == num_steps:
                yield Frame(i, num_steps, t, _to_cpu(xt), _to_cpu(x0))


def _to_cpu(x: torch.Tensor) -> torch.Tensor:
    """A float32 CPU copy outside inference mode: an ordinary tensor the caller may modify."""
    return x.to("cpu", torch.float32, copy=True)


def _model_device(model: object) -> torch.device:
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def final_images(frames: Iterator[Frame]) -> torch.Tensor:
    """The result of a run of :func:`sample`: its last frame's ``xt``."""
    final = None
    for final in frames:
        pass
    assert final is not None
    return final.xt


def generate(denoiser: Denoiser, **kwargs) -> torch.Tensor:
    """The final images of :func:`sample` (float32 CPU, (N, C, H, W)), without per-step copies."""
    return final_images(sample(denoiser, frame_stride=sys.maxsize, **kwargs))
