"""Exact attention for narrow fp32 heads on the CPU through DDPM Studio's own kernels.

torch's fused CPU attention runs heads of 4 to 64 channels (the tutorial's network's widths)
well below what the arithmetic needs, in the backward pass above all, and it can only run
4-channel heads zero-padded to 16 (:func:`core.attention._sdpa`). ``core/_narrow_attention.cpp``
computes the same flash-attention passes with AVX2 register tiles, close to the limit of the
cores' two FMA pipes; on a 2-core AVX2 EPYC one 784-token layer at batch 32 took 0.139 s
forward+backward with 16-channel heads against sdpa's 0.230 s, and 0.075 against 0.235 s with
4-channel heads, the inference pass at batch 100 0.134 against 0.193 s and 0.070 against 0.202 s
(docs/speed.md). The 7x7 layers' 64-channel heads (49 tokens, batch 100): 4.3 ms against the
explicit product's 7.8 and sdpa's 7.7 in inference, forward+backward 14.4 against sdpa's 29.4 ms.
On CPUs with AVX-512-BF16 the same passes also run with their products in bf16
(``core/_narrow_attention_bf16.h``): sampling in fp32 networks where autotune chooses
``narrow-bf16``, and training and sampling under bf16 autocast (:mod:`core.attention`).

The kernels are a compiled extension built at install time (``setup.py``); where it could not be
built, or the CPU lacks AVX2 and FMA, :func:`available` is false and nothing here is used.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from . import matmul, native

HEAD_WIDTHS = (4, 8, 16, 32, 64)
# Sampling projects and attends the images in parts whose projections take at most this many
# bytes. In one piece, the 784-token layers' projections at batch 100 (60 MB) lay beyond glibc's
# largest mmap threshold (32 MiB, :mod:`core.allocator`): each was mapped afresh, 14,700 page
# faults a step, and a layer with 16-channel heads took 151 ms where parts of 50 or of 25 images
# took 141 (2 AVX2 EPYC cores).
PART_BYTES = 16 * 2**20


def available() -> bool:
    """Whether this install and this CPU run the kernels."""
    return native.kernels("_narrow_attention") is not None


def available_bf16() -> bool:
    """Whether this install and this CPU run the bf16 passes (AVX-512-BF16)."""
    kernels = native.kernels("_narrow_attention")
    return kernels is not None and kernels.supported_bf16()


def applies(x: torch.Tensor, d: int) -> bool:
    """Whether attention over ``x`` (queries or projections) with heads of ``d`` channels is the
    kernels' case: fp32 on the CPU, d in HEAD_WIDTHS."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and d in HEAD_WIDTHS and available()


def self_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention over (B, N, 3C) input projections as ``nn.MultiheadAttention`` makes them (queries,
    keys and values side by side, each C = heads x d channels head after head) -> (B, N, C) attended
    values with the heads side by side, the output projection's input: neither side is copied
    into another layout, and the backward pass writes the projections' gradient as one tensor.

    Over one token the softmax is exactly 1 and the values are the output: taken as they are, as
    torch's kernels give them, where the kernels' exponent (``scaled_exp``) comes within an ulp."""
    n, c3 = qkv.shape[1:]
    if n == 1:
        return qkv[..., 2 * c3 // 3:]
    return _NarrowAttention.apply(qkv.contiguous(), heads)


def projected_self_attention(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             heads: int, bf16: bool = False) -> torch.Tensor:
    """:func:`self_attention` of the input projections ``F.linear(x, weight, bias)`` of (B, N, C)
    tokens, with the projections remade in the backward pass rather than kept.

    Training keeps the tokens anyway (the projections' weights need them for their gradient);
    the projections are three times their bytes, the largest thing a training step keeps for
    attention. Remaking them costs one matrix product per layer in the backward pass. The
    products are :func:`core.matmul.linear`'s, without the bias: the kernels add ``bias`` as they
    read the projections (see ``core/_narrow_attention.cpp``), and :class:`_ProjectedAttention`
    gives the projections' gradients.

    ``bf16`` runs the projections and the kernels' products in bf16 where the CPU has
    AVX-512-BF16 (:func:`available_bf16`), as bf16 autocast rounds them: sampling's pass, and
    training's forward and backward passes (:class:`_ProjectedAttention`).
    """
    bf16 = bf16 and available_bf16()
    if x.shape[1] == 1:
        return self_attention(F.linear(x, weight, bias), heads)
    if not torch.is_grad_enabled():
        return _forward_in_parts(x, weight, bias, heads, bf16)
    return _ProjectedAttention.apply(x, weight, bias, heads, bf16)


def _forward_in_parts(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, heads: int,
                      bf16: bool) -> torch.Tensor:
    """The attended values of (B, N, C) tokens without gradients, their projections made and
    attended a part of the images at a time: see :data:`PART_BYTES`."""
    b, n = x.shape[:2]
    out = x.new_empty(b, n, weight.shape[0] // 3)
    images = _part_images(b, PART_BYTES // (n * weight.shape[0] * x.element_size()), torch.get_num_threads())
    project = (functools.partial(_bf16_projections, weight=weight.bfloat16()) if bf16
               else functools.partial(matmul.linear, weight=weight))
    for first in range(0, b, images):
        _forward(project(x[first:first + images]), heads, bias, out[first:first + images], bf16)
    return out


def _bf16_projections(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The projections ``x weight^T`` for the bf16 pass, by oneDNN's bf16 product from operands
    rounded as bf16 autocast rounds them: the pass rounds them to bf16 anyway. On 2 Zen 4 cores,
    the 784-token layers' projections of 25 images took 2.9 ms against 3.9-7.7 in fp32 (the casts
    included), 49 tokens of 256 channels at batch 100 7.8 against 11.4-16.1 ms."""
    return F.linear(x.bfloat16(), weight).float()


def _part_images(batch: int, fits: int, threads: int) -> int:
    """Images per part of a batch whose parts may hold ``fits`` images: as few parts as that
    allows, of equal sizes, rounded up to a multiple of ``threads`` where they still fit. The
    kernels hand each thread an image at a time, so a part of 27 images on 2 threads left one
    thread idle for an image's time at its end: a sampling step at batch 100 took 0.922 s in
    parts of 27 (the 784-token layers) and 55 (196 tokens), 0.913 in parts of 26 and 50 (2 AVX2
    EPYC cores, medians of 24 steps in alternation)."""
    parts = -(-batch // max(1, fits))
    equal = -(-batch // parts)
    rounded = -(-equal // threads) * threads
    return rounded if rounded <= fits else equal


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for (B, heads, N, d) tensors where :func:`applies`."""
    b, h, n, d = q.shape
    qkv = torch.stack((q, k, v)).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * h * d)
    return self_attention(qkv, h).view(b, n, h, d).transpose(1, 2)


def _call(name: str, *tensors: torch.Tensor | None, batch: int, heads: int, tokens: int, d: int) -> None:
    """The kernel ``name`` on the tensors' data (0 for a missing bias)."""
    kernel = getattr(native.kernels("_narrow_attention"), name)
    kernel(*(0 if t is None else t.data_ptr() for t in tensors), batch, heads, tokens, d, d ** -0.5,
           torch.get_num_threads())


def _forward(qkv: torch.Tensor, heads: int, bias: torch.Tensor | None = None,
             out: torch.Tensor | None = None, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' forward pass over the projections ``qkv + bias``: the attended values (into
    ``out``, contiguous, where given) and each row's softmax maximum and denominator (fp32,
    whatever the default dtype), which the backward pass needs; ``bf16``: by the bf16 pass."""
    b, n, c3 = qkv.shape
    d = c3 // (3 * heads)
    if out is None:
        out = qkv.new_empty(b, n, heads * d)
    stats = torch.empty(b, heads, n, 2, dtype=torch.float32)
    _call("forward_bf16" if bf16 else "forward", qkv, native.readable(bias), out, stats, batch=b, heads=heads,
          tokens=n, d=d)
    return out, stats


def _backward(qkv: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, stats: torch.Tensor,
              grad_out: torch.Tensor, heads: int, bf16: bool = False) -> torch.Tensor:
    """The projections' gradient from the output's, given what :func:`_forward` gave (with the
    same ``bf16``)."""
    b, n, c3 = qkv.shape
    dqkv = torch.empty_like(qkv)
    _call("backward_bf16" if bf16 else "backward", qkv, native.readable(bias), out, grad_out.float().contiguous(),
          stats, dqkv, batch=b, heads=heads, tokens=n, d=c3 // (3 * heads))
    return dqkv


class _NarrowAttention(torch.autograd.Function):
    """Keeps the projections, the output and each row's softmax maximum and denominator for the
    backward pass (as flash attention does), not the (N, N) maps."""

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        out, stats = _forward(qkv, heads)
        ctx.save_for_backward(qkv, out, stats)
        ctx.heads = heads
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        qkv, out, stats = ctx.saved_tensors
        return _backward(qkv, None, out, stats, grad_out, ctx.heads), None


class _ProjectedAttention(torch.autograd.Function):
    """:class:`_NarrowAttention` of the tokens' input projections: keeps the tokens, the output
    and the softmax statistics, and remakes the projections (without their bias, which the
    kernels add) for the backward pass. With ``bf16`` the products, the projections' included,
    take bf16 operands and sum in fp32; the gradients come out fp32."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                heads: int, bf16: bool) -> torch.Tensor:
        out, stats = _forward(_projections(x, weight, bf16), heads, bias, bf16=bf16)
        ctx.save_for_backward(x, weight, bias, out, stats)
        ctx.heads, ctx.bf16 = heads, bf16
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias, out, stats = ctx.saved_tensors
        bf16 = ctx.bf16
        if bf16:  # each operand rounded once, for the projections and for their gradients
            x, weight = x.bfloat16(), weight.bfloat16()
        dqkv = _backward(_projections(x, weight, bf16), bias, out, stats, grad_out, ctx.heads, bf16=bf16)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        rows, tokens = dqkv.view(-1, dqkv.shape[-1]), x.reshape(-1, x.shape[-1])
        if bf16:
            rows = rows.bfloat16()
            dx = rows.mm(weight).view(x.shape).float() if need_x else None
        else:
            dx = matmul.linear(dqkv, weight.t()) if need_x else None
        dw = rows.t().mm(tokens).float() if need_w else None
        db = dqkv.view(rows.shape).sum(0) if need_b and bias is not None else None
        return dx, dw, db, None, None


def _projections(x: torch.Tensor, weight: torch.Tensor, bf16: bool) -> torch.Tensor:
    """``x weight^T`` in fp32, from bf16 operands with ``bf16`` (operands already bf16 are taken
    as they are)."""
    return _bf16_projections(x, weight.bfloat16()) if bf16 else matmul.linear(x, weight)
