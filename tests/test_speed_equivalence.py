"""The speed levers keep the model's function: exact where they should be, within bf16 noise where not.

Fused attention and channels_last change only the order of floating-point operations, so in fp32
they reproduce the tutorial's numbers (``test_unet.py`` holds the fixtures, also channels_last).
Here: a training step with every fp32 lever computes the tutorial's loss and gradients; bf16 autocast
stays within a bound of fp32 for one forward pass; and training in bf16 gives the loss curve fp32
gives, within the spread that a different seed alone causes.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from core import trainer as tr
from core.config import Config, load_config
from core.device import Precision, cpu_has_bf16
from core.unet import UNet

from .conftest import tiny_config_dict

BF16 = Precision(torch.bfloat16)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("name", ["tiny_gray16", "small_rgb32"])
def test_bf16_forward_close_to_fp32_on_fixtures(fixtures_dir, name):
    """bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2 %) and every layer's output is
    rounded, so through ~20-40 layers the output error is some ten times that. Measured on an
    AVX-512 BF16 CPU: 1.3 % (tiny_gray16), 1.8 % (small_rgb32), 1.9 % (tutorial default); the
    5 % bound leaves room for other kernels' summation orders and still fails for a wrong
    layer: zeroing one attention's output projection gives 19 % and 26 %."""
    cfg = load_config(fixtures_dir / f"unet_{name}.yaml")
    model = UNet(cfg.model_params).eval().to(memory_format=torch.channels_last)
    model.load_state_dict(load_file(fixtures_dir / f"unet_{name}.safetensors"))
    io = load_file(fixtures_dir / f"unet_{name}_io.safetensors")
    with torch.inference_mode(), BF16.autocast(torch.device("cpu")):
        eps = model(io["x"], io["t"])
    assert eps.dtype == torch.bfloat16  # autocast really ran the convolutions in bf16
    assert _relative_error(eps, io["eps"]) < 0.05


@pytest.mark.slow
def test_bf16_forward_close_to_fp32_tutorial_default():
    """The tutorial's full network (attention at 28x28, 10M parameters), random weights."""
    torch.manual_seed(0)
    model = UNet(Config().model_params).eval()
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([0, 10, 500, 999])
    with torch.inference_mode():
        ref = model(x, t)
        model.to(memory_format=torch.channels_last)
        with BF16.autocast(torch.device("cpu")):
            eps = model(x, t)
    assert _relative_error(eps, ref) < 0.05


class _Bars:
    """Structured 16px images (bars at random positions and angles) a model can learn quickly."""

    def __init__(self, n: int = 256, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
        angle = torch.rand(n, 1, 1, generator=g) * torch.pi
        offset = torch.rand(n, 1, 1, generator=g) - 0.5
        dist = (xx * angle.cos() + yy * angle.sin() - offset).abs()
        self.images = (torch.exp(-(dist / 0.15) ** 2) * 2 - 1)[:, None]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


def _loss_curve(tmp_path, precision: str, seed: int, steps: int) -> torch.Tensor:
    cfg = Config.from_dict(tiny_config_dict(
        max_steps=steps, precision=precision, seed=seed, batch_size=16, lr=2e-3,
        checkpoint_every_steps=10_000,
    ))
    losses: list[float] = []
    trainer = tr.Trainer(cfg, tmp_path / f"{precision}-{seed}", dataset=_Bars(),
                         on_event=lambda e: losses.append(e.loss) if isinstance(e, tr.StepDone) else None)
    trainer.run()
    return torch.tensor(losses)


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16(), reason="without native bf16, auto precision never trains in bf16")
def test_bf16_training_matches_fp32_loss_curve(tmp_path):
    """Same seed in bf16 and fp32 must differ less than fp32 with another seed differs.

    Windowed means over 150 steps: the per-step loss is noisy (random t and noise each step),
    so curves are compared where they are informative; the seed-to-seed spread is the noise.
    """
    steps, window = 150, 50
    fp32 = _loss_curve(tmp_path, "fp32", 0, steps)
    bf16 = _loss_curve(tmp_path, "bf16", 0, steps)
    other_seed = _loss_curve(tmp_path, "fp32", 1, steps)

    def windows(c: torch.Tensor) -> torch.Tensor:
        return c.view(-1, window).mean(1)

    assert windows(fp32)[-1] < 0.5 * windows(fp32)[0]  # it learned something: the check has teeth
    precision_gap = (windows(bf16) - windows(fp32)).abs().max()
    seed_gap = (windows(other_seed) - windows(fp32)).abs().max()
    assert precision_gap <= max(seed_gap, 0.1 * windows(fp32)[-1])


def test_fp32_fast_step_equals_tutorial_step(tmp_path):
    """Fused attention, channels_last and foreach Adam change no result in fp32: a step of the
    app's trainer computes the loss and gradients the tutorial's way does (naive attention,
    NCHW, per-tensor Adam). Gradients, not updated weights: Adam divides by sqrt(v), which
    turns float noise in a near-zero gradient into a full step of either sign."""
    cfg = Config.from_dict(tiny_config_dict(precision="fp32"))
    batch = _Bars(8).images
    runs = []
    for fast in (False, True):
        trainer = tr.Trainer(cfg, tmp_path / str(fast), attention_impl="auto" if fast else "naive")
        if not fast:
            trainer.memory_format = torch.contiguous_format
            trainer.model.to(memory_format=torch.contiguous_format)
            trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=cfg.train_params.lr, foreach=False)
        loss = trainer._train_step(trainer.model, batch)
        runs.append((loss, {n: p.grad for n, p in trainer.model.named_parameters()}))
    (slow_loss, slow_grads), (fast_loss, fast_grads) = runs
    assert fast_loss == pytest.approx(slow_loss, rel=1e-5)
    for name, grad in slow_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6)
