"""The noise schedule: the forward process q(x_t | x_0), its posterior, and respacing.

This module is the one home of the schedule's formulas: the tables, noising, the conversions
between x_t, x_0 and eps, and the DDPM posterior. Tables are computed in float64 and stored in
float32 (the cumulative product over 1000 steps loses precision otherwise), following lucidrains
and EDM; ``alpha_cum_prod64`` keeps the float64 products for samplers that accumulate.
Timesteps are 0-based as in the tutorial: ``t = 0`` is the last reverse step, where no noise is
added.
"""
from __future__ import annotations

import copy
import math
from typing import Literal

import torch

from .config import DiffusionParams

ScheduleKind = Literal["linear", "cosine"]


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Ho et al. 2020: betas evenly spaced from ``beta_start`` to ``beta_end``."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar follows a squared cosine, betas capped at 0.999."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def _gather(table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """``table[t]`` shaped to broadcast over a batch of images like ``like``."""
    t = torch.as_tensor(t, device=table.device).long()
    v = table[t].to(device=like.device, dtype=like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device.

    Drawing on the generator's own device (usually the CPU) makes a seed give the same images
    whichever device runs the model.
    """
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x.device, x.dtype)


def log_snr(abar: float) -> float:
    """Half the log signal-to-noise ratio, log(sqrt(abar) / sqrt(1 - abar)) (DPM-Solver's lambda)."""
    return 0.5 * (math.log(abar) - math.log1p(-abar))


class NoiseSchedule:
    """Betas and their derived tables, with the tutorial's forward and reverse formulas."""

    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        kind: ScheduleKind = "linear",
    ) -> None:
        if kind == "linear":
            betas = linear_betas(num_timesteps, beta_start, beta_end)
        elif kind == "cosine":
            betas = cosine_betas(num_timesteps)
        else:
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind = kind
        self._set_tables(betas, torch.cumprod(1.0 - betas, dim=0))

    def _set_tables(self, betas: torch.Tensor, abar: torch.Tensor) -> None:
        """Every table from float64 betas and their cumulative products ``abar``."""
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        self.num_timesteps = len(betas)
        self.betas = betas.float()
        self.alphas = (1.0 - betas).float()
        self.alpha_cum_prod = abar.float()
        self.alpha_cum_prod64 = abar
        self.sqrt_alpha_cum_prod = abar.sqrt().float()
        self.sqrt_one_minus_alpha_cum_prod = (1 - abar).sqrt().float()
        # (1 - a_t)(1 - abar_{t-1}) / (1 - abar_t); zero at t = 0 where no noise is added
        self.posterior_variance = (betas * (1 - abar_prev) / (1 - abar)).float()
        self.posterior_variance[0] = 0.0

    @classmethod
    def from_config(cls, params: DiffusionParams) -> NoiseSchedule:
        return cls(params.num_timesteps, params.beta_start, params.beta_end, params.schedule)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy whose float32 tables live on ``device``, so that indexing them by a batch of
        timesteps on that device needs no host round trip (the float64 tables stay on the CPU:
        samplers read scalars from them)."""
        new = copy.copy(self)
        for name in ("betas", "alphas", "alpha_cum_prod", "sqrt_alpha_cum_prod",
                     "sqrt_one_minus_alpha_cum_prod", "posterior_variance"):
            setattr(new, name, getattr(self, name).to(device))
        return new

    def log_snr_table(self) -> torch.Tensor:
        """log(abar_t / (1 - abar_t)) per step, float64: twice :func:`log_snr`'s lambda, the
        signal-to-noise ratio of x_t on the scale where schedules are compared (Kingma et al.
        2021), finite even where abar_t ~ 0."""
        abar = self.alpha_cum_prod64
        return abar.log() - torch.log1p(-abar)

    # -- conversions between x_t, x_0 and eps -------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, one t per image."""
        return _gather(self.sqrt_alpha_cum_prod, t, x0) * x0 + _gather(self.sqrt_one_minus_alpha_cum_prod, t, x0) * noise

    def signal_noise(self, t: torch.Tensor | int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) shaped to broadcast over a batch like ``like``."""
        return _gather(self.sqrt_alpha_cum_prod, t, like), _gather(self.sqrt_one_minus_alpha_cum_prod, t, like)

    def x0_from_eps(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The x_0 that ``eps`` implies (not clamped): (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return (xt - _gather(self.sqrt_one_minus_alpha_cum_prod, t, xt) * eps) / _gather(self.sqrt_alpha_cum_prod, t, xt)

    def eps_from_x0(self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The eps that ``x0`` implies: (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
        return (xt - _gather(self.sqrt_alpha_cum_prod, t, xt) * x0) / _gather(self.sqrt_one_minus_alpha_cum_prod, t, xt)

    def predict_x0(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The x_0 that ``eps`` implies, clamped to the image range [-1, 1]."""
        return self.x0_from_eps(xt, eps, t).clamp(-1.0, 1.0)

    # -- the reverse process ---------------------------------------------------------------------
    def posterior_mean(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """(x_t - (1 - a_t) / sqrt(1 - abar_t) eps) / sqrt(a_t): the tutorial's mean, from unclamped eps."""
        coef = _gather(self.betas, t, xt) / _gather(self.sqrt_one_minus_alpha_cum_prod, t, xt)
        return (xt - coef * eps) / _gather(self.alphas, t, xt).sqrt()

    def ancestral_step(self, xt: torch.Tensor, eps: torch.Tensor, t: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """x_{t-1} drawn from the posterior given x_t and eps; at t = 0, its mean (no noise)."""
        mean = self.posterior_mean(xt, eps, t)
        if t == 0:
            return mean
        return mean + float(self.posterior_variance[t]) ** 0.5 * randn_like(xt, generator)

    def step(
        self,
        xt: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tutorial's reverse step from t to t-1: returns (x_{t-1}, clamped x0 estimate)."""
        return self.ancestral_step(xt, eps, t, generator), self.predict_x0(xt, eps, t)
