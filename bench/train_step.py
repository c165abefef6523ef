"""Training-step benchmark: the tutorial's way against the app's fast path, step by step.

Both paths run :meth:`core.trainer.Trainer._train_step`, the step the app runs (eps-MSE, Adam,
EMA update, one ``loss.item()``), so they differ only in the levers listed in :class:`TrainPath`.
The fast path is set up as a run of the app is: :meth:`Trainer.tune` times the candidate kernels,
precisions, layouts and micro-batch sizes on this machine (or recalls their last timing).
The naive path is the tutorial's: ``nn.MultiheadAttention``'s own forward as the tutorial
calls it (explicit softmax attention, and the map averaged over heads for ``need_weights``),
fp32, NCHW, plain per-tensor Adam, the batch in one pass; ``naive-attention_kernel`` is the
same with only the attention kernel's explicit softmax (no head average), for comparison. ``--ablate`` adds the fast path with one lever undone at a time
(from the untuned defaults; and with torch.compile, and in micro-batches of 16), which is how each lever's effect is
measured. Images are random: no step depends on the data.

    .venv/bin/python bench/train_step.py [--device cpu] [--batch 64] [--repeats 5] [--config default] [--ablate]
        [--whole-process STEPS]

Prints JSON: per path the step time (median/min/max), images/s and, from a fresh subprocess
per path, peak RSS (ru_maxrss) and peak CUDA allocation; the naive/fast ratios; the settings.
``--whole-process STEPS`` also runs ``ddpm train`` as a user does (the same config and batch,
the built-in MNIST demo, autotune, a checkpoint per quarter of the run) and reports that
process's peak RSS beside the naive step's: the app's memory is the whole process's, not one
step's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import yaml

from bench.common import ROOT, BenchPath, add_common_args, child, compare, emit, resolve_config, setup
from core.config import Config
from core.cuda_graphs import GraphedNetwork
from core.trainer import Trainer


@dataclass(frozen=True)
class TrainPath:
    """One way of running the step; ``precision`` is train_params.precision."""

    name: str
    attention: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    fast_adam: bool = True
    compile: bool = False
    cuda_graphs: bool = True  # on CUDA only, and with the batch in one pass
    micro_batch_size: int | None = None  # None: the trainer's default (parts of 32 on the CPU)
    whole_batch: bool = False  # the batch in one pass, whatever the default
    tune: bool = False  # let core.autotune time the candidates, as a run of the app does


NAIVE = TrainPath("naive", attention="tutorial", precision="fp32", channels_last=False, fast_adam=False,
                  cuda_graphs=False, whole_batch=True)
NAIVE_KERNEL = dataclasses.replace(NAIVE, name="naive-attention_kernel", attention="naive")
FAST = TrainPath("fast", tune=True)
UNTUNED = TrainPath("fast")
ABLATIONS = (  # from the untuned defaults, one lever undone at a time
    dataclasses.replace(UNTUNED, name="fast-untuned"),
    dataclasses.replace(UNTUNED, name="fast-naive_attention", attention="naive"),
    dataclasses.replace(UNTUNED, name="fast-sdpa_attention", attention="sdpa"),
    dataclasses.replace(UNTUNED, name="fast-fp32", precision="fp32"),
    dataclasses.replace(UNTUNED, name="fast-nchw", channels_last=False),
    dataclasses.replace(UNTUNED, name="fast-plain_adam", fast_adam=False),
    dataclasses.replace(UNTUNED, name="fast+compile", compile=True),
    dataclasses.replace(UNTUNED, name="fast-cuda_graphs", cuda_graphs=False),
    dataclasses.replace(UNTUNED, name="fast-micro_batches", whole_batch=True),
    dataclasses.replace(UNTUNED, name="fast+micro_batch_16", micro_batch_size=16),
)
PATHS = {p.name: p for p in (NAIVE, NAIVE_KERNEL, FAST, *ABLATIONS)}


class Runner:
    """A Trainer set up for one path, stepping on random images."""

    def __init__(self, config: Config, path: TrainPath, device: torch.device, batch: int, run_dir: Path) -> None:
        config = config.replace("train_params", precision=path.precision, device=device.type, batch_size=batch,
                                micro_batch_size=batch if path.whole_batch else path.micro_batch_size,
                                compile=path.compile, cuda_graphs=path.cuda_graphs)
        self.trainer = Trainer(config, run_dir / path.name, attention_impl=path.attention)
        if path.tune:
            self.trainer.tune()
        if not path.channels_last:
            self.trainer.memory_format = torch.contiguous_format
            self.trainer.model.to(memory_format=torch.contiguous_format)
        if not path.fast_adam:
            self.trainer.optimizer = torch.optim.Adam(
                self.trainer.model.parameters(), lr=config.train_params.lr, foreach=False
            )
        self.model = self.trainer.step_network(self.trainer.model)
        self.compile_error: str | None = None
        m = config.model_params
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand((batch, m.im_channels, m.im_size, m.im_size), generator=gen) * 2 - 1
        self.trainer.model.train()

    def step(self) -> None:
        """One training step, host-synchronised by the loss read."""
        try:
            self.trainer._train_step(self.model, self.images)
        except Exception as e:  # noqa: BLE001 - as the Trainer does: a failed compile runs eagerly
            if self.model is self.trainer.model:
                raise
            self.compile_error = f"{type(e).__name__}: {e}"[:300]
            self.model = self.trainer.model
            self.trainer._train_step(self.model, self.images)
        self.trainer.step += 1

    def info(self) -> dict:
        """What the path resolved to and met: precision, setup, compile and CUDA-graph errors."""
        return {"resolved_precision": self.trainer.precision.name, "compile_error": self.compile_error,
                "cuda_graphs_used": isinstance(self.model, GraphedNetwork),
                "cuda_graphs_errors": getattr(self.model, "errors", None), "setup": self.trainer.setup}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, batch=64, repeats=5)
    parser.add_argument("--paths", default="naive,fast", help=f"comma-separated, from: {', '.join(PATHS)}")
    parser.add_argument("--ablate", action="store_true", help="also run the fast path with each lever undone")
    parser.add_argument("--whole-process", type=int, metavar="STEPS",
                        help="also run `ddpm train` for STEPS steps and report its peak RSS")
    args = parser.parse_args(argv)
    device = setup(args)
    config = resolve_config(args.config)
    names = args.paths.split(",") + ([p.name for p in ABLATIONS] if args.ablate else [])
    unknown = sorted(set(names) - set(PATHS))
    if unknown:
        parser.error(f"unknown path {', '.join(unknown)}: choose from {', '.join(PATHS)}")
    with tempfile.TemporaryDirectory() as tmp:
        def make(name: str) -> BenchPath:
            runner = Runner(config, PATHS[name], device, args.batch, Path(tmp))
            return BenchPath(runner.step, runner.info)

        if child(args, make, device):
            return
    # First, while this process is small: a child's ru_maxrss starts from its parent's resident set.
    whole = whole_process(config, args) if args.whole_process else None
    result = compare("train_step", args, device, names, {}, training=True)
    result["settings"]["paths"] = {n: dataclasses.asdict(PATHS[n]) | result["path_info"][n] for n in names}
    if whole:
        naive = result["paths"].get("naive", {}).get("peak_rss_gib")
        result["whole_process"] = whole | ({"peak_rss_over_naive_step": whole["peak_rss_gib"] / naive} if naive else {})
    emit(result)


def whole_process(config: Config, args: argparse.Namespace) -> dict:
    """``ddpm train`` on the built-in demo for ``args.whole_process`` steps: its own peak RSS
    (``wait4`` reports that child's alone), time and the setup autotune chose."""
    config = config.replace("train_params", batch_size=args.batch, micro_batch_size=None)
    config = config.replace("dataset_params", im_path="builtin:mnist")
    env = os.environ | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml.safe_dump(config.to_dict()))
        cmd = [sys.executable, "-m", "core.cli", "train", str(config_path), "--device", args.device,
               "--max-steps", str(args.whole_process), "--run-dir", str(Path(tmp) / "run")]
        errors = Path(tmp) / "stderr.txt"
        started = time.perf_counter()
        with errors.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        exit_code = proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
        stderr = errors.read_text(errors="replace").strip()
        log = Path(tmp) / "run" / "log.jsonl"
        first = json.loads(log.read_text().splitlines()[0]) if log.exists() else {}
    out = {"command": f"ddpm train CONFIG --max-steps {args.whole_process}", "exit": exit_code,
           "seconds": seconds, "peak_rss_gib": usage.ru_maxrss / 2**20,
           "setup": first.get("autotune", {}).get("setup")}
    if exit_code:
        out["error"] = stderr.splitlines()[-1] if stderr else f"exit {exit_code}"
    return out


if __name__ == "__main__":
    main()
