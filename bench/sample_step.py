"""Sampling-step benchmark: the tutorial's reverse loop against the app's sampler, step by step.

The naive path is the tutorial's ``sample()``: ``nn.MultiheadAttention``'s own forward as the
tutorial calls it (``naive-attention_kernel``: the explicit softmax kernel instead), fp32, NCHW, under
``torch.no_grad``, one ancestral step (:meth:`NoiseSchedule.step`) per timestep. The fast path is
:func:`core.samplers.sample` as the app calls it: the attention kernel, precision and memory
format :mod:`core.autotune` picks by timing them here, inference mode. Both take the same DDPM
steps from t = T-1 down, one step of each in alternation, so outside load hits both alike, each
in a process of its own (:mod:`bench.common`). Weights are random: the cost of a step does not
depend on them.

    .venv/bin/python bench/sample_step.py [--device cpu] [--batch 100] [--repeats 10] [--config default]

Prints JSON: per path the seconds per reverse step (median/min/max), images/s, peak RSS from a
fresh subprocess per path, and the naive/fast ratio.
"""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import BenchPath, add_common_args, child, compare, emit, resolve_config, setup
from core.config import Config
from core.device import pick_precision
from core.sampling import SamplingModel
from core.schedule import NoiseSchedule
from core.unet import UNet

PATHS = ("naive", "naive-attention_kernel", "fast")


def naive_steps(config: Config, device: torch.device, batch: int, attention: str = "tutorial") -> Iterator[None]:
    """The tutorial's sampling loop, one yield per reverse step.

    With ``attention="tutorial"`` the attention layers run ``nn.MultiheadAttention``'s forward as
    the tutorial calls it, which in eval mode without gradients takes torch's fused native
    kernel; ``"naive"`` runs the explicit softmax-attention kernel instead.
    """
    m = config.model_params
    model = UNet(m, attention_impl=attention).to(device).eval()
    schedule = NoiseSchedule.from_config(config.diffusion_params)
    xt = torch.randn(batch, m.im_channels, m.im_size, m.im_size, device=device)
    for t in reversed(range(schedule.num_timesteps)):
        with torch.no_grad():  # per step, never across a yield: the caller's code keeps its grad mode
            eps = model(xt, torch.as_tensor(t, device=device).unsqueeze(0))
            xt, _ = schedule.step(xt, eps, t)
        yield


def fast_sampling(config: Config, device: torch.device, batch: int) -> SamplingModel:
    """A random network of ``config`` as the app samples with it: kernels, precision and memory
    format timed by :mod:`core.autotune` for batches of ``batch`` (or recalled)."""
    model = UNet(config.model_params).to(device).eval()
    return SamplingModel(model, config, device, pick_precision(config.train_params.precision, device)).tuned(batch)


def fast_steps(config: Config, device: torch.device, batch: int, chosen: dict[str, str]) -> Iterator[None]:
    """DDPM through :func:`fast_sampling`'s model, one yield per reverse step; ``chosen`` gets the
    choice's description."""
    sampling = fast_sampling(config, device, batch)
    chosen["fast_setup"] = sampling.setup
    for _ in sampling.frames(num_images=batch, sampler="ddpm"):
        yield


def stepper(steps: Iterator[None], device: torch.device) -> Callable[[], None]:
    """One reverse step per call, the device synchronised after it."""
    def step() -> None:
        next(steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, batch=100, repeats=10)
    args = parser.parse_args(argv)
    device = setup(args)
    config = resolve_config(args.config)
    chosen: dict[str, str] = {}
    makers = {"naive": naive_steps, "naive-attention_kernel": functools.partial(naive_steps, attention="naive"),
              "fast": functools.partial(fast_steps, chosen=chosen)}

    def make(name: str) -> BenchPath:
        return BenchPath(stepper(makers[name](config, device, args.batch), device), lambda: dict(chosen))

    if child(args, make, device):
        return
    result = compare("sample_step", args, device, list(PATHS), {})
    result["settings"].update(result["path_info"]["fast"])
    emit(result)


if __name__ == "__main__":
    main()
