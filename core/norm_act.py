"""GroupNorm then SiLU on channels-last fp32 activations, through DDPM Studio's own CPU kernels.

Channels-last convolutions are faster than NCHW ones on the CPU, but torch's channels-last
GroupNorm kernels are 2-7x slower than its NCHW ones (a 32-channel 28x28 norm at batch 32: 0.92
against 0.14 ms on 2 AVX2 cores), which cancelled the convolutions' gain: with them, autotune
found the two layouts even. ``core/_norm_act.cpp`` computes the norm and the SiLU after it in
one pass per sample, forward and backward. :class:`core.unet.NormActConv` uses it where
:func:`applies`, and :class:`core.unet.GroupNorm` without the SiLU (the norms before attention).

The kernels are a compiled extension built at install time (``setup.py``); where it could not be
built, or the CPU lacks AVX2 and FMA, :func:`available` is false and nothing here is used.
"""
from __future__ import annotations

import torch

from . import native


def available() -> bool:
    """Whether this install and this CPU run the kernels."""
    return native.kernels("_norm_act") is not None


def applies(x: torch.Tensor) -> bool:
    """Whether ``x`` is the kernels' case: fp32 (N, C, H, W) on the CPU in channels-last memory,
    C a multiple of 8."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.shape[1] % 8 == 0
            and x.is_contiguous(memory_format=torch.channels_last) and available())


def forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int, eps: float,
            silu: bool = True) -> torch.Tensor:
    """``silu(group_norm(x))`` (``group_norm(x)`` without ``silu``) for ``x`` where :func:`applies`,
    channels-last like ``x``."""
    out = torch.empty_like(x, memory_format=torch.channels_last)
    _call("forward", x, _weight(gamma), _weight(beta), out, x=x, groups=groups, eps=eps, silu=silu)
    return out


def backward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, grad: torch.Tensor, groups: int,
             eps: float, silu: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`forward` for ``x``, ``gamma`` and ``beta`` given the output's ``grad``."""
    grad = grad.contiguous(memory_format=torch.channels_last)
    dx = torch.empty_like(x, memory_format=torch.channels_last)
    dgamma, dbeta = torch.empty_like(gamma, dtype=torch.float32), torch.empty_like(beta, dtype=torch.float32)
    _call("backward", x, _weight(gamma), _weight(beta), grad, dx, dgamma, dbeta, x=x, groups=groups, eps=eps,
          silu=silu)
    return dx, dgamma.to(gamma.dtype), dbeta.to(beta.dtype)


def _weight(w: torch.Tensor) -> torch.Tensor:
    return w.detach().float().contiguous()


def _call(name: str, *tensors: torch.Tensor, x: torch.Tensor, groups: int, eps: float, silu: bool) -> None:
    n, c, h, w = x.shape
    kernel = getattr(native.kernels("_norm_act"), name)
    kernel(*(t.data_ptr() for t in tensors), n, h * w, c, groups, eps, silu, torch.get_num_threads())
