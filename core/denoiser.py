"""The network's parameterisation: what it predicts, and how samplers and the trainer read it.

A :class:`Denoiser` wraps the network (after k-diffusion's ``DiscreteEpsDDPMDenoiser``). It is
the one place the network is called, under the precision's autocast, and the one place that
knows what its output means:

* samplers call ``denoiser(x, t)`` and get a :class:`Denoised` (the noise estimate and the
  clamped x0 estimate), whatever the network predicts;
* the trainer asks it for the regression :meth:`~Denoiser.target` and the per-image
  :meth:`~Denoiser.loss_weight`, and reduces with :meth:`~Denoiser.loss`.

A new prediction type is one subclass that implements :meth:`~Denoiser.split` and
:meth:`~Denoiser.target`, registered in :data:`PREDICTIONS`, and the config field that
:func:`make_denoiser` reads to choose it. Conditioning (a label per image,
classifier-free guidance with the conditional and unconditional halves in one batched call) is
added inside :meth:`~Denoiser.network` and :meth:`~Denoiser.__call__`; samplers never see it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .config import DiffusionParams
from .device import Precision
from .schedule import NoiseSchedule

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Denoised:
    """The denoiser's reading of one network call at timestep ``t``.

    ``eps`` is the noise estimate as the network implies it (unclamped: the DDPM posterior mean
    uses it as is); ``x0`` is the clean-image estimate clamped to [-1, 1], as the tutorial does.
    """

    eps: torch.Tensor
    x0: torch.Tensor


class Denoiser:
    """A network with its schedule and parameterisation; subclasses say what the network predicts."""

    prediction: ClassVar[str]

    def __init__(self, net: Network, schedule: NoiseSchedule, *, precision: Precision | None = None) -> None:
        self.net = net
        self.schedule = schedule
        self.precision = precision

    def network(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's raw output for images ``x`` at timesteps ``t`` (B,), as float32."""
        autocast = self.precision.autocast(x.device) if self.precision is not None else contextlib.nullcontext()
        with autocast:
            return self.net(x, t).float()

    def __call__(self, x: torch.Tensor, t: int) -> Denoised:
        """One network call at timestep ``t`` for the whole batch, read as eps and clamped x0."""
        out = self.network(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        eps, x0 = self.split(x, out, t)
        return Denoised(eps, x0.clamp(-1.0, 1.0))

    # -- the parameterisation ------------------------------------------------------------------
    def split(self, xt: torch.Tensor, out: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, unclamped x0) implied by the network output ``out`` at x_t."""
        raise NotImplementedError

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output for x_t = add_noise(x0, noise, t)."""
        raise NotImplementedError

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-image weight of the squared error at timesteps ``t``; None weighs every image alike."""
        return None

    @staticmethod
    def loss(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error over the batch, each image's error times its weight when given."""
        if weight is None:
            return F.mse_loss(out, target)
        per_image = (out - target).square().mean(dim=tuple(range(1, out.ndim)))
        return (weight * per_image).mean()


class EpsDenoiser(Denoiser):
    """The network predicts the noise eps (Ho et al. 2020), the tutorial's parameterisation."""

    prediction = "eps"

    def split(self, xt: torch.Tensor, out: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        return out, self.schedule.x0_from_eps(xt, out, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise


PREDICTIONS: dict[str, type[Denoiser]] = {cls.prediction: cls for cls in (EpsDenoiser,)}


def make_denoiser(
    net: Network, schedule: NoiseSchedule, params: DiffusionParams, *, precision: Precision | None = None,
) -> Denoiser:
    """The denoiser for a network trained with ``params``: the one place a config picks the
    parameterisation (every config so far trains eps prediction, the tutorial's)."""
    return PREDICTIONS["eps"](net, schedule, precision=precision)
