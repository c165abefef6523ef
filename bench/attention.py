"""Attention-kernel benchmark: each of the model's attention shapes through every kernel.

The shapes are those of the chosen config's attention layers at the given batch (tokens and
channels per layer, heads from the config), each once; the kernels are those of
:mod:`core.attention`. Every kernel runs the same inputs, forward only (sampling) and forward
plus backward (training), in alternation so outside load hits all alike.

    .venv/bin/python bench/attention.py [--device cpu] [--batch 64] [--repeats 5] [--dtype bf16] [--config default]

Prints JSON: per shape and kernel the milliseconds (median/min/max), and per shape each kernel's
speed-up over the tutorial's (naive) kernel; the sum over all layers of the network too.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import add_common_args, alternate, emit, machine, resolve_config, setup
from core.attention import attention
from core.config import Config
from core.unet import SelfAttention, UNet

KERNELS = ("naive", "sdpa", "chunked", "narrow")  # narrow: torch's sdpa or chunked where its kernels do not apply
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def attention_shapes(config: Config) -> list[tuple[int, int]]:
    """(tokens, channels) of every attention layer of the config's network, in forward order."""
    model = UNet(config.model_params).eval()
    shapes: list[tuple[int, int]] = []

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        shapes.append(tuple(inputs[0].shape[1:]))  # type: ignore[arg-type]

    for m in model.modules():
        if isinstance(m, SelfAttention):
            m.register_forward_pre_hook(record)
    m = config.model_params
    with torch.no_grad():
        model(torch.zeros(1, m.im_channels, m.im_size, m.im_size), torch.zeros(1, dtype=torch.long))
    return shapes


def kernel_step(impl: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backward: bool,
                device: torch.device) -> Callable[[], None]:
    grad = torch.randn_like(q)

    def step() -> None:
        if backward:
            attention(q, k, v, impl).backward(grad)  # type: ignore[arg-type]
        else:
            with torch.no_grad():
                attention(q, k, v, impl)  # type: ignore[arg-type]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, batch=64, repeats=5)
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    args = parser.parse_args(argv)
    device = setup(args)
    config = resolve_config(args.config)
    heads = config.model_params.num_heads
    shapes = attention_shapes(config)
    rows = {}
    totals = {f"{k}_{mode}": 0.0 for k in KERNELS for mode in ("forward", "train")}
    for tokens, channels in sorted(set(shapes), reverse=True):
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(args.batch, heads, tokens, channels // heads, generator=gen)
                   .to(device, DTYPES[args.dtype]).requires_grad_() for _ in range(3))
        row = {"layers": shapes.count((tokens, channels)), "head_dim": channels // heads}
        for mode, backward in (("forward", False), ("train", True)):
            timed = alternate({impl: kernel_step(impl, q, k, v, backward, device) for impl in KERNELS},
                              args.warmup, args.repeats)
            for impl, t in timed.items():
                ms = {key: value * 1e3 for key, value in t["step_s"].items() if key != "n"}
                row[f"{impl}_{mode}_ms"] = ms
                totals[f"{impl}_{mode}"] += ms["median"] * row["layers"]
            for impl in KERNELS:
                row[f"{impl}_{mode}_speedup_vs_naive"] = (
                    row[f"naive_{mode}_ms"]["median"] / row[f"{impl}_{mode}_ms"]["median"])
        rows[f"{tokens}x{channels}"] = row
    emit({"bench": "attention", "machine": machine(device), "settings": {
        "config": args.config, "batch": args.batch, "dtype": args.dtype, "heads": heads,
        "repeats": args.repeats, "warmup": args.warmup,
    }, "shapes": rows, "network_total_ms": totals})


if __name__ == "__main__":
    main()
