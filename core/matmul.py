"""fp32 linear layers on AVX2 CPUs by DDPM Studio's own register tiles (``core/_matmul.h``).

On 2 AVX2 EPYC cores torch's sgemm (MKL) ran the tutorial network's products, a few hundred to
78,400 rows of 64 to 256 channels, at 98-133 GFLOP/s, and these tiles at 129-179: attention's
input projections of 784 tokens at batch 100, (78,400 x 64) by (64 x 192), 101 against 157.
:mod:`core.narrow_attention` runs attention's projections through :func:`linear`, and
:func:`pointwise` the 1x1 convolutions of channels-last activations, in sampling. Sums run in
another order than sgemm's, so results differ from torch's within fp32 rounding.

The kernels are a compiled extension built at install time (``setup.py``); where it could not be
built, or the CPU lacks AVX2 and FMA, :func:`applies` is false and torch's ``F.linear`` runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import native


def available() -> bool:
    """Whether this install and this CPU run the kernels."""
    return native.kernels("_matmul") is not None


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes ``F.linear(x, weight)``: fp32 on the CPU outside autocast, out
    features a multiple of 8."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and weight.shape[0] % 8 == 0
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu") and available())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           added: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias) + added`` of values no gradient flows through, ``added`` shaped
    as the output (a residual, which the tiles add as they write the output rather than in a pass
    of its own over it): by the register tiles where :func:`applies`, else torch's."""
    if not applies(x, weight):
        out = F.linear(x, weight, bias)
        return out if added is None else out + added
    out_features, in_features = weight.shape
    source, weight = x.detach().contiguous(), weight.detach().contiguous()
    out = x.new_empty((*x.shape[:-1], out_features))
    if added is not None and added.shape != out.shape:
        raise ValueError(f"linear: added is {tuple(added.shape)}, the output {tuple(out.shape)}")
    bias, added = native.readable(bias), native.readable(added)
    native.kernels("_matmul").linear(
        source.data_ptr(), weight.data_ptr(), 0 if bias is None else bias.data_ptr(),
        0 if added is None else added.data_ptr(), out.data_ptr(), x.numel() // in_features, in_features,
        out_features, torch.get_num_threads())
    return out


def pointwise_applies(x: torch.Tensor) -> bool:
    """Whether :func:`pointwise` takes a 1x1 convolution of ``x``: channels-last images, no
    gradients to follow."""
    return not torch.is_grad_enabled() and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for 1x1 ``weight`` (C_out, C_in, 1, 1) and ``x`` where
    :func:`pointwise_applies`: :func:`linear` over each pixel's channels, channels-last out."""
    # a channels-last (N, C, H, W) tensor is a contiguous (N, H, W, C) one
    return linear(x.permute(0, 2, 3, 1), weight.reshape(weight.shape[:2]), bias).permute(0, 3, 1, 2)
