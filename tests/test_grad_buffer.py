"""core.grad_buffer.GradBuffer: the same steps as torch's fresh gradients, in one buffer."""
from __future__ import annotations

import torch

from core.adam import Adam
from core.grad_buffer import GradBuffer, applies


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3), torch.nn.Linear(3, 3))
    return model.to(memory_format=torch.channels_last)


def _steps(model: torch.nn.Module, optimizer: Adam, buffer: GradBuffer | None, n: int,
           skip_last_layer_at: int | None = None) -> None:
    """Adam steps over two micro-batches each; at step ``skip_last_layer_at`` the last layer
    takes no part (its parameters get no gradient)."""
    gen = torch.Generator().manual_seed(1)
    for step in range(n):
        if buffer is None:
            optimizer.zero_grad(set_to_none=True)
        else:
            buffer.zero()
        layers = model[:4] if step == skip_last_layer_at else model
        for _ in range(2):
            x = torch.randn(5, 2, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
            layers(x).square().mean().backward()
        if buffer is not None:
            buffer.settle()
        optimizer.step()


def test_steps_equal_those_with_fresh_gradients_bit_for_bit():
    ours, theirs = _model(), _model()
    _steps(ours, Adam(ours.parameters(), lr=3e-3), GradBuffer(list(ours.parameters())), 5, skip_last_layer_at=2)
    _steps(theirs, Adam(theirs.parameters(), lr=3e-3), None, 5, skip_last_layer_at=2)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_gradients_are_views_of_one_buffer_laid_out_like_their_parameters():
    model = _model()
    params = list(model.parameters())
    buffer = GradBuffer(params)
    buffer.zero()
    conv = model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert conv.grad.stride() == conv.stride()
    storages = {p.grad.untyped_storage().data_ptr() for p in params}
    assert len(storages) == 1


def test_a_parameter_no_pass_reached_is_left_without_gradient_and_unmoved():
    model = _model()
    buffer = GradBuffer(list(model.parameters()))
    optimizer = Adam(model.parameters(), lr=1e-2)
    last = model[4].weight.detach().clone()
    _steps(model, optimizer, buffer, 1, skip_last_layer_at=0)
    assert model[4].weight.grad is None
    assert torch.equal(model[4].weight, last)
    assert model[3].weight.grad is not None


def test_applies_to_cpu_parameters_of_one_dtype_only():
    model = _model()
    assert applies(list(model.parameters()))
    model[4].double()
    assert not applies(list(model.parameters()))
    assert not applies([torch.nn.Parameter(torch.zeros(2), requires_grad=False)])
