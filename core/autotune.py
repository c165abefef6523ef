"""The fastest way to run the model on this machine, found by timing the candidates.

What is fastest depends on the CPU more than any rule can say: on AVX-512-bf16 cores bf16 and
the chunked attention kernel win, on AVX2 cores bf16 does not exist and torch's fused
``sdpa`` beats the chunked kernel several times over. So, as ``cudnn.benchmark`` does, the
first use of a model on a machine times a few forward (and, for training, backward) passes of
each candidate on the run's own shapes and keeps the fastest. Every candidate computes the
same result up to rounding: only speed and memory differ.

The search changes one setting at a time (precision, then attention kernel, memory format,
micro-batch size, Winograd convolutions), keeping the best so far: a handful of timings instead
of every combination. Settings fixed in the config are not searched. The result is remembered per
machine, torch version and shapes in the user's cache folder, so later runs start at once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import narrow_attention, winograd
from .atomic import atomic_write_text
from .config import Config
from .cuda_graphs import GraphedNetwork
from .device import Precision, cpu_model, memory_format, pick_precision

log = logging.getLogger(__name__)

CACHE_ENV = "DDPM_STUDIO_CACHE_DIR"
"""Environment variable naming another cache folder (tests, portable installs)."""
# 2: rounds timed for ROUND_SECONDS; choices from fewer passes are timed again. 3: the narrow kernel
# 4: the fused channels-last norm (core.norm_act), which makes channels_last worth timing again
# 5: Winograd convolutions (core.winograd). 6: Winograd timed after the part size, at that size
# 7: Winograd's fused pass and the register-tiled products (core.matmul), which change what it gains
# 8: sampling's F(7x7, 3x3) tiles (core.winograd.sampling_tile), which change what Winograd gains there
# 9: narrow-bf16, sampling's attention projections and products in bf16 on AVX-512-BF16 CPUs
# 10: narrow-bf16 for heads of 4 and 8 channels too, which changes what it gains
# 11: narrow attention under bf16 autocast by the bf16 kernels, forward and backward, which makes bf16
# training worth choosing on AVX-512-BF16 CPUs
CACHE_VERSION = 11
TIMED_PASSES = 2  # per candidate at least, after one untimed pass; the fastest counts (load only adds time)
# Quick passes are repeated until a round has taken this long, up to MAX_TIMED_PASSES: two passes
# of a 0.1 s step are too little timing to keep a choice for good by, and one such choice left
# the narrow fast-cpu network on fp32 on a bf16 CPU where bf16 trains 1.28x the steps (docs/speed.md,
# "Chosen by measurement, per CPU kind").
ROUND_SECONDS = 1.0
MAX_TIMED_PASSES = 10
# A larger part must be this much faster per image to be chosen over the smallest: within timing
# noise, the part that takes less memory wins. In fp32 the tutorial's network trains in parts of
# 32 with a whole-process peak of 1.56 GiB, in parts of 16 with 1.43 GiB (2 cores, ATen's AVX2
# kernels, 2026-12-03), and the tutorial's own step takes 5.6-5.8 GiB.
PART_MARGIN = 0.05
BUSY_LOAD_PER_CORE = 0.5  # a 1-minute load average above this per core: timings are not remembered


def attention_kernels(device: torch.device, bf16_products: bool = False) -> tuple[str, ...]:
    """The kernels worth timing on ``device``, the first the search starts from. "naive" keeps
    the whole map: never faster, always larger. "narrow" is first where it runs: it is the fastest
    for the fp32 heads it takes on AVX2 CPUs, and it lets the precision round time fp32 with it.
    ``bf16_products`` (sampling where the precision may be bf16) puts "narrow-bf16" first where
    the CPU runs it, so that the precision round times fp32 networks with their attention in bf16
    against bf16 ones (whose "narrow" is the same bf16 kernels): started from "narrow", it
    compared fp32 with fp32 attention, chose bf16 (0.0073 against 0.0080 s an image at batch
    100, 2 Zen 4 cores) and never timed fp32 with "narrow-bf16", the faster of the three (sampling
    steps of 0.74-0.79 s against 0.65-0.85 s in session 35)."""
    if device.type != "cpu":
        return ("sdpa", "chunked")
    if not narrow_attention.available():
        return ("chunked", "sdpa")
    bf16 = ("narrow-bf16",) if bf16_products and narrow_attention.available_bf16() else ()
    return (*bf16, "narrow", "chunked", "sdpa")


@dataclass(frozen=True)
class Choice:
    """How the model runs: what :func:`tune` picks and the window shows."""

    precision: str  # fp32 | bf16 | fp16
    attention: str  # a kernel of core.attention
    channels_last: bool
    micro_batch_size: int | None = None  # images per pass in training; None: sampling, whole batch
    winograd: bool = False  # 3x3 convs through core.winograd where it applies

    @property
    def runs_winograd(self) -> bool:
        """Whether the 3x3 convolutions go through core.winograd: its kernels are fp32, so a bf16
        choice timed with it on (where auto searched bf16 against fp32) runs torch's convolutions."""
        return self.winograd and self.precision == "fp32"

    def describe(self, device: torch.device) -> str:
        """One line for the window and the log, e.g. 'cpu · 2 threads · fp32 · sdpa'."""
        parts = [device.type]
        if device.type == "cpu":
            parts.append(f"{torch.get_num_threads()} threads")
        parts += [self.precision, self.attention]
        if not self.channels_last:
            parts.append("NCHW")
        if self.runs_winograd:
            parts.append("winograd")
        if self.micro_batch_size:
            parts.append(f"parts of {self.micro_batch_size}")
        return " · ".join(parts)

    def apply(self, device: torch.device, *models: torch.nn.Module) -> Precision:
        """Set the models' attention kernel and memory format; the precision to run them in."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for model in models:
            model.set_attention_impl(self.attention)  # type: ignore[operator]
            model.set_winograd(self.runs_winograd)  # type: ignore[operator]
            model.to(memory_format=fmt)
        return pick_precision(self.precision, device)


@dataclass(frozen=True)
class Tuned:
    choice: Choice
    precision: Precision  # the choice's, for this device: what to run the model in
    # per image, per candidate timed, by round (the field it varied): what the choice rests on. Each
    # round times its base again, so a label's figure belongs to its round
    seconds: dict[str, dict[str, float]]
    cached: bool


# -- the search: pure logic over a measuring function ----------------------------------------------
def search(start: Choice, options: dict[str, Sequence[Any]], measure: Callable[[Choice], Callable[[], float]],
           passes: int = TIMED_PASSES) -> tuple[Choice, dict[str, dict[str, float]]]:
    """The fastest choice found by changing one field of ``start`` at a time, in ``options`` order.

    ``measure(choice)`` prepares a candidate and returns a function that runs one pass and
    returns its cost (seconds per image); each is run once untimed, then at least ``passes``
    times in turn with the others so outside load hits all alike (more while a round is quick,
    see :data:`ROUND_SECONDS`), and the least cost counts. A
    candidate that raises (a kernel missing on this device, out of memory) is left out. Returns the
    choice and each round's costs by label, keyed by the field the round varied.

    Where the part size is searched too, the rounds before its own are timed in the smallest
    part on offer, and the rounds after it in the part chosen, so that timing never takes more
    memory than training: fp32 activations are twice bf16's, and one pass of the tutorial's
    network in fp32 parts of 32 made the peak of a whole ``ddpm train`` process (CPU, from 0.54
    GiB after ``import torch``: bf16 parts of 32 0.94 GiB, fp32 1.18 GiB, fp32 parts of 16 0.92
    GiB). Costs are per image either way. A larger part is chosen only if it beats the smallest
    by :data:`PART_MARGIN`.
    """
    parts = options.get("micro_batch_size")
    probe_part = min(parts) if parts else start.micro_batch_size
    best: Choice = start
    rounds: dict[str, dict[str, float]] = {}
    part_chosen = False
    for field, values in options.items():
        part_chosen |= field == "micro_batch_size"
        base = best if part_chosen else dataclasses.replace(best, micro_batch_size=probe_part)
        round_ = [base] + [dataclasses.replace(base, **{field: v}) for v in values if v != getattr(base, field)]
        timed = _time_round(round_, measure, passes)
        rounds[field] = {_label(c): s for c, s in timed.items()}
        if timed and field == "micro_batch_size":
            best = min(timed, key=lambda c: timed[c] * (1 if c.micro_batch_size == probe_part else 1 + PART_MARGIN))
        elif timed:
            best = dataclasses.replace(min(timed, key=timed.__getitem__), micro_batch_size=best.micro_batch_size)
    return best, rounds


def _time_round(candidates: list[Choice], measure: Callable[[Choice], Callable[[], float]],
                passes: int) -> dict[Choice, float]:
    runners: dict[Choice, Callable[[], float]] = {}
    for c in candidates:
        try:
            run = measure(c)
            run()  # untimed: first-use costs (kernel selection, allocation) are not the step's
        except Exception as e:  # noqa: BLE001 - any failure only means: not this candidate
            log.info("autotune: %s skipped (%s: %s)", _label(c), type(e).__name__, e)
            continue
        runners[c] = run
    best: dict[Choice, float] = {}
    started, done = time.perf_counter(), 0
    while runners and (done < passes or (done < MAX_TIMED_PASSES
                                         and time.perf_counter() - started < ROUND_SECONDS)):
        done += 1
        for c, run in list(runners.items()):
            try:
                cost = run()
            except Exception as e:  # noqa: BLE001
                log.info("autotune: %s skipped (%s: %s)", _label(c), type(e).__name__, e)
                del runners[c]
                best.pop(c, None)
                continue
            best[c] = min(cost, best.get(c, cost))
    return best


def _label(c: Choice) -> str:
    layout = ("nhwc" if c.channels_last else "nchw") + ("+winograd" if c.runs_winograd else "")
    return f"{c.precision}/{c.attention}/{layout}/{c.micro_batch_size or 'all'}"


# -- what to search: the config's fixed values and the device's options --------------------------
def options(config: Config, device: torch.device, *, training: bool, batch: int,
            attention: str = "auto") -> tuple[Choice, dict[str, Sequence[Any]]]:
    """The starting choice (the device's defaults) and the alternatives worth timing.

    ``attention`` overrides ``train_params.attention`` when not "auto" (the benchmarks' way to
    pin a kernel). Precision is searched only between bf16 and fp32 where the hardware
    computes bf16; fp16 (older GPUs) stays as :func:`core.device.pick_precision` says. Where it
    is searched, sampling also times attention with bf16 products in fp32 networks. Smaller
    micro-batches are tried on the CPU only, never larger ones: the default part size is what
    keeps training's memory low.
    """
    from .trainer import micro_batches

    tp = config.train_params
    attention = attention if attention != "auto" else tp.attention
    auto_precision = pick_precision(tp.precision, device).name
    part = micro_batches(batch, tp.micro_batch_size, device)[0]
    precisions = ("bf16", "fp32") if tp.precision == "auto" and auto_precision == "bf16" else (auto_precision,)
    kernels = attention_kernels(device, bf16_products=not training and len(precisions) > 1)
    start = Choice(
        precision=auto_precision,
        attention=attention if attention != "auto" else kernels[0],
        channels_last=memory_format(device) == torch.channels_last,
        micro_batch_size=(part.stop - part.start) if training else None,
        # its kernels are fp32: worth timing only where fp32 may be chosen
        winograd=device.type == "cpu" and "fp32" in precisions and winograd.available(),
    )
    found: dict[str, Sequence[Any]] = {}
    if len(precisions) > 1:
        found["precision"] = precisions
    if attention == "auto":
        found["attention"] = kernels
    if device.type in ("cpu", "cuda"):
        found["channels_last"] = (True, False)
    if training and tp.micro_batch_size is None and device.type == "cpu" and start.micro_batch_size > 8:
        found["micro_batch_size"] = (start.micro_batch_size, start.micro_batch_size // 2)
    # after the part size: Winograd's products gain with the rows a part gives them. Timed in
    # parts of 16, the fast-cpu network chose between Winograd and torch's convolutions by
    # timing noise (2 of 4 tunes without it), where in parts of 32 it trains 6 % faster with it.
    if start.winograd:
        found["winograd"] = (True, False)
    return start, found


# -- measuring the real model ----------------------------------------------------------------------
def _pass_runner(model: torch.nn.Module, device: torch.device, image_shape: tuple[int, int, int],
                 num_timesteps: int, *, training: bool, batch: int,
                 graphs: bool = False) -> Callable[[Choice], Callable[[], float]]:
    """``measure`` for :func:`search`: one pass of ``model`` on random images at a candidate's
    settings. Training passes run backward too and then drop the gradients, so the model's
    weights are untouched; a private generator leaves torch's global one as it was.

    With ``graphs`` the passes are replayed CUDA graphs, as training will run them: eager passes
    of a small network time the launching, and on an H200 they kept fp32 for the tutorial's
    network, whose replayed step takes 2.2x bf16's.
    """
    gen = torch.Generator().manual_seed(0)

    def measure(choice: Choice) -> Callable[[], float]:
        precision = choice.apply(device, model)
        fmt = torch.channels_last if choice.channels_last else torch.contiguous_format
        n = choice.micro_batch_size or batch
        x = torch.randn((n, *image_shape), generator=gen).to(device, memory_format=fmt)
        t = torch.randint(0, num_timesteps, (n,), generator=gen).to(device)
        net = GraphedNetwork(model, precision) if graphs and training else model

        def run() -> float:
            choice.apply(device, model)  # the round's candidates take turns on one model
            if isinstance(net, GraphedNetwork):
                with precision.autocast(device):
                    net.graphed_for((x, t))  # recording (again, if the weights moved) is not timed
            _sync(device)
            start = time.perf_counter()
            if training:
                with precision.autocast(device):
                    eps = net(x, t)
                F.mse_loss(eps.float(), x.float()).backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.inference_mode(), precision.autocast(device):
                    model(x, t)
            _sync(device)
            return (time.perf_counter() - start) / n
        return run
    return measure


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tune(model: torch.nn.Module, config: Config, device: torch.device, *, training: bool, batch: int,
         attention: str = "auto", measure: bool = True, graphs: bool = False) -> Tuned:
    """The choice for running ``model`` with ``config`` on ``device``: from the cache, else timed.

    ``batch`` is the training batch (or the number of images sampled at once). The choice is
    applied to ``model`` before returning. ``measure=False`` takes the device's defaults;
    ``graphs``: training will replay CUDA graphs (:mod:`core.cuda_graphs`), so they are timed.
    """
    start, found = options(config, device, training=training, batch=batch, attention=attention)
    if not found or not measure:
        return Tuned(start, start.apply(device, model), {}, cached=False)
    key = cache_key(config, device, training=training, batch=batch, start=start, searched=found, graphs=graphs)
    hit = read_cache(key) or _UNREMEMBERED.get(key)
    if hit is not None:
        return Tuned(hit, hit.apply(device, model), {}, cached=True)
    m = config.model_params
    was_training = model.training
    model.train(training)
    try:
        best, rounds = search(start, found, _pass_runner(
            model, device, (m.im_channels, m.im_size, m.im_size), config.diffusion_params.num_timesteps,
            training=training, batch=batch, graphs=graphs))
    finally:
        model.train(was_training)
    log.info("autotune: %s chosen; seconds per image, round by round: %s", _label(best),
             "; ".join(f"{field}: " + ", ".join(f"{label} {cost:.4g}" for label, cost in costs.items())
                       for field, costs in rounds.items()))
    if device.type != "cpu" or not machine_is_busy():
        write_cache(key, best)
    else:
        _UNREMEMBERED[key] = best
        log.info("autotune: timed while other programs kept the CPU busy; timed again next run")
    return Tuned(best, best.apply(device, model), rounds, cached=False)


#: Choices timed on a busy machine: kept for this process only, so that within one session the
#: same model, sampler and seed still give the same images (another kernel rounds differently).
_UNREMEMBERED: dict[str, Choice] = {}


def machine_is_busy() -> bool:
    """Whether other programs are taking a real share of the cores now.

    A choice timed under load can be the wrong one for good (a kernel that suffers less from
    preemption is not the fastest on a free machine), so such timings serve this run only. The
    load average lags and counts this process too, so it errs towards "busy": that costs one
    more timing on the next run, never a remembered wrong choice. Without a load average
    (Windows) the machine counts as free.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False
    return load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)


# -- the cache ---------------------------------------------------------------------------------------
def cache_path() -> Path:
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        import platformdirs

        folder = platformdirs.user_cache_dir("DDPM Studio", "DDPM Studio")
    return Path(folder) / "autotune.json"


def machine_id(device: torch.device) -> dict[str, Any]:
    """What makes timings from one machine invalid on another: the processor and what torch
    may use of it (ISA caps included), thread count, accelerator, torch version."""
    from .device import onednn_bf16

    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16": onednn_bf16(),
        "threads": torch.get_num_threads(),
        "device": device.type,
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def cache_key(config: Config, device: torch.device, *, training: bool, batch: int, start: Choice,
              searched: dict[str, Sequence[Any]], graphs: bool = False) -> str:
    """A digest of everything the timings depend on: machine, shapes, and what was searched."""
    what = {
        "machine": machine_id(device),
        "mode": ("train+graphs" if graphs else "train") if training else "sample",
        "batch": batch,
        "model": dataclasses.asdict(config.model_params),
        "start": dataclasses.asdict(start),
        "searched": {k: list(v) for k, v in searched.items()},
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def read_cache(key: str) -> Choice | None:
    """The remembered choice, or None; a damaged or foreign cache file counts as empty."""
    try:
        entry = _load_cache().get(key)
        return Choice(**entry) if isinstance(entry, dict) else None
    except TypeError:  # fields of another version
        return None


def write_cache(key: str, choice: Choice) -> None:
    """Remember ``choice``; a cache that cannot be written only costs the timing next time."""
    entries = _load_cache()
    entries[key] = dataclasses.asdict(choice)
    try:
        path = cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1))
    except OSError as e:
        log.warning("autotune: could not write %s (%s)", cache_path(), e)


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]

