"""What every benchmark here shares: config lookup, machine facts, statistics and peak memory.

Benchmarks compare the tutorial's way of running the model with the app's step by step in
alternation, so that load from other programs on the machine hits both alike; their ratio is
the figure to quote. Each way runs in its own process, set up as its own program would be: the
app's keeps freed memory and starts with glibc's tcache off (:mod:`core.allocator`, as the app
and the CLI do), the tutorial's keeps glibc's defaults, as the tutorial's script runs. One process for both gave the
tutorial's way the app's allocator: its sampling step at batch 100 then took 1.2 million page
faults instead of 1.4 million, and 4.53-4.65 s instead of 4.66-5.08 s (2 AVX2 cores, docs/speed.md).
Peak resident memory is a whole-process property, so each path is measured again alone in a
fresh subprocess.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.allocator import TUNABLES_ENV, keep_freed_memory, tuned_environment
from core.config import Config, load_config
from core.device import cpu_has_bf16, cpu_model, onednn_bf16, pick_device

ROOT = Path(__file__).resolve().parents[1]


def add_common_args(parser: argparse.ArgumentParser, *, batch: int, repeats: int) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--batch", type=int, default=batch, help="images per step")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path first")
    parser.add_argument(
        "--config", default="default",
        help="'default' (the tutorial's config), preset:NAME, or a YAML path",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-path memory subprocesses")
    # internal, for the child processes compare() starts: one path's memory, or its timed steps
    parser.add_argument("--memory-of", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)


def resolve_config(spec: str) -> Config:
    """The tutorial's default config, a shipped preset (preset:NAME) or a YAML file."""
    if spec == "default":
        return Config()
    if spec.startswith("preset:"):
        from core.presets import load_preset

        return load_preset(spec.removeprefix("preset:"))
    return load_config(spec)


def is_tutorial_path(name: str) -> bool:
    """Paths named ``naive`` or ``naive-...`` are the tutorial's way; the others are the app's."""
    return name == "naive" or name.startswith("naive-")


def path_environment(path: str, training: bool) -> dict[str, str]:
    """The environment ``path``'s process starts in: the app's processes that train start with
    glibc's tcache off (:func:`core.allocator.tuned_environment`, as ``ddpm train`` and the
    window start them), the tutorial's script and the app's sampling with glibc's defaults."""
    return tuned_environment(os.environ, tuned=training and not is_tutorial_path(path))


def own_allocator(path: str | None) -> bool:
    """Set this process's allocator as the program of ``path`` (None: the app) has it: the app and
    the CLI keep freed memory from the start (:mod:`core.allocator`), the tutorial's script keeps
    glibc's defaults. True where freed memory is kept; calling again changes nothing."""
    return not (path and is_tutorial_path(path)) and keep_freed_memory()


def setup(args: argparse.Namespace) -> torch.device:
    own_allocator(args.serve or args.memory_of)
    # what autotune timed and chose, on stderr: a figure from an unexpected choice can be told apart
    logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("core.autotune").setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


CPU_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512-bf16", "amx_tile": "AMX"}
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_capability() -> dict:
    """What the CPU has, what torch may use of it, and a name for the kind of CPU that makes.

    A machine can be made to behave like a lesser one by capping the ISA aten, oneDNN and MKL
    use (``ISA_CAPS``); its figures are then labelled "emulated", never passed off as the
    real kind, which differs in clock, caches and memory.
    """
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    hardware = [name for flag, name in CPU_FLAGS.items() if flag in flags]
    aten = torch.backends.cpu.get_cpu_capability()
    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    if cpu_has_bf16():
        kind = "AVX-512-bf16" + ("+AMX" if amx and "AMX" in hardware else "")
    else:
        kind = {"AVX512": "AVX-512", "AVX2": "AVX2"}.get(aten, aten)
    caps = {k: os.environ[k] for k in ISA_CAPS if k in os.environ}
    if caps and hardware and hardware[-1] not in kind:
        kind = f"emulated {kind} (ISA-capped {cpu_model()})"
    return {"cpu_kind": kind, "cpu_flags": hardware, "aten_capability": aten, "onednn_bf16": onednn_bf16(),
            "isa_caps": caps}


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, n: int = 1024, seconds: float = 0.5) -> float:
    """The fastest of repeated n x n matmuls in GFLOP/s: the device's attainable dense rate, the
    limit every step time here should be read against (outside load can only lower it)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best, spent = math.inf, 0.0
    for i in range(1000):
        with Timer() as t:
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        if i:  # the first is a warm-up
            best, spent = min(best, t.wall), spent + t.wall
        if spent > seconds:
            break
    return 2 * n**3 / best / 1e9


def machine(device: torch.device) -> dict:
    """Facts a reader needs to compare figures: versions, CPU kind and peak, threads, load."""
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **cpu_capability(),
        "loadavg": os.getloadavg(),
        "device": str(device),
    }
    peak_device = device if device.type == "cuda" else torch.device("cpu")
    reduced = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu_has_bf16()
    info["matmul_peak_gflops"] = {"fp32": matmul_peak_gflops(torch.float32, peak_device)}
    if reduced:
        info["matmul_peak_gflops"]["bf16"] = matmul_peak_gflops(torch.bfloat16, peak_device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def summarize(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


class Timer:
    """Wall and process CPU seconds of one step.

    On a machine shared with other work, wall time swings with the load; with one thread
    (``--threads 1``) the process CPU time is what the step itself costs, nearly independent of
    the load, which makes it the steadier figure to compare levers with.
    """

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def alternate(steppers: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, dict]:
    """Warm every path up, then time one step of each in turn for ``repeats`` rounds, all in
    this process.

    Taking turns spreads outside load over all paths alike, so their ratio stays meaningful.
    ``steppers`` must leave the device synchronised when they return.
    """
    return _rounds({n: functools.partial(_timed, step) for n, step in steppers.items()}, warmup, repeats)


def _timed(step: Callable[[], None]) -> tuple[float, float]:
    with Timer() as t:
        step()
    return t.wall, t.cpu


def _rounds(timed: dict[str, Callable[[], tuple[float, float]]], warmup: int, repeats: int) -> dict[str, dict]:
    """:func:`alternate`'s schedule over steps that time themselves, (wall, CPU) seconds each."""
    for run in timed.values():
        for _ in range(warmup):
            run()
    wall: dict[str, list[float]] = {n: [] for n in timed}
    cpu: dict[str, list[float]] = {n: [] for n in timed}
    for _ in range(repeats):
        for n, run in timed.items():
            w, c = run()
            wall[n].append(w)
            cpu[n].append(c)
    return {n: {"step_s": summarize(wall[n]), "cpu_s": summarize(cpu[n])} for n in timed}


@dataclass(frozen=True)
class BenchPath:
    """One way of running a step as a benchmark's process builds it: ``step`` runs one (leaving
    the device synchronised); ``info`` says afterwards what the path chose or met on the way."""

    step: Callable[[], None]
    info: Callable[[], dict] = dict


class PathProcess:
    """One path in a process of its own (``python -m module ... --serve name``, see :func:`serve`),
    stepped from this one; started only when the previous path's process is built, so that
    autotune's timings in one never overlap the start-up of another."""

    def __init__(self, module: str, argv: list[str], name: str, env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-m", module, *argv, "--serve", name], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reply()  # built

    def _reply(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} path's process ended (exit {self.proc.wait()}); its error is above")
        return json.loads(line)

    def step(self) -> tuple[float, float]:
        """One step there: its wall and CPU seconds, as that process timed them."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        reply = self._reply()
        return reply["wall"], reply["cpu"]

    def finish(self) -> dict:
        """Its path's ``info`` and allocator setting, the process ended."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        info = self._reply()
        self.proc.wait()
        return info

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def serve(path: BenchPath, name: str) -> None:
    """The ``--serve`` side of :func:`compare`: one timed step per line read from stdin, a JSON
    line back for each; at the end of input, the path's info. Anything else written to stdout
    (a library's print) goes to stderr, so that the replies stay readable."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def reply(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    reply({"ready": name})
    for _ in sys.stdin:
        wall, cpu = _timed(path.step)
        reply({"wall": wall, "cpu": cpu})
    reply(path.info() | {"malloc_tuned": own_allocator(name), "glibc_tunables": os.environ.get(TUNABLES_ENV, "")})


def compare(bench: str, args: argparse.Namespace, device: torch.device, names: list[str], settings: dict, *,
            training: bool = False) -> dict:
    """The shared body of a benchmark ``bench.<bench>``: memory per path in subprocesses, then
    timing by turns, each path in its own process (built there by ``make``, see :func:`child`),
    started as a ``training`` or sampling process of its program (:func:`path_environment`).

    The result holds every path's figures, their ratios to the ``naive`` path, each path's
    ``info`` (under ``path_info``), the settings and the machine.
    """
    facts = machine(device)
    # memory first, in subprocesses started while this process is still small (see peak_memory)
    env = {n: path_environment(n, training) for n in names}
    memory = {} if args.no_memory else {n: memory_in_subprocess(f"bench.{bench}", forward_argv(args), n, env[n])
                                        for n in names}
    servers: list[PathProcess] = []
    try:
        for n in names:
            servers.append(PathProcess(f"bench.{bench}", forward_argv(args), n, env[n]))
        rows = _rounds({s.name: s.step for s in servers}, args.warmup, args.repeats)
        info = {s.name: s.finish() for s in servers}
    finally:
        for s in servers:
            s.kill()
    for n, row in rows.items():
        row["images_per_s"] = args.batch / row["step_s"]["median"]
        row["malloc_tuned"] = info[n].pop("malloc_tuned")
        row["glibc_tunables"] = info[n].pop("glibc_tunables")
        row.update(memory.get(n, {}))
    base = rows.get("naive")
    if base:
        for row in rows.values():
            row["speedup_vs_naive"] = base["step_s"]["median"] / row["step_s"]["median"]
            row["cpu_speedup_vs_naive"] = base["cpu_s"]["median"] / row["cpu_s"]["median"]
            if "peak_rss_gib" in row and "peak_rss_gib" in base:
                row["rss_vs_naive"] = row["peak_rss_gib"] / base["peak_rss_gib"]
    facts["loadavg_end"] = os.getloadavg()
    return {"bench": bench, "machine": facts, "settings": {
        "config": args.config, "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, **settings,
    }, "paths": rows, "path_info": info}


def child(args: argparse.Namespace, make: Callable[[str], BenchPath], device: torch.device) -> bool:
    """Play this process's part if :func:`compare` started it (one path's memory, or its steps);
    False in the benchmark's own process."""
    if args.memory_of:
        _memory_child(make(args.memory_of).step, args.warmup, device)
    elif args.serve:
        serve(make(args.serve), args.serve)
    return bool(args.memory_of or args.serve)


def _memory_child(step: Callable[[], None], warmup: int, device: torch.device) -> None:
    """The ``--memory-of`` side of :func:`compare`: run one path a few steps, print its peaks."""
    for _ in range(warmup + 1):
        step()
    emit(peak_memory(device), indent=None)


def peak_memory(device: torch.device) -> dict[str, float]:
    """This process's peak resident set (and the accelerator's peak allocation), in GiB.

    ``ru_maxrss`` survives exec: a child reports at least its parent's resident set at the time
    it was started, which is why memory subprocesses are started before the parent grows.
    VmHWM, the high-water mark of this process image alone, is reported beside it as a check.
    """
    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    status = Path("/proc/self/status")
    if status.exists():  # Linux
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vm_hwm_gib"] = int(line.split()[1]) / 2**20
    if device.type == "cuda":
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def memory_in_subprocess(module: str, argv: list[str], path: str, env: dict[str, str]) -> dict[str, float]:
    """Run ``python -m module argv --memory-of path`` in ``env`` and read the JSON it prints last."""
    cmd = [sys.executable, "-m", module, *argv, "--memory-of", path]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def forward_argv(args: argparse.Namespace) -> list[str]:
    """The command-line settings a memory subprocess needs to rebuild the same run."""
    argv = ["--device", args.device, "--batch", str(args.batch), "--config", args.config,
            "--warmup", str(args.warmup)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def emit(result: dict, *, indent: int | None = 2) -> None:
    print(json.dumps(result, indent=indent, default=str), flush=True)
