"""core.matmul's linear layers and 1x1 convolutions compute what torch's compute."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core import matmul
from core.unet import PointwiseConv
from tests.native_kernels import MUST_BUILD

needs_kernels = pytest.mark.skipif(not matmul.available() and not MUST_BUILD,
                                   reason="no matmul kernels for this platform or CPU")


@needs_kernels
@pytest.mark.parametrize("rows,c,k", [(100, 64, 192), (7, 24, 8), (197, 40, 48), (1, 16, 16), (13, 32, 40)])
def test_linear_matches_float64(rows, c, k):
    """Rows off the tiles' 6 and off their groups of 96, outputs off their 16, with and without
    bias, against float64."""
    assert matmul.available(), "core._matmul was not built or does not load"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, c, generator=gen)
    weight, bias = torch.randn(k, c, generator=gen) / c ** 0.5, torch.randn(k, generator=gen)
    assert matmul.applies(x, weight)
    residual = torch.randn(rows, k, generator=gen)
    for b in (bias, None):
        want = F.linear(x.double(), weight.double(), None if b is None else b.double())
        torch.testing.assert_close(matmul.linear(x, weight, b).double(), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(matmul.linear(x, weight, b, residual).double(), want + residual.double(),
                                   rtol=1e-5, atol=1e-5)


@needs_kernels
def test_added_must_be_shaped_as_the_output():
    """A residual of another shape is refused before the kernels read past its end."""
    x, weight = torch.randn(12, 16), torch.randn(32, 16)
    with pytest.raises(ValueError, match=r"added is \(12, 16\), the output \(12, 32\)"):
        matmul.linear(x, weight, None, torch.randn(12, 16))


def test_what_the_kernels_do_not_take_goes_to_torch():
    """Out features off 8 and other dtypes: torch's linear, the same result."""
    x = torch.randn(5, 16)
    for weight in (torch.randn(12, 16), torch.randn(8, 16).double()):
        assert not matmul.applies(x.to(weight.dtype), weight)
        assert torch.equal(matmul.linear(x.to(weight.dtype), weight), F.linear(x.to(weight.dtype), weight))
        residual = torch.randn(5, weight.shape[0], dtype=weight.dtype)
        assert torch.equal(matmul.linear(x.to(weight.dtype), weight, None, residual),
                           F.linear(x.to(weight.dtype), weight) + residual)


@needs_kernels
def test_pointwise_convolution_of_channels_last_images():
    """A ResNet's 1x1 convolution in sampling is the linear layer over each pixel's channels,
    channels-last out; with gradients, or on NCHW images, it is torch's convolution."""
    gen = torch.Generator().manual_seed(1)
    conv = PointwiseConv(32, 48)
    x = torch.randn(3, 32, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last)
    want = F.conv2d(x, conv.weight, conv.bias)
    with torch.no_grad():
        assert matmul.pointwise_applies(x) and not matmul.pointwise_applies(x.contiguous())
        got = conv(x)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(conv(x.contiguous()), F.conv2d(x.contiguous(), conv.weight, conv.bias))
    trained = conv(x)
    assert trained.requires_grad and torch.equal(trained, want)
