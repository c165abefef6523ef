"""What a user sees after pressing Train with a preset: sample grids at set wall-clock times.

Trains with :class:`core.trainer.Trainer` exactly as the app does and, when the training clock
passes each mark (default 2, 5 and 10 minutes), samples a grid from the EMA weights the way
the window does (``core.choices.DEFAULT_SAMPLER`` at ``DEFAULT_STEPS``) and saves it. Sampling
pauses the training clock, so a mark means "minutes of training since Train was pressed", dataset loading included. Writes into OUT:
``grid-02min.png`` ..., ``loss.json`` (step, seconds, loss for every step; marks; the CPU kind
and how the model ran; load average; settings) and ``loss.png`` (the loss, smoothed, against minutes).

    .venv/bin/python bench/fast_preset_progress.py OUT [--config preset:fast-cpu] [--data builtin:fashion-mnist]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from PIL import Image, ImageDraw

from bench.common import machine, resolve_config
from core import events
from core import trainer as tr
from core.allocator import keep_freed_memory
from core.choices import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from core.exports import save_grid
from core.sampling import SamplingModel


def plot_loss(minutes: list[float], losses: list[float], marks: list[float], path: Path) -> None:
    """Loss (exponential moving average, log scale) against training minutes, as a small PNG."""
    w, h, pad = 640, 360, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    smooth, ema = [], None
    for v in losses:
        ema = v if ema is None else 0.98 * ema + 0.02 * v
        smooth.append(math.log10(max(ema, 1e-6)))
    lo, hi = min(smooth), max(smooth)
    x_max = max(minutes[-1], marks[-1])

    def xy(m: float, v: float) -> tuple[float, float]:
        return pad + (w - 2 * pad) * m / x_max, h - pad - (h - 2 * pad) * (v - lo) / max(hi - lo, 1e-9)

    draw.rectangle([pad, pad, w - pad, h - pad], outline="black")
    for m in marks:
        draw.line([xy(m, lo), xy(m, hi)], fill=(200, 200, 200))
        draw.text((xy(m, lo)[0] - 10, h - pad + 5), f"{m:g} min", fill="black")
    draw.line([xy(m, v) for m, v in zip(minutes, smooth)], fill=(30, 90, 200), width=2)
    draw.text((pad, 10), f"loss (EMA, log10) from {10 ** hi:.3f} to {10 ** lo:.3f}", fill="black")
    img.save(path)


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()  # as the app and the CLI do at start (see core.allocator)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the grids and the loss curve")
    parser.add_argument("--config", default="preset:fast-cpu", help="preset:NAME or a YAML path")
    parser.add_argument("--data", help="dataset, e.g. builtin:fashion-mnist (default: the config's)")
    parser.add_argument("--minutes", default="2,5,10", help="wall-clock marks, comma-separated")
    parser.add_argument("--num", type=int, default=64, help="images per grid")
    parser.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER, help="sampler of the grids")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="sampling steps per grid")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; 1 is the steadier choice "
                        "on a machine whose cores other work also uses")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = resolve_config(args.config)
    if args.data:
        config = config.replace("dataset_params", im_path=args.data)
    config = config.replace("train_params", max_steps=10**9, sample_every_steps=None)
    marks = [float(m) for m in args.minutes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    log: list[tuple[int, float, float]] = []
    paused = 0.0
    start = time.perf_counter()
    pending = list(marks)
    trainer: tr.Trainer

    def training_minutes() -> float:
        return (time.perf_counter() - start - paused) / 60

    def on_event(event: events.Event) -> None:
        nonlocal paused
        if not isinstance(event, events.StepDone):
            return
        log.append((event.step, training_minutes() * 60, event.loss))
        if pending and training_minutes() >= pending[0]:
            mark = pending.pop(0)
            t0 = time.perf_counter()
            model = SamplingModel(trainer.ema_model, config, trainer.device, trainer.precision)
            images = model.images(num_images=args.num, sampler=args.sampler, steps=args.steps, seed=0)
            save_grid(images, args.out / f"grid-{mark:02g}min.png")
            paused += time.perf_counter() - t0
            print(f"{mark:g} min: step {event.step}, loss {event.loss:.4f}, grid in "
                  f"{time.perf_counter() - t0:.1f} s, load {os.getloadavg()}", flush=True)
            if not pending:
                trainer.request_stop()

    trainer = tr.Trainer(config, args.out / "run", on_event=on_event)
    trainer.run()
    facts = machine(trainer.device)
    result = {
        "config": args.config, "data": config.dataset_params.im_path, "marks_min": marks,
        "cpu_kind": facts["cpu_kind"], "setup": trainer.tuned.choice.describe(trainer.device),
        "steps_at_marks": {}, "machine": facts, "precision": trainer.precision.name,
        "batch_size": config.train_params.batch_size, "threads": torch.get_num_threads(), "log": log,
    }
    for mark in marks:
        reached = [s for s, sec, _ in log if sec <= mark * 60]
        result["steps_at_marks"][f"{mark:g}"] = reached[-1] if reached else 0
    (args.out / "loss.json").write_text(json.dumps(result))
    plot_loss([sec / 60 for _, sec, _ in log], [loss for *_, loss in log], marks, args.out / "loss.png")


if __name__ == "__main__":
    main()
