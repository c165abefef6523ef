"""Where the app's sampling step spends its time, layer by layer, beside the arithmetic each
layer needs and the machine's matmul peak.

The step ratios of ``bench/sample_step.py`` say how far the app is ahead of the tutorial's way,
not how far it could still go. This times each layer of a real DDPM step (the network set up as
the app samples with it, :func:`bench.sample_step.fast_sampling`) with module hooks, and counts
the multiply-adds of the way it ran: Winograd's 36 products per 4x4 output tile, or 81 per 7x7
tile (:func:`core.winograd.sampling_tile`), where :mod:`core.winograd` took the convolution, nine
per output pixel where torch's direct kernel
did, the projections and both attention products for attention. A layer's GFLOP/s against the
peak measured in the same run is how much of the machine it used; the whole step's floor is its
GFLOP at that peak. Norms, activations and the transforms around the products add time and no
counted arithmetic, so they show as layers below the peak, or as ``other`` (what the hooks do not
cover: the time embedding's input, the sampler's update, concatenations).

    .venv/bin/python -m bench.layer_times [--batch 100] [--repeats 3] [--threads 2] [--config default]

Prints JSON: per layer (in forward order) its kind, input shape, median milliseconds per step,
GFLOP and share of the peak; the same summed per kind; and the step's median seconds, its
floor at the peak and the share of the peak the whole step reached.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from bench.common import add_common_args, emit, machine, resolve_config, setup
from bench.sample_step import fast_sampling
from core import norm_act, winograd
from core.unet import NormActConv, SelfAttention


@dataclass
class Layer:
    """One timed module: what it is, what one pass of it costs in arithmetic, its times."""

    name: str
    kind: str = ""
    shape: tuple[int, ...] = ()
    flop: float = 0.0
    seconds: list[float] = field(default_factory=list)


def timed_modules(net: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The modules to time, none inside another: each NormActConv and attention layer whole, and
    the convolutions, norms and linear layers outside them."""
    inside = {id(m) for unit in net.modules() if isinstance(unit, (NormActConv, SelfAttention))
              for m in unit.modules() if m is not unit}
    for name, m in net.named_modules():
        if id(m) not in inside and isinstance(m, (NormActConv, SelfAttention, nn.Conv2d, nn.ConvTranspose2d,
                                                  nn.GroupNorm, nn.Linear)):
            yield name, m


def cost(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> tuple[str, float]:
    """(kind, FLOP) of one pass of ``m`` from input ``x`` to ``out``, counted as its kernel runs it."""
    if isinstance(m, NormActConv):
        conv = m[2]
        n, cin, h, w = x.shape
        if m.winograd and norm_act.applies(x) and winograd.applies(x, conv.weight):
            tile = winograd.sampling_tile(h, w)
            tiles = math.ceil(h / tile) * math.ceil(w / tile)
            return "conv3x3 winograd", 2.0 * n * tiles * (tile + 2) ** 2 * cin * conv.out_channels
        return "conv3x3 direct", 2.0 * n * h * w * 9 * cin * conv.out_channels
    if isinstance(m, SelfAttention):
        b, tokens, c = x.shape
        return f"attention, heads of {c // m.num_heads}", 8.0 * b * tokens * c * c + 4.0 * b * tokens * tokens * c
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return f"conv {kh}x{kw} stride {m.stride[0]}", 2.0 * out.numel() * m.in_channels // m.groups * kh * kw
    if isinstance(m, nn.ConvTranspose2d):
        kh, kw = m.kernel_size
        return f"transposed conv {kh}x{kw}", 2.0 * x.numel() * m.out_channels * kh * kw
    if isinstance(m, nn.Linear):
        return "linear", 2.0 * x.numel() * m.out_features
    return "group norm", 0.0


def hook(layers: dict[str, Layer], name: str, m: nn.Module) -> None:
    """Time every pass of ``m`` into ``layers[name]``, and note its kind and cost at the first."""
    layer = layers[name] = Layer(name)
    started: list[float] = []

    def before(_: nn.Module, inputs: tuple) -> None:
        started.append(time.perf_counter())

    def after(_: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        layer.seconds.append(time.perf_counter() - started.pop())
        if not layer.kind:
            layer.kind, layer.flop = cost(m, inputs[0], out)
            layer.shape = tuple(inputs[0].shape)

    m.register_forward_pre_hook(before)
    m.register_forward_hook(after)


def profile(config_spec: str, device: torch.device, batch: int, warmup: int, repeats: int) -> dict:
    """Time ``repeats`` DDPM steps of ``batch`` images after ``warmup`` ones, layer by layer."""
    config = resolve_config(config_spec)
    sampling = fast_sampling(config, device, batch)
    layers: dict[str, Layer] = {}
    for name, m in timed_modules(sampling.net):
        hook(layers, name, m)
    steps = iter(sampling.frames(num_images=batch, sampler="ddpm"))
    for _ in range(warmup):
        next(steps)
    for layer in layers.values():
        layer.seconds.clear()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        next(steps)
        walls.append(time.perf_counter() - start)
    return summary(layers, walls, repeats) | {"fast_setup": sampling.setup, "precision": sampling.precision.name}


def summary(layers: dict[str, Layer], walls: list[float], repeats: int) -> dict:
    """The layers' medians per step, their sums per kind, and the step against its floor."""
    rows = []
    for layer in layers.values():
        passes = len(layer.seconds) // repeats  # a module may run more than once a step
        per_step = [sum(layer.seconds[i * passes:(i + 1) * passes]) for i in range(repeats)]
        rows.append({"name": layer.name, "kind": layer.kind, "input_shape": list(layer.shape),
                     "ms": 1e3 * statistics.median(per_step), "gflop": passes * layer.flop / 1e9})
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: {"ms": 0.0, "gflop": 0.0})
    for row in rows:
        kinds[row["kind"]]["ms"] += row["ms"]
        kinds[row["kind"]]["gflop"] += row["gflop"]
    step_s = statistics.median(walls)
    layers_ms = sum(row["ms"] for row in rows)
    return {"step_s": step_s, "layers": rows, "by_kind": dict(kinds),
            "other_ms": 1e3 * step_s - layers_ms, "gflop": sum(row["gflop"] for row in rows)}


def against_peak(result: dict, peak_gflops: float) -> None:
    """Add each layer's, kind's and the step's share of ``peak_gflops`` (GFLOP/s) to ``result``."""
    for row in [*result["layers"], *result["by_kind"].values()]:
        row["gflops"] = row["gflop"] / row["ms"] * 1e3 if row["ms"] else 0.0
        row["share_of_peak"] = row["gflops"] / peak_gflops
    result["floor_s"] = result["gflop"] / peak_gflops
    result["share_of_peak"] = result["floor_s"] / result["step_s"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, batch=100, repeats=3)
    args = parser.parse_args(argv)
    device = setup(args)
    facts = machine(device)
    result = profile(args.config, device, args.batch, args.warmup, args.repeats)
    peaks = facts["matmul_peak_gflops"]
    against_peak(result, peaks.get(result["precision"], peaks["fp32"]))
    facts["loadavg_end"] = os.getloadavg()
    emit({"bench": "layer_times", "machine": facts,
          "settings": {"config": args.config, "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup},
          **result})


if __name__ == "__main__":
    main()
