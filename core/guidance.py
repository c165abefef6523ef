"""Classifier-free guidance (Ho & Salimans 2022): one network, asked with and without a class.

Convention: ``out = out_uncond + w * (out_cond - out_uncond)`` on the network's output (for
the tutorial's eps prediction, ``eps = eps_uncond + w * (eps_cond - eps_uncond)``; any
parameterisation whose eps and x0 are linear in the output gets the same guided eps and x0).
``w = 0`` ignores the class (the unconditional model), ``w = 1`` is the plain conditional model,
``w > 1`` pushes samples further towards what distinguishes the class, trading variety for
fidelity.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import UserError

ClassNetwork = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def check_request(labels: torch.Tensor, num_images: int, scale: float) -> None:
    """One class per image, and a scale the convention gives a meaning to."""
    if len(labels) != num_images:
        raise UserError(f"labels must give one class per image ({num_images}); got {len(labels)}.")
    if not scale >= 0:
        raise UserError(f"guidance must be 0 (unconditional) or more; got {scale}.")


def guided(network: ClassNetwork, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
           null_class: int, scale: float) -> torch.Tensor:
    """The guided output for images ``x`` at timesteps ``t`` (B,) of classes ``labels`` (B,).

    Both branches run in one call on a doubled batch (the images twice; the labels, then "no
    class"), so a guided step is one network call on twice the images. At ``w = 0`` and ``w = 1``
    one branch is the answer and only it runs. ``network`` returns float32.
    """
    y = labels.to(x.device)
    null = torch.full_like(y, null_class)
    if scale == 1.0:
        return network(x, t, y)
    if scale == 0.0:
        return network(x, t, null)
    cond, uncond = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
    return uncond + scale * (cond - uncond)
