"""Winograd F(4x4, 3x3) and F(7x7, 3x3) convolutions compute what torch's 3x3 convolutions compute."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core import winograd
from core.unet import NormActConv
from tests.native_kernels import MUST_BUILD

needs_kernels = pytest.mark.skipif(not winograd.available() and not MUST_BUILD,
                                   reason="no winograd kernels for this platform or CPU")
# Largest error allowed, relative to the largest output: F(4x4, 3x3)'s transforms multiply by up
# to 8 and divide by 24, so it rounds 3-8x worse than a direct fp32 convolution (measured 5e-6 to
# 8e-6 of the output's scale); a wrong tile, transform entry or padding is off by O(1).
RELATIVE_ERROR = 3e-5
# The same for sampling's F(7x7, 3x3), whose nine points round 10-30x worse (measured 3e-5 to 2.1e-4).
F7_RELATIVE_ERROR = 6e-4
BOUND = {winograd.TILE: RELATIVE_ERROR, winograd.SAMPLING_TILE: F7_RELATIVE_ERROR}
TILES = pytest.mark.parametrize("tile", [winograd.TILE, winograd.SAMPLING_TILE])


def _channels_last(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


@pytest.fixture(params=["fused", "rounds"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways conv3x3 runs: the compiled pass for layers up to FUSED_MAX_WEIGHTS channel pairs,
    and rounds of images through torch.bmm, which wider layers take."""
    if request.param == "rounds":
        monkeypatch.setattr(winograd, "FUSED_MAX_WEIGHTS", 0)
        monkeypatch.setattr(winograd, "F7_FUSED_MAX_WEIGHTS", 0)
    return request.param


@needs_kernels
@TILES
@pytest.mark.parametrize("n,cin,cout,h,w", [
    (3, 32, 64, 7, 7),  # 7x7: the last tile row and column half outside the image; one short block of tiles
    (5, 64, 32, 9, 13),  # sizes off the tile
    (2, 40, 48, 28, 28),  # 98 tiles: five blocks and a short last one; 48 channels: a last 8 after 16s
    (2, 32, 32, 1, 1),  # a single pixel: every input of its tile but the centre is padding
    (3, 256, 64, 7, 7),  # the longest sums the fused pass makes
    (4, 8, 16, 6, 5),  # 8 channels in, the narrowest the kernels take
    (4, 256, 256, 8, 8),  # wider than the fused pass takes: rounds either way
])
def test_convolution_and_its_transpose_match_float64(n, cin, cout, h, w, path, tile):
    """The convolution (with and without bias) and the transposed convolution that gives the
    input's gradient, against float64, channels-last out, in either tile."""
    assert winograd.available(), "core._winograd was not built or does not load"
    gen = torch.Generator().manual_seed(0)
    x = _channels_last(n, cin, h, w, gen=gen)
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (9 * cin) ** 0.5
    bias = torch.randn(cout, generator=gen)
    assert winograd.applies(x, weight)
    u = winograd.transform_weight(weight, tile=tile)
    assert u.shape == ((tile + 2) ** 2, cin, cout) and winograd.tile_of(u) == tile
    for b in (bias, None):
        want = F.conv2d(x.double(), weight.double(), None if b is None else b.double(), padding=1)
        got = winograd.conv3x3(x, u, b)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert _error(got, want) < BOUND[tile]
    grad = _channels_last(n, cout, h, w, gen=gen)
    want = F.conv_transpose2d(grad.double(), weight.double(), padding=1)
    got = winograd.conv3x3(grad, winograd.transform_weight(weight, transposed=True, tile=tile))
    assert _error(got, want) < BOUND[tile]


@needs_kernels
@TILES
def test_batches_split_into_rounds_give_the_same_images(monkeypatch, tile):
    """Rounds of one image and a short last round (7 images in rounds of 3) match one round."""
    monkeypatch.setattr(winograd, "MIN_ROUND_TILES", 1)
    monkeypatch.setattr(winograd, "FUSED_MAX_WEIGHTS", 0)
    monkeypatch.setattr(winograd, "F7_FUSED_MAX_WEIGHTS", 0)
    gen = torch.Generator().manual_seed(1)
    x = _channels_last(7, 32, 6, 10, gen=gen)
    u = winograd.transform_weight(torch.randn(32, 32, 3, 3, generator=gen) / 17, tile=tile)
    whole = winograd.conv3x3(x, u)
    per_image = (tile + 2) ** 2 * -(-6 // tile) * -(-10 // tile) * (32 + 32) * 4
    for images in (1, 3):
        assert torch.equal(winograd.conv3x3(x, u, round_bytes=images * per_image), whole)


def test_rounds_keep_enough_tiles_for_the_products():
    """A round's byte budget gives way where it would leave the products too few rows to run
    well: 7x7 images (4 tiles each) go in rounds of 32 however small the budget."""
    rounds = [count for _, count, _, _ in winograd._rounds(torch.Size((40, 256, 7, 7)), 256, round_bytes=1)]
    assert rounds == [32, 8]


def test_sampling_takes_the_larger_tile_where_it_makes_fewer_products():
    """The tutorial's 28, 14 and 7 pixel sides are whole F(7x7, 3x3) tiles; 32 and 8 pixels would
    leave much of the last tile outside the image, and a single pixel uses a ninth of either."""
    assert [winograd.sampling_tile(h, h) for h in (28, 14, 7)] == [winograd.SAMPLING_TILE] * 3
    assert [winograd.sampling_tile(h, h) for h in (32, 8, 4, 1)] == [winograd.TILE] * 4


@needs_kernels
def test_takes_only_its_case():
    """NCHW memory, channels off 8, other dtypes and other kernel sizes go to torch; so does the
    weights' gradient of layers narrower than MIN_WEIGHT_GRAD_CHANNELS."""
    x = torch.randn(2, 32, 5, 5)
    w = torch.randn(32, 32, 3, 3)
    assert winograd.applies(x.contiguous(memory_format=torch.channels_last), w)
    assert not winograd.applies(x, w)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert winograd.applies(cl, torch.randn(8, 32, 3, 3))
    assert not winograd.applies(cl, torch.randn(36, 32, 3, 3))
    assert not winograd.applies(cl.double(), w.double())
    assert not winograd.applies(cl, torch.randn(32, 32, 1, 1))
    narrow = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    assert winograd.applies(narrow, torch.randn(32, 16, 3, 3))
    assert not winograd.applies(torch.randn(2, 12, 5, 5).contiguous(memory_format=torch.channels_last),
                                torch.randn(32, 12, 3, 3))
    assert winograd.weight_grad_applies(cl, w)
    assert not winograd.weight_grad_applies(narrow, torch.randn(32, 16, 3, 3))
    with pytest.raises(ValueError, match="tiles are 4 or 7"):
        winograd.transform_weight(w, tile=5)


@needs_kernels
@pytest.mark.parametrize("n,cin,cout,h,w,images", [
    (2, 40, 48, 28, 28, None),
    (5, 64, 32, 14, 17, None),  # sizes off the tile
    (7, 32, 32, 15, 14, 3),  # rounds of 3 images and a short last round
    (3, 256, 64, 7, 7, None),
    (4, 32, 32, 2, 2, None),
])
def test_weights_gradient_matches_float64(n, cin, cout, h, w, images, monkeypatch):
    monkeypatch.setattr(winograd, "MIN_ROUND_TILES", 1)
    gen = torch.Generator().manual_seed(0)
    x, grad = _channels_last(n, cin, h, w, gen=gen), _channels_last(n, cout, h, w, gen=gen)
    weight = torch.randn(cout, cin, 3, 3, generator=gen)
    want = torch.ops.aten.convolution_backward(grad.double(), x.double(), weight.double(), None, [1, 1], [1, 1],
                                               [1, 1], False, [0, 0], 1, [False, True, False])[1]
    tiles = ((h + 3) // 4) * ((w + 3) // 4)
    rounds = {} if images is None else {"round_bytes": images * 36 * tiles * (cin + cout) * 4}
    got = winograd.weight_grad(x, grad, **rounds)
    assert got.shape == weight.shape and _error(got, want) < RELATIVE_ERROR
    assert winograd.weight_grad_applies(x, weight)
    small = x[..., :1, :1].contiguous(memory_format=torch.channels_last)
    assert not winograd.weight_grad_applies(small, weight)


@needs_kernels
@pytest.mark.parametrize("h,w", [(1, 1), (9, 11), (16, 16)])  # the weights' gradient through torch, then Winograd
def test_norm_act_conv_through_winograd_trains_and_samples_like_torch(h, w):
    """Output and every gradient of a layer with ``winograd`` set match the layer without it; in
    sampling the transformed weights are remade after the weights change in place."""
    torch.manual_seed(0)
    layer = NormActConv(32, 64).to(memory_format=torch.channels_last)
    x = torch.randn(3, 32, h, w).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(3, 64, h, w).contiguous(memory_format=torch.channels_last)
    results = {}
    for on in (False, True):
        layer.winograd = on
        layer.zero_grad()
        x.grad = None
        out = layer(x)
        out.backward(grad)
        results[on] = [out.detach(), x.grad, *(p.grad for p in layer.parameters())]
    for want, got in zip(results[False], results[True]):
        assert _error(got, want) < RELATIVE_ERROR
    with torch.no_grad():
        assert _error(layer(x), results[False][0]) < RELATIVE_ERROR
        layer[2].weight.mul_(-2)
        layer.winograd = False
        want = layer(x)
        layer.winograd = True
        assert _error(layer(x), want) < RELATIVE_ERROR


@needs_kernels
def test_a_bias_per_image_and_a_residual_are_added_as_tiles_are_written(path):
    """conv3x3 with (N, C_out) biases and a residual, and a sampling layer given a time shift and a
    residual, against computing them apart."""
    gen = torch.Generator().manual_seed(2)
    x = _channels_last(3, 32, 7, 9, gen=gen)
    weight = torch.randn(48, 32, 3, 3, generator=gen) / 17
    shift, residual = torch.randn(3, 48, generator=gen), _channels_last(3, 48, 7, 9, gen=gen)
    want = F.conv2d(x.double(), weight.double(), padding=1) + shift.double()[:, :, None, None] + residual.double()
    got = winograd.conv3x3(x, winograd.transform_weight(weight), shift, residual)
    assert _error(got, want) < RELATIVE_ERROR
    layer = NormActConv(32, 48).to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = layer(x) + shift[:, :, None, None] + residual
        layer.winograd = True
        bound = BOUND[winograd.sampling_tile(7, 9)]
        assert _error(layer(x, shift=shift, residual=residual), want.double()) < bound


@needs_kernels
def test_a_layer_made_under_inference_mode_samples_through_winograd():
    """Its weights are inference tensors, which have no version counter to key the cache on."""
    with torch.inference_mode():
        layer = NormActConv(32, 32).to(memory_format=torch.channels_last)
        for side in (8, 14):  # F(4x4, 3x3), then F(7x7, 3x3) from the same layer's weights
            x = torch.randn(2, 32, side, side).contiguous(memory_format=torch.channels_last)
            layer.winograd = False
            want = layer(x)
            layer.winograd = True
            assert _error(layer(x), want.double()) < BOUND[winograd.sampling_tile(side, side)]


@needs_kernels
@TILES
def test_the_fused_pass_gives_the_same_images_at_any_thread_count(tile):
    """Each tile is made whole by one thread, so the thread controller's switches (core.threads)
    change no bit of a sample."""
    gen = torch.Generator().manual_seed(3)
    x = _channels_last(3, 64, 13, 11, gen=gen)
    u = winograd.transform_weight(torch.randn(32, 64, 3, 3, generator=gen) / 24, tile=tile)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(winograd.conv3x3(x, u))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(r, results[0]) for r in results)
