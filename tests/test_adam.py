"""core.adam.Adam: torch's fused Adam step for step, torch's state layout, and no torch._dynamo."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from core.adam import Adam
from core.checkpoint import load_checkpoint, save_checkpoint
from core.config import Config
from core.unet import UNet

from .conftest import tiny_config_dict


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))


def _steps(model: torch.nn.Module, optimizer, n: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(5, 2, 8, 8, generator=gen)).square().mean().backward()
        optimizer.step()


def test_steps_equal_torch_fused_adam_bit_for_bit():
    ours, theirs = _model(), _model()
    _steps(ours, Adam(ours.parameters(), lr=3e-3), 7)
    _steps(theirs, torch.optim.Adam(theirs.parameters(), lr=3e-3, fused=True), 7)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_channels_last_parameters_step_like_contiguous_ones():
    """The fused kernel walks memory: a channels-last weight with a gradient laid out otherwise,
    and moments loaded from a contiguous state, must still pair each element with its own."""
    gen = torch.Generator().manual_seed(0)
    flat = torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=gen))
    cl = torch.nn.Parameter(flat.detach().clone(memory_format=torch.channels_last))
    assert not cl.is_contiguous()
    opt_flat, opt_cl = Adam([flat], lr=3e-3), Adam([cl], lr=3e-3)
    for step in range(5):
        grad = torch.randn(8, 4, 3, 3, generator=gen)
        flat.grad, cl.grad = grad.clone(), grad.clone()
        opt_flat.step()
        opt_cl.step()
        if step == 2:
            opt_cl.load_state_dict(copy.deepcopy(opt_flat.state_dict()))
    assert torch.equal(flat, cl)


def test_parameters_without_gradients_are_left_alone():
    model = _model()
    frozen = model[3].weight.detach().clone()
    model[3].weight.requires_grad_(False)
    optimizer = Adam(model.parameters(), lr=1e-2)
    _steps(model, optimizer, 2)
    assert torch.equal(model[3].weight, frozen)
    assert model[3].weight not in optimizer.state


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
def test_state_moves_between_this_adam_and_torch_adam(direction):
    """A checkpoint written on the CPU resumes on a GPU's torch Adam and the other way round."""
    first, second = (Adam, torch.optim.Adam) if direction == "ours_to_torch" else (torch.optim.Adam, Adam)
    a, b, reference = _model(), _model(), _model()
    opt_a = first(a.parameters(), lr=2e-3)
    _steps(a, opt_a, 3)
    b.load_state_dict(a.state_dict())
    opt_b = second(b.parameters(), lr=2e-3)
    opt_b.load_state_dict(opt_a.state_dict())
    _steps(b, opt_b, 2, seed=2)

    opt_ref = torch.optim.Adam(reference.parameters(), lr=2e-3, foreach=True)
    _steps(reference, opt_ref, 3)
    _steps(reference, opt_ref, 2, seed=2)
    for x, y in zip(b.parameters(), reference.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert opt_b.state_dict()["state"][0]["step"] == 5


def test_state_for_other_parameters_is_refused():
    small = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="different set of parameters"):
        Adam(_model().parameters(), lr=1e-3).load_state_dict(
            Adam(small.parameters(), lr=1e-3).state_dict())


def test_checkpoint_round_trip_keeps_the_moments(tmp_path):
    cfg = Config.from_dict(tiny_config_dict())
    model, ema = UNet(cfg.model_params), UNet(cfg.model_params)
    optimizer = Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 16, 16), torch.tensor([3, 9])).square().mean().backward()
    optimizer.step()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model=model, ema=ema, optimizer=optimizer, step=1, config=cfg)
    restored = Adam(model.parameters(), lr=5.0)
    load_checkpoint(path, model=model, ema=ema, optimizer=restored)
    assert restored.param_groups[0]["lr"] == 1e-3
    for p in model.parameters():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(restored.state[p][name], optimizer.state[p][name])


@pytest.mark.slow
def test_training_on_the_cpu_never_imports_torch_dynamo():
    """The point of this class: torch.optim would import it (0.15 GiB of resident memory)."""
    code = (
        "import sys, tempfile, torch\n"
        "from core import trainer as tr\n"
        "from core.config import Config\n"
        "from tests.conftest import tiny_config_dict\n"
        "t = tr.Trainer(Config.from_dict(tiny_config_dict()), tempfile.mkdtemp())\n"
        "t._train_step(t.model, torch.rand(4, 1, 16, 16) * 2 - 1)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
