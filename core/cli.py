"""``ddpm``: train and sample from the command line, the contract scripts rely on.

Exit status 0 on success and 2 on a user error, reported as one line on stderr that names the
problem (never a traceback for bad input). Ctrl-C during training stops after the current
step and writes a checkpoint; a second Ctrl-C aborts.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from . import eval_command
from .allocator import keep_freed_memory, restart_tuned
from .choices import DEFAULT_GUIDANCE, SAMPLER_TABLE, SAMPLERS
from .errors import UserError

EXIT_USER_ERROR = 2
MIN_IMAGE_SIZE = 4  # model_params.im_size's minimum


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr and exit 2, as for every other user error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole_number(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low``; anything else is refused before work starts."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {low}, got {text!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="ddpm", description="Train a DDPM on your images and sample from it.")
    p.add_argument("--version", action="version", version=f"ddpm {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train (or resume) a run")
    t.add_argument("config", help="YAML config (the tutorial's format) or preset:NAME")
    t.add_argument("--data", help="dataset folder or IDX file; overrides dataset_params.im_path")
    t.add_argument("--run-dir", help="run folder (default: ./<task_name>)")
    t.add_argument("--max-steps", type=_whole_number(1), help="stop after this many steps in total")
    t.add_argument("--max-minutes", type=float, help="stop after this many minutes of training time")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="overrides train_params.device")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")

    s = sub.add_parser("sample", help="generate images from a run, weights file or tutorial .pth")
    s.add_argument("source", help="run folder, .safetensors weights/checkpoint, or tutorial .pth")
    s.add_argument("--config", help="config YAML (required for a tutorial .pth)")
    s.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0],
                   help=f"{SAMPLERS[0]} is the tutorial's (all T steps); the others need far fewer "
                        f"(default: {SAMPLERS[0]})")
    defaults = ", ".join(f"{spec.default_steps or 'all T'} for {spec.name}" for spec in SAMPLER_TABLE)
    s.add_argument("--steps", type=_whole_number(1), help=f"reverse steps (default: {defaults})")
    for option in {o.name: o for spec in SAMPLER_TABLE for o in spec.options}.values():
        takers = " and ".join(spec.name for spec in SAMPLER_TABLE if spec.option(option.name))
        s.add_argument(f"--{option.name}", type=float, help=f"{takers} only: {option.help} "
                                                           f"(default {option.default:g})")
    s.add_argument("--num", type=_whole_number(1), help="number of images (default: train_params.num_samples)")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same images (default: 0)")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="where to sample: auto picks cuda, then mps, then cpu")
    s.add_argument("--grid", help="write the final grid to this PNG")
    s.add_argument("--animation", help="write the denoising (xt | x0) to this .gif or .mp4")
    s.add_argument("--images", help="write each final image as a PNG into this folder")
    s.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="class-conditional runs: draw this class (repeatable; 'all' = one row per class); "
                        "--num is shared among them")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale w with --class: "
                   f"0 ignores the class, 1 plain conditional, above 1 guided (default {DEFAULT_GUIDANCE:g})")

    sc = sub.add_parser("scan", help="check a dataset folder: count, sizes, skipped files")
    sc.add_argument("path", help="dataset folder, IDX images file or builtin:NAME")
    sc.add_argument("--channels", type=int, choices=[1, 3], default=1,
                    help="convert to 1 (grayscale) or 3 (RGB) channels, as model_params.im_channels (default: 1)")
    sc.add_argument("--size", type=_whole_number(MIN_IMAGE_SIZE), default=28,
                    help="resize the shorter side to this many pixels, then centre-crop square, "
                         "as model_params.im_size (default: 28)")

    eval_command.add_parser(sub)
    return p


def _load_config(spec: str):
    from .config import load_config
    from .presets import load_preset

    return load_preset(spec.split(":", 1)[1]) if spec.startswith("preset:") else load_config(spec)


def _report_dataset(dataset, channels: int, size: int) -> None:
    from .data import dataset_advice, fit_description

    report = dataset.report
    print(f"dataset: {report.summary()}", file=sys.stderr)
    print(f"  as the model sees them: {fit_description(channels, size)}", file=sys.stderr)
    for skipped in report.skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    for advice in dataset_advice(report, channels, size):
        print(f"warning: {advice}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import events as ev
    from .trainer import Trainer
    from .classes import conditioning_classes
    from .data import load_dataset

    cfg = _load_config(args.config)
    changes = {k: v for k, v in {"max_steps": args.max_steps, "max_minutes": args.max_minutes,
                                      "device": args.device}.items() if v is not None}
    if changes:
        cfg = cfg.replace("train_params", **changes)
    if args.data:
        cfg = cfg.replace("dataset_params", im_path=args.data)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    run_dir = Path(args.run_dir or cfg.train_params.task_name)
    m = cfg.model_params
    dataset = load_dataset(cfg.dataset_params.im_path, m.im_channels, m.im_size)
    if m.class_conditional:
        conditioning_classes(dataset)  # refused before anything is printed or written
    _report_dataset(dataset, m.im_channels, m.im_size)

    bar = None

    def on_event(event: ev.Event) -> None:
        nonlocal bar
        if isinstance(event, ev.Started):
            print(f"run: {event.run_dir}  device: {event.setup or event.device}  "
                  f"parameters: {event.num_params:,}", file=sys.stderr)
            bar = tqdm(total=event.total_steps, initial=event.start_step, unit="step", dynamic_ncols=True)
        elif isinstance(event, ev.StepDone) and bar is not None:
            bar.update(event.step - bar.n)
            bar.set_postfix(loss=f"{event.loss:.4f}", ips=f"{event.images_per_s:.0f}", refresh=False)
        elif isinstance(event, ev.CheckpointSaved) and bar is not None:
            bar.write(f"checkpoint: {event.path}")

    trainer = Trainer(cfg, run_dir, dataset=dataset, resume=args.resume, on_event=on_event)
    previous = signal.signal(signal.SIGINT, lambda *_: _interrupt(trainer, previous))
    try:
        finished = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    print(f"{finished.reason} at step {finished.step}; weights: {trainer.run_dir.weights_path(cfg)}", file=sys.stderr)
    return 0


def _interrupt(trainer, previous) -> None:
    """First Ctrl-C: stop after this step with a checkpoint. Second: the default behaviour."""
    print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)
    trainer.request_stop()
    signal.signal(signal.SIGINT, previous)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .classes import class_rows
    from .exports import check_animation_path, save_animation, save_grid, save_images
    from .frames import FrameStore
    from .samplers import default_steps
    from .sampling import SamplingModel

    if args.animation:
        check_animation_path(args.animation)  # before minutes of sampling, not after
    cfg = _load_config(args.config) if args.config else None
    model = SamplingModel.load(args.source, cfg, use_ema=not args.raw, device=args.device)
    tp = model.config.train_params
    num = args.num or tp.num_samples
    steps = args.steps or default_steps(args.sampler, model.config.diffusion_params.num_timesteps)
    nrow = tp.num_grid_rows if num == tp.num_samples else max(1, round(num ** 0.5))
    labels, guidance = _class_request(args, model.class_names)
    if labels is not None:
        labels, nrow = class_rows(labels, num)
        num = len(labels)
    store = FrameStore(nrow=nrow) if args.animation else None
    options = {o.name: getattr(args, o.name) for spec in SAMPLER_TABLE for o in spec.options
               if getattr(args, o.name) is not None}
    model = model.tuned(num)
    frames = model.frames(num_images=num, sampler=args.sampler, steps=steps, options=options, seed=args.seed,
                          frame_stride=max(1, steps // 200) if store is not None else steps,
                          labels=labels, guidance=guidance)
    final = None
    with tqdm(total=steps, unit="step", dynamic_ncols=True) as bar:
        for frame in frames:
            bar.update(frame.index + 1 - bar.n)
            if store is not None:
                store.add(frame)
            final = frame
    images: torch.Tensor = final.xt
    written = []
    row_labels = None if labels is None else [model.class_names[c] for c in labels[::nrow]]
    if args.grid:
        save_grid(images, args.grid, nrow=nrow, row_labels=row_labels)
        written.append(args.grid)
    if args.animation:
        save_animation([store.side_by_side(i) for i in range(len(store))], args.animation)
        written.append(args.animation)
    if args.images:
        save_images(images, args.images)
        written.append(args.images)
    if not written:
        out = Path("samples.png")
        save_grid(images, out, nrow=nrow, row_labels=row_labels)
        written.append(str(out))
    print(f"wrote {', '.join(map(str, written))} ({_weights_used(args)})", file=sys.stderr)
    return 0


def _class_request(args: argparse.Namespace, class_names: list[str]) -> tuple[list[int] | None, float]:
    """The class rows and guidance scale asked for; a conditional model without --class draws
    unconditionally, as does --guidance 0."""
    from .classes import class_indices

    guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    if args.classes is None:
        if args.guidance is not None:
            raise UserError("--guidance needs --class NAME (or --class all): it scales how strongly a class is followed.")
        return None, guidance
    try:
        return class_indices(args.classes, class_names), guidance
    except UserError as e:
        raise UserError(f"{args.source}: {e}") from None


def _weights_used(args: argparse.Namespace) -> str:
    """Which weights were sampled, in words: a tutorial .pth holds only its own."""
    if Path(args.source).suffix in (".pth", ".pt"):
        return "the .pth's weights"
    return "raw weights" if args.raw else "EMA weights (--raw for the raw ones)"


def cmd_scan(args: argparse.Namespace) -> int:
    from .data import load_dataset

    _report_dataset(load_dataset(args.path, args.channels, args.size), args.channels, args.size)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()  # this process's CPU steps reuse each other's memory (see core.allocator)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a mistake already reported in one line
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR
    command = {"train": cmd_train, "sample": cmd_sample, "scan": cmd_scan, "eval": eval_command.run}[args.command]
    try:
        return command(args)
    except UserError as e:
        print(f"ddpm {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR


def run() -> typing.NoReturn:
    """The ``ddpm`` command: :func:`main`, then an exit that skips the interpreter's teardown.

    Tearing torch down touches pages of its libraries that the run never used: 0.13 GiB of
    resident memory in the last moment of every command (`import torch`, a matmul, exit: peak
    0.65 against 0.52 GiB; `ddpm train` of the tutorial's config peaked at its exit), which
    counts in the process's peak like the training itself. Everything a command writes is
    already on disk (atomic writes), so only the standard streams and log handlers need
    flushing; the window's training child ends the same way (multiprocessing's ``os._exit``).
    Errors still end through Python, with their traceback.
    """
    if sys.argv[1:2] == ["train"]:
        restart_tuned()  # glibc's tunables count only from a process's start (see core.allocator)
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
