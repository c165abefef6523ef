"""The fused channels-last GroupNorm+SiLU kernels compute what torch's layers compute."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core import norm_act
from tests.native_kernels import MUST_BUILD

needs_kernels = pytest.mark.skipif(not norm_act.available() and not MUST_BUILD,
                                   reason="no norm_act kernels for this platform or CPU")
GROUPS = 8


def _reference(x, gamma, beta, grad, silu=True):
    """Output and (x, gamma, beta) gradients of torch's group norm (then SiLU), in x's dtype."""
    inputs = [t.detach().clone().requires_grad_() for t in (x, gamma, beta)]
    out = F.group_norm(inputs[0], GROUPS, inputs[1], inputs[2], 1e-5)
    out = F.silu(out) if silu else out
    return [out.detach(), *torch.autograd.grad(out, inputs, grad.to(out.dtype))]


@needs_kernels
@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("shape", [(3, 16, 10, 10), (2, 32, 7, 7), (4, 64, 5, 3), (2, 8, 1, 1), (1, 256, 7, 7)])
def test_fused_norm_act_matches_float64_as_closely_as_torch(shape, silu):
    """Output and the three gradients against float64, within twice the error of torch's own fp32
    layers plus four fp32 ulps of the largest value (torch's own error on one seed can be a lucky
    fraction of that), for 1 to 32 channels per group, pixel counts off the vector width, a single
    pixel, and inputs whose mean is large against their spread (where E[x^2] - E[x]^2 would cancel
    and x * scale + shift loses the centred value); with the SiLU and without it."""
    assert norm_act.available(), "core._norm_act was not built or does not load"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 20
    gamma, beta = (torch.randn(shape[1], generator=gen, dtype=torch.float64) for _ in range(2))
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    exact = _reference(x, gamma, beta, grad, silu)
    theirs = _reference(x.float(), gamma.float(), beta.float(), grad.float(), silu)
    xf = x.float().contiguous(memory_format=torch.channels_last)
    assert norm_act.applies(xf)
    ours = [norm_act.forward(xf, gamma.float(), beta.float(), GROUPS, 1e-5, silu),
            *norm_act.backward(xf, gamma.float(), beta.float(), grad.float(), GROUPS, 1e-5, silu)]
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    for name, want, got, their in zip(("out", "x", "gamma", "beta"), exact, ours, theirs):
        torch_error = float((their.double() - want).abs().max())
        error = float((got.double() - want).abs().max())
        assert error <= 2 * torch_error + 4 * torch.finfo(torch.float32).eps * float(want.abs().max()), name


@needs_kernels
def test_fused_norm_act_takes_only_its_case():
    """NCHW memory, channel counts off 8, other dtypes and 3-d inputs go to torch's kernels."""
    x = torch.randn(2, 16, 4, 4)
    assert norm_act.applies(x.contiguous(memory_format=torch.channels_last))
    assert not norm_act.applies(x)
    assert not norm_act.applies(torch.randn(2, 12, 4, 4).contiguous(memory_format=torch.channels_last))
    assert not norm_act.applies(x.bfloat16().contiguous(memory_format=torch.channels_last))
    assert not norm_act.applies(torch.randn(2, 16, 4))
