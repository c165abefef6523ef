"""Classifier-free guidance (Ho & Salimans 2022): one model, asked with and without a class.

Convention: ``eps = eps_uncond + w * (eps_cond - eps_uncond)``. ``w = 0`` ignores the class
(the unconditional model), ``w = 1`` is the plain conditional model, ``w > 1`` pushes samples
further towards what distinguishes the class, trading variety for fidelity.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .choices import DEFAULT_GUIDANCE


class Guided:
    """A conditional model as a plain noise predictor ``(x, t) -> eps`` for fixed labels.

    Both branches run in one forward pass of a doubled batch (the images twice; the labels, then
    "no class"), so a guided step costs one model call of twice the batch. At ``w = 0`` and
    ``w = 1`` one branch is the answer and only it runs. The mix is computed in float32.
    """

    def __init__(self, model: nn.Module, labels: torch.Tensor, scale: float = DEFAULT_GUIDANCE) -> None:
        self.model = model
        self.labels = labels.long()
        self.scale = float(scale)

    def parameters(self) -> Iterator[nn.Parameter]:
        """The model's, so that callers find its device."""
        return self.model.parameters()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = self.labels.to(x.device)
        null = torch.full_like(y, self.model.null_class)
        if self.scale == 1.0:
            return self.model(x, t, y)
        if self.scale == 0.0:
            return self.model(x, t, null)
        eps_cond, eps_uncond = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).float().chunk(2)
        return eps_uncond + self.scale * (eps_cond - eps_uncond)
