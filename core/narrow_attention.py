"""Exact attention for narrow fp32 heads on the CPU through DDPM Studio's own kernels.

torch's fused CPU attention runs heads of 4 to 16 channels (the tutorial's network has 4 and 16)
well below what the arithmetic needs, in the backward pass above all, and it can only run
4-channel heads zero-padded to 16 (:func:`core.attention._sdpa`). ``core/_narrow_attention.cpp``
computes the same flash-attention passes with AVX2 register tiles; on a 2-core AVX2 EPYC one
784-token layer at batch 32 took 0.166 s forward+backward with 16-channel heads against sdpa's
0.226 s, and 0.102 against 0.233 s with 4-channel heads; the tutorial's fp32 training step went
from 5.4-5.7 to 4.0-4.2 s (README, "Speed").

The kernels are a compiled extension built at install time (``setup.py``); where it could not be
built, or the CPU lacks AVX2 and FMA, :func:`available` is false and nothing here is used.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

HEAD_WIDTHS = (4, 8, 16)


@functools.cache
def _kernels() -> Any:
    try:
        from . import _narrow_attention
    except ImportError:
        return None
    return _narrow_attention if _narrow_attention.supported() else None


def available() -> bool:
    """Whether this install and this CPU run the kernels."""
    return _kernels() is not None


def applies(q: torch.Tensor) -> bool:
    """Whether (B, heads, N, d) queries are the kernels' case: fp32 on the CPU, d of 4, 8 or 16."""
    return (q.device.type == "cpu" and q.dtype == torch.float32 and q.shape[-1] in HEAD_WIDTHS
            and available())


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for (B, heads, N, d) tensors where :func:`applies`."""
    return _NarrowAttention.apply(q, k, v)


def _call(name: str, *tensors: torch.Tensor, maps: int, tokens: int, d: int) -> None:
    getattr(_kernels(), name)(*(t.data_ptr() for t in tensors), maps, tokens, d, d ** -0.5,
                              torch.get_num_threads())


class _NarrowAttention(torch.autograd.Function):
    """Keeps q, k, v, the output and each row's softmax maximum and denominator for the backward
    pass (as flash attention does), not the (N, N) maps."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        q, k, v = (x.contiguous() for x in (q, k, v))
        out = torch.empty_like(q)
        stats = torch.empty(b, h, n, 2, dtype=torch.float32)  # the kernels write fp32, whatever the default dtype
        _call("forward", q, k, v, out, stats, maps=b * h, tokens=n, d=d)
        ctx.save_for_backward(q, k, v, out, stats)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v, out, stats = ctx.saved_tensors
        b, h, n, d = q.shape
        dq, dk, dv = (torch.empty_like(x) for x in (q, k, v))
        _call("backward", q, k, v, out, grad_out.float().contiguous(), stats, dq, dk, dv, maps=b * h, tokens=n, d=d)
        return dq, dk, dv
