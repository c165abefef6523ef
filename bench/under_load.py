"""Step times on a busy machine: with one competing CPU-bound process against without.

Desktops are rarely idle. This runs training and sampling steps the tutorial's way and the
app's way (tuned kernels, and the thread count :class:`core.threads.ThreadController` adapts
as it does in a run), first without and then with one extra process spinning on a core, and
reports each path's step time under load over its time without. Fair sharing of the cores
costs a path at most ``cpu_count / (cpu_count - 1)`` on a machine otherwise free (2x on two
cores); more than that is time lost to threads waiting on a preempted partner.

The competitor is a Python busy loop that ends by itself after ``--seconds`` and is killed
when the benchmark ends, whichever is first. Paths take turns step by step within each phase,
so outside load hits all alike. They share this process, and its allocator is the app's
(:mod:`core.allocator`): each path is compared with itself only, loaded against idle.
``--niceness 10`` runs the paths as the window runs its training child
(``ddpm_gui.workers.NICENESS``), below the competitor, which keeps the nice the benchmark started
with: the case of a user working in another program while the app trains.

    .venv/bin/python bench/under_load.py [--batch 32] [--sample-batch 50] [--repeats 4] [--seconds 300] [--niceness 0]

Prints JSON: per phase and path the step time (median/min/max), the load/idle ratios, the
thread counts the app's controllers ended at, the machine (CPU kind, matmul peak) and the load
average before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import add_common_args, alternate, emit, machine, resolve_config, setup
from bench.sample_step import fast_steps, naive_steps, stepper
from bench.train_step import FAST, NAIVE, Runner
from core.threads import ThreadController
from core.training_process import be_nice


@contextlib.contextmanager
def competitor(seconds: float) -> Iterator[Callable[[], None]]:
    """One CPU-bound process, started now (so at this process's nice) and spinning, for at most
    ``seconds``, once the function it yields is called; killed on leaving the block."""
    loop = ("import sys, time\nsys.stdin.readline()\n"
            f"end = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n")
    proc = subprocess.Popen([sys.executable, "-c", loop], stdin=subprocess.PIPE)

    def start() -> None:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()

    try:
        yield start
    finally:
        proc.kill()
        proc.wait()


def at_threads(count: int, step: Callable[[], None]) -> Callable[[], None]:
    """The tutorial's way: every step at torch's thread count, whatever the app's paths set
    (the app's thread controller leaves the count where its last step had it)."""
    def run() -> None:
        torch.set_num_threads(count)
        step()
    return run


def adapted(controller: ThreadController, step: Callable[[], None]) -> Callable[[], None]:
    """The app's way: each step at the count the controller picks, as Trainer and sample() do."""
    def run() -> None:
        with controller.step():
            step()
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, batch=32, repeats=4)
    parser.add_argument("--sample-batch", type=int, default=50, help="images per sampling step")
    parser.add_argument("--seconds", type=float, default=300, help="the competitor's longest life")
    parser.add_argument("--niceness", type=int, default=0,
                        help="Unix nice of the paths, the competitor keeps the starting one (the window's training: 10)")
    args = parser.parse_args(argv)
    with competitor(args.seconds) as start_competing:
        be_nice(args.niceness)  # before torch starts its threads, which inherit it
        result = measure(args, start_competing)
    emit(result)


def measure(args: argparse.Namespace, start_competing: Callable[[], None]) -> dict:
    """Each path's steps without, then with, the competitor; the JSON that main prints."""
    device = setup(args)
    config = resolve_config(args.config)
    threads = torch.get_num_threads()
    facts = machine(device)
    controllers = {"train": ThreadController(), "sample": ThreadController()}
    with tempfile.TemporaryDirectory() as tmp:
        steps = {
            "train/naive": at_threads(threads, Runner(config, NAIVE, device, args.batch, Path(tmp)).step),
            "train/app": adapted(controllers["train"], Runner(config, FAST, device, args.batch, Path(tmp)).step),
            "sample/naive": at_threads(threads, stepper(naive_steps(config, device, args.sample_batch), device)),
            "sample/app": adapted(controllers["sample"],
                                  stepper(fast_steps(config, device, args.sample_batch, {}), device)),
        }
        phases = {"idle": alternate(steps, args.warmup, args.repeats)}
        start_competing()
        phases["load"] = alternate(steps, args.warmup, args.repeats)
    torch.set_num_threads(threads)
    ratios = {n: phases["load"][n]["step_s"]["median"] / phases["idle"][n]["step_s"]["median"] for n in steps}
    facts["loadavg_end"] = os.getloadavg()
    return {"bench": "under_load", "machine": facts, "settings": {
        "config": args.config, "batch": args.batch, "sample_batch": args.sample_batch, "repeats": args.repeats,
        "warmup": args.warmup, "competitors": 1,
        "niceness": os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }, "phases": phases, "load_over_idle": ratios,
        "app_threads_at_end": {k: c.current for k, c in controllers.items()},
        "app_thread_estimates_s": {k: c.estimate for k, c in controllers.items()}}


if __name__ == "__main__":
    main()
