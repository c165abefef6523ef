"""Exact softmax attention, computed the fastest way the device offers.

All four ways compute ``softmax(q k^T / sqrt(d)) v``; they differ only in speed and memory:

- ``naive``: the tutorial's way, the whole (B*heads, N, N) attention map in memory.
- ``sdpa``: ``scaled_dot_product_attention``, fused kernels; the best on CUDA (narrow fp32 heads
  zero-padded on the CPU, see :func:`_sdpa`).
- ``narrow``: fp32 heads of 4 to 64 channels on an AVX2 CPU through our own compiled
  kernels (:mod:`core.narrow_attention`): 1.4x sdpa's speed forward+backward with 16-channel
  heads, 2.3x with 4-channel ones (784 tokens, 2 AVX2 EPYC cores). Other heads go as ``sdpa``
  in fp32 (``naive`` over maps of at most NAIVE_MAX_TOKENS tokens in inference) and as ``auto`` in
  bf16, the faster kernel for each there. Under bf16 autocast on CPUs with AVX-512-BF16 its
  kernels run their projections and products in bf16, forward and backward, rounded as autocast
  rounds: a training step of the tutorial's network took 1.5-1.6 s against 2.4 s in fp32 and
  2.4-3.4 s with torch's bf16 kernels (batch 64, 2 Zen 4 cores).
- ``narrow-bf16``: ``narrow`` with the inference pass's projections and products in bf16 on CPUs with
  AVX-512-BF16 (:func:`core.narrow_attention.projected_self_attention`) in fp32 networks, for
  sampling only: fp32 training and what it does not take run as ``narrow``. :mod:`core.autotune`
  times it only where the config's precision is ``auto``, which lets bf16 run.
- ``chunked``: the map in slices small enough to stay in the CPU's cache, recomputed in the
  backward pass instead of kept. The tutorial's heads are narrow (4 to 64 channels each), which the CPU
  flash kernel handles poorly: forward+backward of one 28x28 layer (784 tokens, 64 channels,
  batch 64, bf16, 2 Zen 4 cores) took 284 ms with ``sdpa`` and 165 ms chunked, of a 7x7 layer
  17 ms and 3.4 ms; all 16 layers of the tutorial's network 1.43 s and 0.71 s, the tutorial's
  way 2.87 s (``bench/attention.py``, ``docs/bench/cpu-attention.json``).

``auto`` picks ``chunked`` on the CPU and ``sdpa`` elsewhere: a guess that holds on AVX-512-bf16
cores; :mod:`core.autotune` replaces it with a measurement on the user's machine (on AVX2 cores in
fp32, ``narrow`` is the fastest and ``sdpa`` the next).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from . import matmul, narrow_attention
from .device import onednn_bf16

AttentionImpl = Literal["auto", "narrow", "narrow-bf16", "chunked", "sdpa", "naive", "tutorial"]
"""The kernels below, and "tutorial": ``nn.MultiheadAttention``'s own forward, which only
:class:`core.unet.SelfAttention` can run (it includes the projections)."""

NARROW = ("narrow", "narrow-bf16")  # the kernels of core.narrow_attention

# Attention-map elements per slice: 2.4 MB in bf16, which a core's L2 plus its share of L3
# holds. Measured at 784 tokens: 1 or 2 maps per slice are equally fast, 4 or more slower.
SLICE_ELEMENTS = 1_250_000
# Rows at least this long go through oneDNN's softmax (see _softmax).
ONEDNN_MIN_TOKENS = 512
# For heads ``narrow`` does not take, in inference, maps of at most this many tokens are small
# enough for the explicit product to beat torch's fused kernel: a 7x7 layer (49 tokens, 64-channel
# heads, before ``narrow`` took them) at batch 100 took 3.7 ms naive against 6.9 ms sdpa (2 AVX2
# EPYC cores, fp32). Training keeps sdpa: the maps and copies the explicit product keeps for the
# backward pass raised a training step's peak RSS by 35 MB (1.311 and 1.316 against 1.277 and
# 1.281 GiB), where the goal (1/4 of the tutorial's, 1.32 GiB) leaves none.
NAIVE_MAX_TOKENS = 64
# Narrower fp32 heads are zero-padded to this width for torch's fused CPU kernel (see _sdpa).
SDPA_CPU_HEAD = 16


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: AttentionImpl) -> torch.Tensor:
    """(B, heads, N, d) queries, keys and values -> (B, heads, N, d) attended values."""
    if impl == "tutorial":
        raise ValueError("attention_impl 'tutorial' is nn.MultiheadAttention's forward: only SelfAttention runs it")
    if impl in NARROW:
        if narrow_attention.applies(q, q.shape[-1]):
            return narrow_attention.attention(q, k, v)
        impl = _narrow_fallback(q)
    if impl == "auto":
        impl = "chunked" if q.device.type == "cpu" else "sdpa"
    if impl == "sdpa":
        return _sdpa(q, k, v)
    if impl == "naive":
        weights = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        return weights @ v
    b, h, n, d = q.shape
    flat = (x.reshape(b * h, n, d) for x in (q, k, v))
    return _ChunkedAttention.apply(*flat).view(b, h, n, d)


def _narrow_fallback(q: torch.Tensor) -> AttentionImpl:
    """The kernel for heads that ``narrow`` can't take (see the module docstring)."""
    if q.dtype != torch.float32:
        return "auto"
    return "naive" if q.shape[-2] <= NAIVE_MAX_TOKENS and not q.requires_grad else "sdpa"


def projected_self_attention(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, heads: int,
                             impl: AttentionImpl) -> torch.Tensor:
    """(B, N, C) tokens -> (B, N, C) attended values of their input projections
    ``F.linear(x, weight, bias)``; ``narrow`` remakes the projections for the backward pass
    instead of keeping them (:func:`core.narrow_attention.projected_self_attention`), in bf16
    under bf16 autocast where the CPU has the kernels for it (fp32 values out either way)."""
    d = weight.shape[0] // (3 * heads)
    if impl in NARROW and d in narrow_attention.HEAD_WIDTHS and _bf16_autocast(x) and narrow_attention.available_bf16():
        with torch.autocast(x.device.type, enabled=False):
            return narrow_attention.projected_self_attention(x.float(), weight, bias, heads, bf16=True)
    plain_fp32 = x.dtype == weight.dtype and not torch.is_autocast_enabled(x.device.type)
    if impl in NARROW and plain_fp32 and narrow_attention.applies(x, d):
        bf16 = impl == "narrow-bf16" and not torch.is_grad_enabled()
        return narrow_attention.projected_self_attention(x, weight, bias, heads, bf16=bf16)
    return self_attention(F.linear(x, weight, bias), heads, impl)


def _bf16_autocast(x: torch.Tensor) -> bool:
    """Whether ``x`` is on the CPU under bf16 autocast."""
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def output_projection(values: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      impl: AttentionImpl, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(values, weight, bias) + residual``, the attended values' output projection and
    the block's residual (shaped as the output, or none); with ``narrow`` without gradients
    (sampling) by :func:`core.matmul.linear` where that applies, which adds the residual as it
    writes the projection (the two 28x28 layers of the tutorial's network at batch 100: 2.2 ms
    each for a separate add)."""
    if impl in NARROW and not torch.is_grad_enabled():
        return matmul.linear(values, weight, bias, residual)
    out = F.linear(values, weight, bias)
    return out if residual is None else out + residual


def self_attention(qkv: torch.Tensor, heads: int, impl: AttentionImpl) -> torch.Tensor:
    """(B, N, 3C) input projections as ``nn.MultiheadAttention`` makes them -> (B, N, C) attended
    values, heads side by side; ``narrow`` takes them as they are (see
    :func:`core.narrow_attention.self_attention`), the other kernels as (B, heads, N, d) views."""
    b, n, c3 = qkv.shape
    d = c3 // (3 * heads)
    if impl in NARROW and narrow_attention.applies(qkv, d):
        return narrow_attention.self_attention(qkv, heads)
    q, k, v = qkv.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    return attention(q, k, v, impl).transpose(1, 2).reshape(b, n, heads * d)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``scaled_dot_product_attention``, with fp32 heads narrower than 16 channels zero-padded to
    16 on the CPU: zero channels add nothing to q.k and come out as zero channels, cut off again,
    and the scale stays the real width's.

    torch's fused CPU kernel runs 4- and 8-channel fp32 heads 1.3-1.5x slower than 16-channel
    ones, padding included: forward+backward of a 784-token layer at batch 32 (4 heads) took
    264 ms at 4 channels and 180 ms padded, 328 and 245 ms with ATen's AVX2 kernels, the
    inference pass at batch 100 236 and 168 ms (2 Zen 4 cores). Padding to 32 is slower again;
    in bf16 padding gains nothing (179 against 185 ms), so bf16 heads run as they are.
    """
    d = q.shape[-1]
    if q.device.type != "cpu" or q.dtype != torch.float32 or d >= SDPA_CPU_HEAD:
        return F.scaled_dot_product_attention(q, k, v)
    pad = (0, SDPA_CPU_HEAD - d)
    out = F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), scale=d ** -0.5)
    return out[..., :d]


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of a (maps, N, N) slice of scores.

    oneDNN's bf16 softmax beats aten's on long rows even with the two copies into and out of its
    tensor type: per 128 maps of 784 tokens on 2 Zen 4 cores 15.5 against 19.8 ms in slices of
    two maps. At 196 tokens and below, and in fp32, the two are even, so aten's runs there.
    """
    if scores.dtype == torch.bfloat16 and scores.shape[-1] >= ONEDNN_MIN_TOKENS and onednn_bf16():
        return torch._softmax(scores.to_mkldnn(), -1, False).to_dense()
    return torch.softmax(scores, dim=-1)


def _slices(maps: int, tokens: int) -> list[slice]:
    step = max(1, SLICE_ELEMENTS // (tokens * tokens))
    return [slice(i, i + step) for i in range(0, maps, step)]


class _ChunkedAttention(torch.autograd.Function):
    """Attention over (maps, N, d) in cache-sized slices; backward recomputes each slice's map.

    Runs in the inputs' dtype with autocast off, so under bf16 autocast no op silently widens
    to fp32 (the matmuls accumulate in fp32 inside oneDNN regardless). Only q, k and v are kept
    for the backward pass, as in flash attention.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):
            q_scaled = q * q.shape[-1] ** -0.5
            out = torch.empty_like(q)
            for s in _slices(q.shape[0], q.shape[1]):
                weights = _softmax(torch.bmm(q_scaled[s], k[s].transpose(1, 2)))
                torch.bmm(weights, v[s], out=out[s])
        ctx.save_for_backward(q, k, v)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        with torch.autocast(q.device.type, enabled=False):
            grad_out = grad_out.to(q.dtype).contiguous()
            q_scaled = q * scale
            dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
            for s in _slices(q.shape[0], q.shape[1]):
                weights = _softmax(torch.bmm(q_scaled[s], k[s].transpose(1, 2)))
                dv[s] = _bmm_transposed(grad_out[s], weights)
                grad_weights = torch.bmm(grad_out[s], v[s].transpose(1, 2))
                grad_scores = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
                torch.bmm(grad_scores, k[s], out=dq[s])
                dk[s] = _bmm_transposed(q_scaled[s], grad_scores)
            dq.mul_(scale)
        return dq, dk, dv


def _bmm_transposed(narrow: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``maps^T @ narrow`` for (maps, N, N) maps and (maps, N, d) narrow tensors, as
    ``(narrow^T @ maps)^T``: the map stays the row-major operand, which oneDNN multiplies faster
    than its transpose (2 bf16 maps of 784 tokens, d = 16, on 2 Zen 4 cores: 0.16 against 0.22 ms).
    """
    return torch.bmm(narrow.transpose(1, 2), maps).transpose(1, 2)
