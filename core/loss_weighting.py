"""Per-timestep weights of the training loss.

Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
Strategy"): the low-noise timesteps, whose targets are easy, dominate the gradient of the plain
loss and conflict with the high-noise ones that decide the layout. Clamping each step's weight
at SNR = gamma (in x0-loss terms) balances them; the paper reports about 3.4x faster
convergence with gamma = 5. Expressed for the target the network is trained on:
eps-prediction gets min(SNR, gamma) / SNR, v-prediction min(SNR, gamma) / (SNR + 1).
"""
from __future__ import annotations

from typing import Literal

import torch

LossWeighting = Literal["none", "min_snr"]
Prediction = Literal["eps", "v"]


def snr(alpha_cum_prod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio abar / (1 - abar) of the noised image at each timestep."""
    return alpha_cum_prod / (1.0 - alpha_cum_prod)


def min_snr_weight(alpha_cum_prod: torch.Tensor, gamma: float, prediction: Prediction) -> torch.Tensor:
    """The Min-SNR-gamma weight of each timestep's loss for the given prediction target."""
    s = snr(alpha_cum_prod)
    clipped = s.clamp(max=gamma)
    if prediction == "eps":
        return clipped / s
    if prediction == "v":
        return clipped / (s + 1.0)
    raise ValueError(f"unknown prediction {prediction!r}")


def loss_weights(
    kind: LossWeighting, alpha_cum_prod: torch.Tensor, gamma: float, prediction: Prediction
) -> torch.Tensor | None:
    """The table of per-timestep weights for a weighting, or None for the plain (unweighted) loss."""
    if kind == "none":
        return None
    if kind == "min_snr":
        return min_snr_weight(alpha_cum_prod, gamma, prediction)
    raise ValueError(f"unknown loss_weighting {kind!r}")
