"""Training beside another training run: steps per second of ``ddpm train`` alone and with a twin.

A second multi-threaded program is the hard case for a busy machine: with two threads each on
two cores, every parallel region of a step waits for a thread the other program has
preempted, and a step can take tens of times longer than at one thread. The app's thread
controller (:mod:`core.threads`) must find one thread and stay there cheaply. This runs the
real CLI, as a user would: first one run alone, then two identical runs at once, each for
``--seconds`` of training time, and reports each run's training steps per second (from its
``log.jsonl``). On two cores, fair sharing costs each twin 2x against the run alone; more is
time lost to waiting threads or to the controller's tries.

    .venv/bin/python bench/two_runs.py [--config preset:fast-cpu] [--seconds 90]

Prints JSON: the steps per second alone and of each twin, the slowdown (alone over twin), the
machine (CPU kind, matmul peak) and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import emit, machine


def start(config: str, seconds: float, run_dir: Path) -> subprocess.Popen:
    """``ddpm train`` for ``seconds`` of training time (no step limit reached first)."""
    argv = [sys.executable, "-m", "core.cli", "train", config, "--max-minutes", str(seconds / 60),
            "--max-steps", "1000000", "--run-dir", str(run_dir)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def steps_per_second(run_dir: Path) -> float:
    """Training steps per second of training time, from the run's last logged step."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    last = [row for row in rows if "step" in row and "train_s" in row][-1]
    return last["step"] / last["train_s"]


def run_together(config: str, seconds: float, run_dirs: list[Path]) -> list[float]:
    procs = [start(config, seconds, d) for d in run_dirs]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"ddpm train failed ({proc.returncode}): {err.strip()[-500:]}")
    return [steps_per_second(d) for d in run_dirs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="preset:fast-cpu", help="YAML path or preset:NAME")
    parser.add_argument("--seconds", type=float, default=90, help="training time of each run")
    args = parser.parse_args(argv)
    facts = machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        alone = run_together(args.config, args.seconds, [Path(tmp, "alone")])[0]
        twins = run_together(args.config, args.seconds, [Path(tmp, "twin-a"), Path(tmp, "twin-b")])
    facts["loadavg_end"] = os.getloadavg()
    emit({"bench": "two_runs", "machine": facts,
          "settings": {"config": args.config, "seconds": args.seconds, "threads": torch.get_num_threads()},
          "steps_per_s": {"alone": alone, "twins": twins},
          "slowdown": [alone / rate for rate in twins]})


if __name__ == "__main__":
    main()
