"""How fast the sampling weights (an exponential moving average of the trained ones) follow.

Two ways to say it. ``ema_decay`` is the tutorial's per-step factor. A half-life in images
(EDM, Karras et al. 2022: ``ema_halflife_kimg``) says how long the average remembers in terms
that do not change with the batch size; with a ramp-up (``ema_rampup``) the half-life is at most
that fraction of the images seen so far, so a short run's average is not dominated by its
random start (``ema_decay`` has its own warm-up for that, ``core.trainer.ema_decay_at``).
"""
from __future__ import annotations

import torch


def ema_beta(images_seen: int, batch_images: int, halflife_kimg: float, rampup: float | None) -> float:
    """The per-step decay after a step of ``batch_images`` that brought the total to ``images_seen``.

    beta = 0.5 ** (batch / halflife), so after ``halflife`` images the old average weighs one half
    (EDM's training loop, ``training_loop.py``).
    """
    halflife = halflife_kimg * 1000.0
    if rampup is not None:
        halflife = min(halflife, images_seen * rampup)
    return 0.5 ** (batch_images / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model, parameter by parameter (beta 0 copies)."""
    ema_params = list(ema.parameters())
    params = list(model.parameters())
    if beta == 0:
        torch._foreach_copy_(ema_params, params)
    else:
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
