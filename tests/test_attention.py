"""Every attention kernel computes the same softmax attention, forward and backward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core import attention as attn
from core import narrow_attention
from core.device import onednn_bf16

from tests.native_kernels import MUST_BUILD

needs_narrow = pytest.mark.skipif(not narrow_attention.available() and not MUST_BUILD,
                                  reason="no narrow attention kernels for this platform or CPU")

# The narrow kernels against torch's fp32 ones: their exponential, a degree-4 polynomial, has a
# relative error of 2.9e-6 (core/_narrow_attention.cpp, scaled_exp).
NARROW_TOLERANCE = {"rtol": 1e-5, "atol": 5e-6}


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


@pytest.mark.parametrize("impl", ["chunked", "sdpa", "auto", "narrow"])
def test_matches_the_tutorial_attention(monkeypatch, impl):
    monkeypatch.setattr(attn, "SLICE_ELEMENTS", 1000)  # several slices of 2 maps, last one short
    q, k, v = _qkv(b=5, n=21, dtype=torch.float32)
    grad = torch.randn(5, 2, 21, 4)
    ref = attn.attention(q, k, v, "naive")
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    out = attn.attention(q, k, v, impl)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    tolerance = NARROW_TOLERANCE if impl == "narrow" else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(out, ref, **tolerance)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **tolerance)


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


@needs_narrow
@pytest.mark.parametrize("n", [1, 13, 50, 196])  # one token; token counts off the 16-key tiles
@pytest.mark.parametrize("d", narrow_attention.HEAD_WIDTHS)
def test_narrow_kernels_match_float64_attention(n, d):
    """Outputs and all three gradients against the map computed in float64, as close as torch's
    own fp32 kernels come (the tutorial's way and the fused one) but for the exponential's
    rounding, for every head width the kernels take, with query blocks and key
    tiles that end short (tokens not a multiple of 6 or 16) and a peaked softmax."""
    assert narrow_attention.available(), "core._narrow_attention was not built or does not load"
    q, k, v = (x.detach().float().mul(3).requires_grad_() for x in _qkv(b=2, h=3, n=n, d=d))
    # a fixed gradient: drawn afresh each run, about one draw in 150 put the 4-channel kernel's
    # error over 13 tokens just past the bound (1.03-1.23x it), with either form of the exponent
    grad = torch.randn(2, 3, n, d, generator=torch.Generator().manual_seed(1))

    def run(impl: str, dtype: torch.dtype) -> list[torch.Tensor]:
        inputs = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
        out = attn.attention(*inputs, impl)
        return [out.detach().double(), *(g.double() for g in torch.autograd.grad(out, inputs, grad.to(dtype)))]

    exact, ours = run("naive", torch.float64), run("narrow", torch.float32)
    for want, got, *theirs in zip(exact, ours, run("naive", torch.float32), run("sdpa", torch.float32)):
        torch_error = max(float((t - want).abs().max()) for t in theirs)
        # plus what the kernels' exponential adds: relative error 2.9e-6 (a degree-4 polynomial)
        assert float((got - want).abs().max()) <= 2 * torch_error + 4e-6 * float(want.abs().max()) + 1e-6


@needs_narrow
def test_narrow_kernels_take_projections_as_they_are_and_leave_other_heads_to_torch():
    """Input projections as SelfAttention makes them, (B, N, 3C) with q, k and v side by side,
    give the attended values with heads side by side and the projections' gradient as the other
    kernels do; heads the kernels do not take (128 channels, bf16) go to torch's kernels instead."""
    qkv = torch.randn(2, 40, 3 * 2 * 16, requires_grad=True)
    grad = torch.randn(2, 40, 2 * 16)
    got, want = (attn.self_attention(qkv, 2, impl) for impl in ("narrow", "naive"))
    torch.testing.assert_close(got, want, **NARROW_TOLERANCE)
    torch.testing.assert_close(*(torch.autograd.grad(out, qkv, grad)[0] for out in (got, want)), rtol=1e-5, atol=1e-5)
    assert not narrow_attention.applies(torch.randn(1, 8, 3 * 128), 128)
    assert not narrow_attention.applies(torch.randn(1, 8, 3 * 16, dtype=torch.bfloat16), 16)
    wide = [x.detach().float() for x in _qkv(n=30, d=128)]
    torch.testing.assert_close(attn.attention(*wide, "narrow"), attn.attention(*wide, "naive"), rtol=1e-5, atol=1e-6)


@needs_narrow
@pytest.mark.parametrize("d", narrow_attention.HEAD_WIDTHS)
def test_narrow_attention_of_projections_remakes_them_for_the_backward_pass(d):
    """Through projected_self_attention the tokens' projections are not kept between the passes,
    and the kernels add the bias as they read them: the output and the weights' and bias's
    gradients, in training and in inference, are those of projecting first and adding the bias,
    bit for bit; the tokens' gradient, a product core/_matmul.h sums in another order than torch's
    sgemm, to within fp32 rounding."""
    gen = torch.Generator().manual_seed(0)
    c = 2 * d
    x = torch.randn(2, 50, c, generator=gen, requires_grad=True)
    weight = (torch.randn(3 * c, c, generator=gen) / c ** 0.5).requires_grad_()
    bias = torch.randn(3 * c, generator=gen, requires_grad=True)
    grad = torch.randn(2, 50, c, generator=gen)

    def run(projected: bool) -> tuple[list[torch.Size], torch.Tensor, tuple[torch.Tensor, ...]]:
        kept: list[torch.Size] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.shape) or t, lambda t: t):
            if projected:
                out = attn.projected_self_attention(x, weight, bias, 2, "narrow")
            else:
                out = attn.self_attention(torch.nn.functional.linear(x, weight) + bias, 2, "narrow")
        return kept, out, torch.autograd.grad(out, (x, weight, bias), grad)

    (kept, out, grads), (kept_before, out_before, grads_before) = run(True), run(False)
    assert torch.Size([2, 50, 3 * c]) in kept_before and torch.Size([2, 50, 3 * c]) not in kept
    assert torch.equal(out, out_before)
    torch.testing.assert_close(grads[0], grads_before[0], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(grads[1:], grads_before[1:]))
    with torch.no_grad():
        assert torch.equal(attn.projected_self_attention(x, weight, bias, 2, "narrow"), out)


@needs_narrow
def test_inference_attends_the_images_in_parts_with_the_same_result(monkeypatch):
    """Without gradients the projections are made and attended a part of the images at a time
    (parts of 2 images here, the last of 1): the values are those of the whole batch at once, bit
    for bit, as each image's arithmetic is the same either way."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 30, 32, generator=gen)
    weight, bias = torch.randn(96, 32, generator=gen) / 32 ** 0.5, torch.randn(96, generator=gen)
    with torch.no_grad():
        whole = attn.projected_self_attention(x, weight, bias, 2, "narrow")
        monkeypatch.setattr(narrow_attention, "PART_BYTES", 2 * 30 * 96 * 4)
        parts = attn.projected_self_attention(x, weight, bias, 2, "narrow")
    assert torch.equal(parts, whole)
    torch.testing.assert_close(whole, attn.self_attention(F.linear(x, weight, bias), 2, "naive"), rtol=1e-5, atol=1e-6)


needs_bf16_pass = pytest.mark.skipif(not narrow_attention.available_bf16(), reason="this CPU has no AVX-512-BF16")


def _bf16_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention as the bf16 pass computes it, in float64 but for its roundings to bf16: the
    tokens and weights, the projections (before their bias), queries, keys and values (after it)
    and the softmax weights."""
    b, n, c = x.shape
    d = c // heads
    rounded = [t.to(torch.bfloat16).double() for t in (x, weight)]
    projections = F.linear(*rounded).to(torch.bfloat16).double() + bias.double()
    q, k, v = projections.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4).to(torch.bfloat16).double()
    weights = torch.softmax(q @ k.transpose(-2, -1) * d ** -0.5, dim=-1)
    return (weights.to(torch.bfloat16).double() @ v).transpose(1, 2).reshape(b, n, c)


@needs_bf16_pass
@pytest.mark.parametrize("n,d", [(2, 16), (13, 64), (197, 32), (530, 16), (3, 4), (45, 8), (784, 4)])  # off the 32-key tiles, odd
def test_the_bf16_pass_attends_as_bf16_autocast_rounds(monkeypatch, n, d):
    """narrow-bf16 in inference: the values of attention whose projections and products take bf16
    operands, to within what the order of the fp32 sums and the weights' normalisation after
    their rounding change; and not the fp32 kernels' values, which differ from them by bf16's
    rounding."""
    gen = torch.Generator().manual_seed(0)
    heads, c = 2, 2 * d
    x = torch.randn(2, n, c, generator=gen)
    weight, bias = torch.randn(3 * c, c, generator=gen) * (2 / c ** 0.5), torch.randn(3 * c, generator=gen)
    with torch.no_grad():
        got = attn.projected_self_attention(x, weight, bias, heads, "narrow-bf16").double()
        fp32 = attn.projected_self_attention(x, weight, bias, heads, "narrow").double()
    want = _bf16_reference(x, weight, bias, heads)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= 4e-3 * scale
    assert float((fp32 - got).abs().max()) >= 1e-3 * scale


@needs_bf16_pass
def test_the_bf16_pass_leaves_fp32_training_to_the_fp32_kernels():
    """With gradients, narrow-bf16 is narrow bit for bit: fp32 training never rounds to bf16."""
    gen = torch.Generator().manual_seed(0)
    for d in (4, 16):
        x = torch.randn(1, 40, 2 * d, generator=gen, requires_grad=True)
        weight, bias = torch.randn(6 * d, 2 * d, generator=gen), torch.randn(6 * d, generator=gen)
        outs = [attn.projected_self_attention(x, weight, bias, 2, impl) for impl in ("narrow-bf16", "narrow")]
        assert torch.equal(*outs), d


def _gradients_under_autocast(impl: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                              grad: torch.Tensor, heads: int, bf16: bool = True) -> list[torch.Tensor]:
    """The output of attention by ``impl`` (under bf16 autocast, or in ``x``'s dtype) and the
    gradients of x, the weights and the bias given the output's ``grad``, in float64."""
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = attn.projected_self_attention(x, weight, bias, heads, impl)
    out.backward(grad.to(out.dtype))
    return [t.detach().double() for t in (out, x.grad, weight.grad, bias.grad)]


@needs_bf16_pass
@pytest.mark.parametrize("n,d", [(2, 16), (13, 64), (197, 32), (530, 16), (3, 4), (45, 8), (784, 4)])
def test_bf16_training_attends_and_back_propagates_as_torchs_bf16_kernels_do(monkeypatch, n, d):
    """Under bf16 autocast, narrow trains by the bf16 kernels, forward and backward: the output
    and the three gradients lie within twice the distance from float64 of torch's own bf16 kernels
    (sdpa's and the chunked kernel's, under the same autocast), and as far as bf16 puts them."""
    calls = []
    call = narrow_attention._call
    monkeypatch.setattr(narrow_attention, "_call", lambda name, *a, **k: calls.append(name) or call(name, *a, **k))
    gen = torch.Generator().manual_seed(0)
    heads, c = 2, 2 * d
    x = torch.randn(2, n, c, generator=gen)
    weight, bias = torch.randn(3 * c, c, generator=gen) * (2 / c ** 0.5), torch.randn(3 * c, generator=gen)
    grad = torch.randn(2, n, c, generator=gen)
    exact = _gradients_under_autocast("naive", *(t.double() for t in (x, weight, bias, grad)), heads, bf16=False)

    def errors(impl: str) -> list[float]:
        got = _gradients_under_autocast(impl, x, weight, bias, grad, heads)
        return [float((a - b).norm() / b.norm()) for a, b in zip(got, exact)]

    ours, torchs = errors("narrow"), [max(e) for e in zip(errors("sdpa"), errors("chunked"))]
    assert calls == ["forward_bf16", "backward_bf16"]
    for name, mine, theirs in zip(("output", "x", "weight", "bias"), ours, torchs):
        assert 1e-3 < mine <= 2 * theirs, name


@pytest.mark.parametrize("kernel", ["forward_bf16", "backward_bf16"])
@pytest.mark.parametrize("d,refusal", [(12, "d must be 4, 8, 16, 32 or 64"), (8, "AVX-512-BF16")])
def test_the_bf16_pass_is_refused_where_it_cannot_run(kernel, d, refusal):
    """The kernels themselves name what is missing rather than compute something else: a head
    width they have no kernel for, or (on CPUs without it) AVX-512-BF16."""
    if not narrow_attention.available():
        pytest.skip("no narrow attention kernels for this platform or CPU")
    if refusal == "AVX-512-BF16" and narrow_attention.available_bf16():
        pytest.skip("this CPU runs the bf16 pass")
    kernels = narrow_attention.native.kernels("_narrow_attention")
    qkv, out, stats = torch.randn(1, 40, 3 * d), torch.empty(1, 40, d), torch.empty(1, 1, 40, 2)
    tensors = (qkv, out, stats) if kernel == "forward_bf16" else (qkv, out, torch.randn(1, 40, d), stats, qkv)
    with pytest.raises(ValueError, match=refusal):
        getattr(kernels, kernel)(*(t.data_ptr() for t in tensors[:1]), 0, *(t.data_ptr() for t in tensors[1:]),
                                 1, 1, 40, d, d ** -0.5, 1)


@pytest.mark.parametrize("batch,fits,threads,expected", [
    (100, 27, 2, 26),  # 4 parts of 25 would leave a thread idle at each part's end: 26, 26, 26, 22
    (100, 55, 2, 50),
    (100, 111, 2, 100),
    (100, 27, 3, 27),
    (100, 1, 2, 1),  # a multiple of the threads would not fit
    (7, 3, 2, 3),
])
def test_inference_parts_are_equal_and_a_multiple_of_the_threads_where_they_fit(batch, fits, threads, expected):
    assert narrow_attention._part_images(batch, fits, threads) == expected


def test_heads_narrow_cannot_take_go_to_naive_over_short_maps_in_inference_and_to_sdpa_otherwise(monkeypatch):
    """Short maps are cheaper written out than through torch's fused kernel, but only in inference
    does that cost no memory (attn.NAIVE_MAX_TOKENS)."""
    calls = []
    monkeypatch.setattr(attn, "_sdpa", lambda q, k, v: calls.append((q.shape[-2], q.requires_grad)) or q)
    short, long = attn.NAIVE_MAX_TOKENS, attn.NAIVE_MAX_TOKENS + 1
    for n, grad in ((short, False), (long, False), (short, True)):
        qkv = [x.detach().requires_grad_(grad) for x in _qkv(n=n, d=128, dtype=torch.float32)]
        attn.attention(*qkv, "narrow")
    assert calls == [(long, False), (short, True)]



def test_the_output_projection_takes_the_register_tiles_only_in_inference(monkeypatch):
    """Training keeps torch's linear layer, whose backward pass autograd knows; either way the
    residual is added."""
    calls = []
    monkeypatch.setattr(attn.matmul, "linear",
                        lambda x, w, b=None, added=None: calls.append(x.shape) or x @ w.t() + b + added)
    values, weight, bias, residual = torch.randn(2, 10, 16), torch.randn(16, 16), torch.randn(16), torch.randn(2, 10, 16)
    want = F.linear(values, weight, bias) + residual
    with torch.no_grad():
        torch.testing.assert_close(attn.output_projection(values, weight, bias, "narrow", residual), want)
        torch.testing.assert_close(attn.output_projection(values, weight, bias, "sdpa", residual), want)
    trained = attn.output_projection(values, weight.requires_grad_(), bias, "narrow", residual)
    torch.testing.assert_close(trained, want)
    assert calls == [values.shape]
