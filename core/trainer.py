"""The training loop: eps-MSE with Adam and EMA weights, reporting events to whoever runs it.

The caller may run :meth:`Trainer.run` in any thread; it reports progress through one
``on_event`` callback (called on the training thread) and takes pause / resume / stop requests
from any thread, acted on between steps. Randomness is a pure function of (seed, step, rank):
the batch order of an epoch comes from (seed, epoch) and each step's noise and timesteps from
(seed, step, rank). A resumed run therefore draws exactly what an uninterrupted one would
without saving generator states, also across DDP ranks.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from . import autotune, distributed, grad_buffer, threads
from .adam import Adam, Optimizer
from .atomic import atomic_write_text
from .attention import AttentionImpl
from .budget import TrainClock
from .checkpoint import restore_newest, save_checkpoint, save_weights
from .choices import DEFAULT_SAMPLER, app_steps
from .config import Config, dump_config
from .cuda_graphs import GraphedNetwork, use_graphs
from .denoiser import make_denoiser
from .ema import ema_beta, update_ema
from .device import Precision, describe, memory_format, pick_device, pick_precision
from .errors import TrainingDiverged, UserError
from .events import (
    CheckpointSaved, Event, Failed, Finished, Paused, PreviewReady, QualityMeasured, Resumed, Started, StepDone,
)
from .lr_schedule import lr_factor, run_progress
from .runs import RunDir
from .schedule import NoiseSchedule
from .unet import UNet, count_parameters


PREVIEW_IMAGES = 16


def _seeded(*parts: int) -> torch.Generator:
    """A CPU generator seeded from several integers (seed, epoch or step, rank)."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class _Control:
    """Thread-safe pause / stop requests, acted on by the training thread between steps."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.stop = False
        self.pause = False

    def request(self, *, stop: bool | None = None, pause: bool | None = None) -> None:
        with self._cond:
            if stop is not None:
                self.stop = stop
            if pause is not None:
                self.pause = pause
            self._cond.notify_all()

    def wait_while_paused(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self.pause or self.stop)


class _Throughput:
    """Images/s and ETA from a moving average of recent step times."""

    def __init__(self) -> None:
        self.step_time: float | None = None
        self.last = time.perf_counter()

    def tick(self, images: int, remaining_steps: int) -> tuple[float, float]:
        now = time.perf_counter()
        dt, self.last = now - self.last, now
        self.step_time = dt if self.step_time is None else 0.9 * self.step_time + 0.1 * dt
        return images / max(self.step_time, 1e-9), remaining_steps * self.step_time

    def reset_clock(self) -> None:
        self.last = time.perf_counter()


class Trainer:
    """Trains a UNet on a dataset for one run folder; see the module docstring for the contract."""

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        dataset: Any = None,
        resume: bool = False,
        on_event: Callable[[Event], None] | None = None,
        attention_impl: AttentionImpl = "auto",
    ) -> None:
        self.config = config
        self.run_dir = RunDir(Path(run_dir))
        self.on_event = on_event or (lambda event: None)
        self.resume = resume
        self.dist = distributed.current()
        tp = config.train_params
        self.device = self.dist.device or pick_device(tp.device)
        self.precision: Precision = pick_precision(tp.precision, self.device)
        torch.manual_seed(tp.seed)  # weights init: same seed, same start
        self.memory_format = memory_format(self.device)
        self._dataset = dataset
        self.class_names = self._conditioning_classes()
        self.model = UNet(config.model_params, attention_impl=attention_impl, class_names=self.class_names).to(
            self.device, memory_format=self.memory_format
        )
        self._attention = attention_impl
        self.micro_batch_size = tp.micro_batch_size
        self.tuned: autotune.Tuned | None = None
        self._log_extra: dict[str, Any] = {}
        self._threads: threads.ThreadController | None = None
        self._grad_buffer: grad_buffer.GradBuffer | None = None  # CPU runs, from tune() on
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.schedule = NoiseSchedule.from_config(config.diffusion_params)
        self._device_schedule = self.schedule.to(self.device)
        self.clock = TrainClock(tp.max_minutes)
        self.optimizer = make_adam(self.model.parameters(), tp.lr, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scale_loss)
        self._control = _Control()
        self.step = 0

    # -- requests from any thread ------------------------------------------------------------
    def request_stop(self) -> None:
        self._control.request(stop=True)

    def request_pause(self) -> None:
        self._control.request(pause=True)

    def request_resume(self) -> None:
        self._control.request(pause=False)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Finished:
        """Train until done or stopped; emits Failed and re-raises on a user-facing error."""
        try:
            return self._run()
        except UserError as e:
            self.on_event(Failed(self.step, str(e), e))
            raise
        except (torch.OutOfMemoryError, MemoryError) as e:
            raise self._fail(UserError(_oom_message(self.config, self.device)), e) from e
        except RuntimeError as e:
            if "out of memory" in str(e) or "can't allocate memory" in str(e):
                raise self._fail(UserError(_oom_message(self.config, self.device)), e) from e
            raise
        finally:
            if self._threads is not None:
                self._threads.restore()

    def _fail(self, error: UserError, cause: BaseException) -> UserError:
        self.on_event(Failed(self.step, str(error), cause))
        return error

    def _run(self) -> Finished:
        tp = self.config.train_params
        if tp.eval_every_steps:
            from .inception import network_path

            network_path()  # a missing network file is said before training, not at the first point
        dataset = self._load_dataset()
        if self.resume:
            self._restore()
        else:
            self._start_fresh()
        steps_per_epoch = max(1, math.ceil(len(dataset) / (tp.batch_size * self.dist.world_size)))
        total = tp.max_steps or tp.num_epochs * steps_per_epoch
        self.tune()
        train_model = self.dist.wrap(self.model)
        step_model = self.step_network(train_model)
        checkpoint_every = run_interval(tp.checkpoint_every_steps, total)
        preview_every = run_interval(tp.sample_every_steps, total)
        self._emit(Started(self.run_dir.path, describe(self.device), self.precision.name,
                           count_parameters(self.model), total, self.step, len(dataset),
                           checkpoint_every, preview_every, self.setup))
        clock = _Throughput()
        self._threads = cpu_threads = threads.for_device(self.device)  # fewer while other programs take cores
        order_epoch, order = -1, torch.empty(0, dtype=torch.long)
        last_saved = self.step
        self.model.train()
        self.clock.start()
        while self.step < total and not self.clock.exhausted:
            if self._control.pause and not self._control.stop:
                self._emit(Paused(self.step))
                self._control.wait_while_paused()
                clock.reset_clock()
                self.clock.start()
                if not self._control.stop:
                    self._emit(Resumed(self.step))
            if self._control.stop:
                break
            epoch, pos = divmod(self.step, steps_per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, torch.randperm(len(dataset), generator=_seeded(tp.seed, epoch))
            idx = self.dist.shard(order)[pos * tp.batch_size:(pos + 1) * tp.batch_size]
            batch = dataset.batch(idx)
            self._set_lr(total)
            labels = dataset.labels[idx] if self.class_names else None
            try:
                with cpu_threads.step():
                    loss = self._train_step(step_model, batch, labels)
            except Exception:
                if step_model is train_model:
                    raise
                step_model = train_model  # torch.compile failed on first use: run eagerly
                loss = self._train_step(step_model, batch, labels)
            self.step += 1
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"The loss became {loss} at step {self.step}. The learning rate "
                    f"(train_params.lr = {tp.lr:g}) is probably too high: lower it (e.g. to {tp.lr / 10:g}) "
                    f"and resume from the last checkpoint, which is kept."
                )
            images_per_s, eta = clock.tick(len(idx) * self.dist.world_size, total - self.step)
            self.clock.lap()
            if self.clock.left_s is not None:
                eta = min(eta, self.clock.left_s)
            self._log_step(epoch, loss, images_per_s, eta, total)
            self._emit(StepDone(self.step, epoch, loss, self.optimizer.param_groups[0]["lr"],
                                images_per_s, eta, total, self.clock.used_s, self.clock.left_s))
            if self.step % checkpoint_every == 0:
                self._checkpoint()
                last_saved = self.step
            if preview_every and self.step % preview_every == 0:
                self._preview()
            if tp.eval_every_steps and self.step % tp.eval_every_steps == 0:
                self._measure_quality()
            clock.reset_clock()  # checkpoints and previews are not training time: keep them out of the ETA
            self.clock.start()
        if self.step != last_saved or not self.run_dir.list_checkpoints():
            self._checkpoint()
        self._export_weights()
        reason = "completed" if self.step >= total or self.clock.exhausted else "stopped"
        finished = Finished(self.step, reason)
        self._emit(finished)
        return finished

    def _train_step(self, model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor | None = None) -> float:
        """One Adam step on the denoiser's loss for ``model`` (the network as this run calls it:
        DDP-wrapped or compiled); returns the loss (one host sync, which the UI shows).

        ``labels`` (conditional runs) are hidden at rate ``cond_drop_prob``, drawn after the noise
        so that an unconditional run draws exactly what it always did.
        """
        tp = self.config.train_params
        denoiser = make_denoiser(model, self._device_schedule, self.config.diffusion_params, precision=self.precision,
                                 weighting=tp.loss_weighting, min_snr_gamma=tp.min_snr_gamma)
        gen = _seeded(tp.seed, self.step, self.dist.rank)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), generator=gen)
        y = None if labels is None else drop_labels(labels, tp.cond_drop_prob, self.model.null_class, gen)
        if self.device.type == "cuda":  # pinned: asynchronous copies, no host sync before the loss
            x0, noise, t = x0.pin_memory(), noise.pin_memory(), t.pin_memory()
        x0, noise = (v.to(self.device, non_blocking=True, memory_format=self.memory_format) for v in (x0, noise))
        t = t.to(self.device, non_blocking=True)
        xt = self._device_schedule.add_noise(x0, noise, t)
        target, weight = denoiser.target(x0, noise, t), denoiser.loss_weight(t)
        if self._grad_buffer is None:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self._grad_buffer.zero()
        parts = micro_batches(x0.shape[0], self.micro_batch_size, self.device)
        loss = torch.zeros((), device=self.device)
        for i, part in enumerate(parts):
            # DDP averages gradients on the last part only: the others add up locally first
            last = i == len(parts) - 1
            with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
                out = denoiser.network(xt[part], t[part], None if y is None else y[part])
                # the batch mean as a sum of per-part means weighted by size: the same gradient
                part_weight = None if weight is None else weight[part]
                part_loss = denoiser.loss(out, target[part], part_weight) * ((part.stop - part.start) / x0.shape[0])
                self.scaler.scale(part_loss).backward()
            loss += part_loss.detach()
        if self._grad_buffer is not None:
            self._grad_buffer.settle()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._update_ema()
        return loss.item()

    def step_network(self, train_model: torch.nn.Module) -> torch.nn.Module:
        """The network as steps call it: compiled when asked, else replayed as CUDA graphs where
        :func:`core.cuda_graphs.use_graphs` allows; a failure on first use falls back to
        ``train_model`` (see :meth:`_run`)."""
        if self.config.train_params.compile:
            return _compiled(train_model)
        if self._graphs(self.micro_batch_size):
            return GraphedNetwork(train_model, self.precision)
        return train_model

    @property
    def setup(self) -> str:
        """How steps run, for the window and the log: 'cuda · bf16 · sdpa · CUDA graphs'."""
        described = self.tuned.choice.describe(self.device) if self.tuned else describe(self.device)
        return described + (" · CUDA graphs" if self._graphs(self.micro_batch_size) else "")

    def _graphs(self, micro_batch_size: int | None) -> bool:
        """Whether steps in parts of ``micro_batch_size`` replay CUDA graphs."""
        tp = self.config.train_params
        parts = len(micro_batches(tp.batch_size, micro_batch_size, self.device))
        return not tp.compile and use_graphs(tp.cuda_graphs, self.device, parts, self.dist.world_size)

    def _set_lr(self, total: int) -> None:
        tp = self.config.train_params
        progress = run_progress(self.step, total, self.clock.used_s, self.clock.budget_s)
        lr = tp.lr * lr_factor(tp.lr_schedule, self.step, tp.warmup_steps, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def tune(self) -> autotune.Tuned:
        """Pick precision, attention kernel, memory format and micro-batch size by timing them on
        this run's shapes (see :mod:`core.autotune`), apply the choice and log it. On the CPU the
        gradients then move into a :class:`core.grad_buffer.GradBuffer`, laid out like the
        parameters as the choice left them.

        Under DDP every rank must run alike, so ranks keep the defaults rather than each
        timing its own.
        """
        tp = self.config.train_params
        self.tuned = autotune.tune(self.model, self.config, self.device, training=True,
                                   batch=tp.batch_size, attention=self._attention,
                                   measure=self.dist.world_size == 1, graphs=self._graphs(tp.micro_batch_size))
        choice = self.tuned.choice
        self.precision = choice.apply(self.device, self.model, self.ema_model)
        self.memory_format = torch.channels_last if choice.channels_last else torch.contiguous_format
        self.micro_batch_size = choice.micro_batch_size
        params = list(self.model.parameters())
        if self._grad_buffer is None and self.dist.world_size == 1 and grad_buffer.applies(params):
            self._grad_buffer = grad_buffer.GradBuffer(params)  # shaped like the parameters as tuned
        # the next step's log row carries it: log.jsonl stays one row per step
        self._log_extra = {"autotune": dataclasses.asdict(choice) | {
            "setup": self.setup, "cached": self.tuned.cached,
            "seconds_per_image": self.tuned.seconds}}
        return self.tuned

    def _update_ema(self) -> None:
        tp = self.config.train_params
        if tp.ema_halflife_kimg is None:
            beta = ema_decay_at(tp.ema_decay, self.step)
        else:
            batch = tp.batch_size * self.dist.world_size
            beta = ema_beta((self.step + 1) * batch, batch, tp.ema_halflife_kimg, tp.ema_rampup)
        update_ema(self.ema_model, self.model, beta)

    # -- setup ----------------------------------------------------------------------------------
    def _conditioning_classes(self) -> list[str]:
        """The classes a conditional model learns; the dataset is loaded now, as they size the model."""
        if not self.config.model_params.class_conditional:
            return []
        from .classes import conditioning_classes

        return conditioning_classes(self._load_dataset())

    def _load_dataset(self) -> Any:
        if self._dataset is None:
            from .data import load_dataset

            m = self.config.model_params
            self._dataset = load_dataset(self.config.dataset_params.im_path, m.im_channels, m.im_size)
        return self._dataset

    def _start_fresh(self) -> None:
        if self.run_dir.list_checkpoints():
            raise UserError(
                f"{self.run_dir.path} already holds a training run. Resume it (--resume), or choose "
                "another run folder so nothing is overwritten."
            )
        if self.dist.is_main:
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir.config_path, dump_config(self.config))
            if self.class_names:
                self.run_dir.write_class_names(self.class_names)
            self.run_dir.start_log()
        self.dist.barrier()

    def _restore(self) -> None:
        """Continue from the newest checkpoint that reads cleanly (see ``restore_newest``)."""
        state, scale = restore_newest([path for _, path in self.run_dir.list_checkpoints()], self.config,
                                      self.run_dir.config_path, model=self.model, ema=self.ema_model,
                                      optimizer=self.optimizer)
        self.step = state.step
        self.clock.used_s = state.train_seconds
        if scale is not None and self.scaler.is_enabled():
            self.scaler.update(scale)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.train_params.lr
        if self.dist.is_main:
            self.run_dir.truncate_log(self.step)

    # -- outputs ---------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self.dist.is_main:
            self.on_event(event)

    def _log_step(self, epoch: int, loss: float, images_per_s: float, eta_s: float, total: int) -> None:
        """One line of ``log.jsonl``: what a StepDone says, so an opened run shows where it stood."""
        if not self.dist.is_main:
            return
        self.run_dir.append_log({
            "step": self.step, "epoch": epoch, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": round(images_per_s, 2), "eta_s": round(eta_s, 1), "total_steps": total,
            "train_s": round(self.clock.used_s, 2), "time_left_s": _rounded(self.clock.left_s),
            "time": round(time.time(), 3), **self._log_extra,
        })
        self._log_extra = {}

    def _checkpoint(self) -> None:
        if self.dist.is_main:
            path = self.run_dir.checkpoint_path(self.step)
            save_checkpoint(path, model=self.model, ema=self.ema_model, optimizer=self.optimizer,
                            step=self.step, config=self.config,
                            scaler_scale=self.scaler.get_scale() if self.scaler.is_enabled() else None,
                            train_seconds=self.clock.used_s)
            self.run_dir.prune_checkpoints(self.config.train_params.keep_checkpoints)
            self._emit(CheckpointSaved(self.step, path))
        self.dist.barrier()

    def _export_weights(self) -> None:
        if self.dist.is_main:
            save_weights(self.run_dir.weights_path(self.config), self.ema_model, self.config)

    def _preview(self) -> None:
        """A small, fast grid from the EMA weights, shown live and saved under samples/."""
        if not self.dist.is_main:
            return
        from .exports import save_grid
        from .samplers import SamplingCancelled
        from .sampling import SamplingModel

        model = SamplingModel(self.ema_model, self.config, self.device, self.precision)
        labels = torch.arange(PREVIEW_IMAGES) % self.model.num_classes if self.class_names else None
        try:
            images = model.images(num_images=PREVIEW_IMAGES, sampler=DEFAULT_SAMPLER, labels=labels,
                                  steps=app_steps(DEFAULT_SAMPLER, self.schedule.num_timesteps),
                                  seed=self.config.train_params.seed, should_cancel=lambda: self._control.stop)
        except SamplingCancelled:
            return  # Stop pressed mid-preview: stopping matters more than the picture
        save_grid(images, self.run_dir.samples / f"step-{self.step:06d}.png", nrow=4)
        self._emit(PreviewReady(self.step, images))

    def _measure_quality(self) -> None:
        """A quality-curve point from the EMA weights; Stop during it drops the point, not the run."""
        if not self.dist.is_main:
            return
        from .evaluate import append_result, curve_point
        from .inception import EvaluationCancelled
        from .samplers import SamplingCancelled
        from .sampling import SamplingModel

        try:
            model = SamplingModel(self.ema_model, self.config, self.device, self.precision)
            result = curve_point(model, self._load_dataset().images, step=self.step,
                                 should_cancel=lambda: self._control.stop)
        except (SamplingCancelled, EvaluationCancelled):
            return
        append_result(self.run_dir.path, result)
        self._emit(QualityMeasured(self.step, result))


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def drop_labels(labels: torch.Tensor, prob: float, null_class: int, generator: torch.Generator) -> torch.Tensor:
    """``labels`` with each replaced by ``null_class`` with probability ``prob``: the "no class"
    examples from which classifier-free guidance learns the unconditional prediction."""
    hide = torch.rand(labels.shape, generator=generator) < prob
    return torch.where(hide, torch.full_like(labels, null_class), labels)


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA decay for the update after ``updates`` others: ``decay``, warmed up as timm and
    TensorFlow do with min(decay, (1 + n) / (10 + n)). Without it the average starts at the
    random initial weights and keeps them for ~1/(1 - decay) steps: a 200-step run at 0.995
    would sample pure noise. From ~2,000 steps on (at 0.995) the warm-up no longer applies."""
    return min(decay, (1 + updates) / (10 + updates))


def run_interval(every: int | None, total: int, parts: int = 4) -> int | None:
    """``every`` steps, or, when the run is not longer than that, a quarter of the run: a short
    run still shows previews and keeps a checkpoint on the way instead of waiting for a step it
    never reaches. None (never) stays None."""
    if every is None or every < total:
        return every
    return max(1, total // parts)


CPU_MICRO_BATCH = 32


def micro_batches(batch: int, size: int | None, device: torch.device) -> list[slice]:
    """The parts a batch is run in: near-equal, at most ``size`` images each; by default at most
    :data:`CPU_MICRO_BATCH` on the CPU and the whole batch on other devices.

    Nothing in the model mixes images (GroupNorm, not BatchNorm), so the parts' gradients add
    up to the batch's: the same step in less activation memory. On 2 CPU cores, tutorial config,
    batch 64, paired runs of ``bench/train_step.py``: in parts of 32 the step took from 1 % less
    to 9 % more time than whole (median +3.5 %) and peak RSS was 1.13-1.14 GiB against 1.35 GiB
    whole; in parts of 16 it took 10 % more time. A GPU has the memory and wants the large
    kernels.
    """
    if size is None:
        size = CPU_MICRO_BATCH if device.type == "cpu" else batch
    parts = math.ceil(batch / size)
    bounds = [round(i * batch / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def make_adam(params: Iterable[torch.nn.Parameter], lr: float, device: torch.device) -> Optimizer:
    """Adam as the device runs it best: torch's fused kernel, on the CPU through
    :class:`core.adam.Adam`, which leaves out torch.optim's 0.15 GiB import."""
    if device.type in ("cuda", "mps"):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return Adam(params, lr=lr)


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    """The model torch.compile'd where possible; otherwise as it is."""
    try:
        return torch.compile(model)
    except Exception:  # noqa: BLE001 - any failure means: run uncompiled
        return model


def _oom_message(config: Config, device: torch.device) -> str:
    tp, m = config.train_params, config.model_params
    part = micro_batches(tp.batch_size, tp.micro_batch_size, device)[0]
    smaller_part = max(1, (part.stop - part.start) // 2)
    return (
        f"Out of memory on {device.type} with batch_size {tp.batch_size} at {m.im_size}px. "
        f"Lower train_params.batch_size (e.g. to {max(1, tp.batch_size // 2)}), or keep it and set "
        f"train_params.micro_batch_size to {smaller_part} (the same steps in less memory), lower "
        "model_params.im_size, or pick the 'Fast CPU' preset; then resume from the last checkpoint."
    )
