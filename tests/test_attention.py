"""Every attention kernel computes the same softmax attention, forward and backward."""
from __future__ import annotations

import pytest
import torch

from core import attention as attn
from core.device import onednn_bf16


def _qkv(b=3, h=2, n=20, d=4, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, n, d, generator=gen, dtype=dtype, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("slice_elements", [400, 1_250_000])  # 1 map per slice, uneven; all at once
@pytest.mark.slow
def test_chunked_gradients_are_exact(monkeypatch, slice_elements):
    """gradcheck compares the hand-written backward with finite differences, in float64."""
    monkeypatch.setattr(attn, "SLICE_ELEMENTS", slice_elements)
    q, k, v = _qkv()
    assert torch.autograd.gradcheck(lambda *x: attn.attention(*x, "chunked"), (q, k, v))


@pytest.mark.parametrize("impl", ["chunked", "sdpa", "auto"])
def test_matches_the_tutorial_attention(monkeypatch, impl):
    monkeypatch.setattr(attn, "SLICE_ELEMENTS", 1000)  # several slices of 2 maps, last one short
    q, k, v = _qkv(b=5, n=21, dtype=torch.float32)
    grad = torch.randn(5, 2, 21, 4)
    ref = attn.attention(q, k, v, "naive")
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    out = attn.attention(q, k, v, impl)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_chunked_keeps_bf16_under_autocast():
    """Under CPU autocast the chunked kernel stays in the inputs' dtype, within bf16 rounding."""
    q, k, v = (x.detach().float() for x in _qkv(n=64, d=8))
    ref = attn.attention(q, k, v, "naive")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn.attention(*(x.bfloat16() for x in (q, k, v)), "chunked")
    assert out.dtype == torch.bfloat16
    assert float((out.float() - ref).norm() / ref.norm()) < 0.02


@pytest.mark.skipif(not onednn_bf16(), reason="oneDNN has no bf16 kernels on this CPU")
def test_onednn_softmax_agrees_with_atens_in_bf16(monkeypatch):
    """The bf16 path through oneDNN's softmax, forward and backward, against aten's and fp32's."""
    q, k, v = (x.detach() for x in _qkv(b=2, n=96, d=8, dtype=torch.float32))
    grad = torch.randn(2, 2, 96, 8)
    ref = attn.attention(q, k, v, "naive")

    def bf16_run(min_tokens: int) -> list[torch.Tensor]:
        monkeypatch.setattr(attn, "ONEDNN_MIN_TOKENS", min_tokens)
        inputs = [x.bfloat16().requires_grad_() for x in (q, k, v)]
        out = attn.attention(*inputs, "chunked")
        return [out.detach(), *torch.autograd.grad(out, inputs, grad.bfloat16())]

    onednn, aten = bf16_run(16), bf16_run(10**9)
    ref_grads = torch.autograd.grad(attn.attention(*(x.requires_grad_() for x in (q, k, v)), "naive"), (q, k, v), grad)
    for a, b, want in zip(onednn, aten, [ref, *ref_grads]):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
        assert float((a.float() - want).norm() / want.norm()) < 0.02
