"""``ddpm eval``: FID and KID of a model's samples (or a folder of images) against the real images.

    ddpm eval RUN_DIR|WEIGHTS|IMAGE_DIR [--data DATA] [--num N] [--sampler S] [--steps K] [--seed S] [--json]
    ddpm eval RUN_DIR|WEIGHTS --compare-samplers [--steps K] [--num N] [--json]

A run folder's result is also appended to its ``eval.jsonl``. Bad input (fewer images than N, a
missing network or weights file, an unreadable folder) is a :class:`UserError`: exit 2, one line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UserError

DEFAULT_NUM = 1000


def add_parser(sub: Any) -> None:
    """The ``eval`` subcommand's options (``sub`` is the CLI's subparsers object)."""
    from .choices import COMPARISON_STEPS, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS

    e = sub.add_parser("eval", help="FID/KID of a model's samples or a folder of images against real images")
    e.add_argument("source", help="run folder, .safetensors weights, tutorial .pth, or a folder of images")
    e.add_argument("--data", help="real images (folder, IDX file, builtin:NAME); default: the run's dataset")
    e.add_argument("--config", help="config YAML (required for a tutorial .pth)")
    e.add_argument("--num", type=int, default=DEFAULT_NUM, help=f"images to score (default {DEFAULT_NUM})")
    e.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER, help=f"sampler (default {DEFAULT_SAMPLER})")
    e.add_argument("--steps", type=int,
                   help=f"reverse steps (default: the sampler's own; {DEFAULT_STEPS} for ddpm)")
    e.add_argument("--seed", type=int, default=0, help="seed of the sampled images (default 0)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to sample and run Inception")
    e.add_argument("--compare-samplers", action="store_true",
                   help=f"score every sampler at {', '.join(map(str, COMPARISON_STEPS))} steps (or --steps)")
    e.add_argument("--json", action="store_true", help="print JSON instead of a summary")


def run(args: argparse.Namespace) -> int:
    from . import evaluate as ev
    from .choices import app_steps
    from .device import pick_device
    from .inception import network_path

    if args.num < 2:
        raise UserError(f"--num must be at least 2 (KID needs two images a side); got {args.num}.")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1; got {args.steps}.")
    network_path()  # say what to install before anything heavy runs
    source = Path(args.source)
    if not source.exists():
        raise UserError(f"{source} does not exist: give a run folder, a weights file or a folder of images.")
    device = pick_device(args.device)
    progress = _Progress()
    if _is_image_folder(source):
        if args.compare_samplers:
            raise UserError(f"{source} is a folder of images: --compare-samplers needs a model (run folder or weights).")
        results = [_eval_folder(source, args, device, progress)]
    else:
        from .cli import _load_config

        loaded = ev.load_model(source, _load_config(args.config) if args.config else None, device=device)
        grid = (ev.comparison_grid((args.steps,) if args.steps else None) if args.compare_samplers
                else [(args.sampler, args.steps or app_steps(args.sampler, loaded.model.schedule.num_timesteps))])
        results = ev.evaluate_source(loaded, grid, n=args.num, data=args.data, seed=args.seed, progress=progress)
    progress.done()
    if args.json:
        out = [r.summary() for r in results]
        print(json.dumps(out if args.compare_samplers else out[0]))
    elif args.compare_samplers:
        print(comparison_table(results))
    else:
        print(describe(results[0]))
    return 0


def describe(result: Any) -> str:
    """Two lines a person reads: the scores, then the real-vs-real yardstick at the same N."""
    how = f"{result.sampler} {result.steps} steps, " if result.sampler else ""
    lines = [f"FID {result.fid:.2f}   KID {result.kid_mean:.4f} ± {result.kid_std:.4f}   "
             f"(N={result.n}, {how}{result.seconds:.0f} s)"]
    if result.reference_fid is not None:
        at = "" if result.reference_n == result.n else f" (only {result.reference_n} held-out images)"
        lines.append(f"real vs real at N={result.reference_n}{at}: FID {result.reference_fid:.2f}   "
                     f"KID {result.reference_kid_mean:.4f}   (lower is better; the real data's own spread)")
    return "\n".join(lines)


def comparison_table(results: list[Any]) -> str:
    """Sampler × steps rows: quality and the seconds sampling took, reference last."""
    rows = [f"{'sampler':<8} {'steps':>5} {'FID':>8} {'KID':>8} {'± std':>7} {'sample s':>9}"]
    for r in results:
        rows.append(f"{r.sampler:<8} {r.steps:>5} {r.fid:>8.2f} {r.kid_mean:>8.4f} {r.kid_std:>7.4f} "
                    f"{r.sample_seconds or 0:>9.1f}")
    ref = results[0]
    if ref.reference_fid is not None:
        rows.append(f"{'real':<8} {'':>5} {ref.reference_fid:>8.2f} {ref.reference_kid_mean:>8.4f}   (N={ref.reference_n})")
    return "\n".join(rows)


def _is_image_folder(path: Path) -> bool:
    from .runs import RunDir

    run = RunDir(path)
    return path.is_dir() and not run.config_path.exists() and not any(path.glob("*.safetensors")) \
        and not run.checkpoints.is_dir()


def _eval_folder(folder: Path, args: argparse.Namespace, device: Any, progress: Any) -> Any:
    """Score a folder of images; they and the real images are compared at the folder's size."""
    from . import evaluate as ev
    from .data import load_dataset

    if not args.data:
        raise UserError(f"{folder} is a folder of images: say which real images to compare it with (--data).")
    channels, size = _folder_shape(folder)
    started = time.perf_counter()
    fake = load_dataset(folder, channels, size).images
    if len(fake) < args.num:
        raise UserError(f"{folder} holds {len(fake)} usable images, fewer than N={args.num}: lower --num "
                        f"to at most {len(fake)} or add images.")
    idx = ev.split_indices(len(fake), args.num)[0]
    real = ev.real_features(load_dataset(args.data, channels, size).images, args.num, device=device, progress=progress)
    return ev.evaluate_images(fake[idx], real, device=device, started=started, progress=progress)


def _folder_shape(folder: Path) -> tuple[int, int]:
    """(channels, size) of the folder's first decodable image: grey stays grey."""
    from PIL import Image

    from .folders import list_images

    for path, _ in list_images(folder)[0]:
        try:
            with Image.open(path) as im:
                return (1 if im.mode in ("1", "L", "I", "I;16", "F") else 3), max(im.size)
        except OSError:
            continue
    raise UserError(f"{folder} holds no readable image: give a folder of PNG/JPEG images.")


class _Progress:
    """One status line on stderr per stage, updated in place."""

    def __init__(self) -> None:
        self._stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage and self._stage is not None:
            print(file=sys.stderr)
        self._stage = stage
        print(f"\r{stage}: {done}/{total}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._stage is not None:
            print(file=sys.stderr)
