"""What a training run reports, as plain frozen dataclasses that do not import torch.

The trainer passes these to its ``on_event`` callback; the CLI and the window dispatch on their
types. Keeping them torch-free lets the window import them (and match on them) the moment it
starts, before the engine has loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from .evaluate import EvalResult


@dataclass(frozen=True)
class Started:
    """The run is set up (and restored, when resuming) and about to take its first step."""

    run_dir: Path
    device: str
    precision: str
    num_params: int
    total_steps: int
    start_step: int
    dataset_size: int
    checkpoint_every: int | None = None  # the intervals this run uses (see trainer.run_interval)
    preview_every: int | None = None
    setup: str = ""  # how the model runs, e.g. "cpu · 2 threads · fp32 · sdpa" (see core.autotune)


@dataclass(frozen=True)
class StepDone:
    step: int
    epoch: int
    loss: float
    lr: float
    images_per_s: float
    eta_s: float
    total_steps: int
    time_used_s: float = 0.0  # training time so far (checkpoints, previews, pauses excluded)
    time_left_s: float | None = None  # of train_params.max_minutes; None without a time budget


@dataclass(frozen=True)
class PreviewReady:
    """A preview grid from the EMA weights: ``images`` float [-1, 1] CPU (N, C, H, W)."""

    step: int
    images: torch.Tensor


@dataclass(frozen=True)
class QualityMeasured:
    """A point of the quality curve (``train_params.eval_every_steps``); also in ``eval.jsonl``."""

    step: int
    result: EvalResult


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: Path


@dataclass(frozen=True)
class Paused:
    step: int


@dataclass(frozen=True)
class Resumed:
    step: int


@dataclass(frozen=True)
class Finished:
    step: int
    reason: Literal["completed", "stopped"]


@dataclass(frozen=True)
class Failed:
    """The run ended on an error; ``message`` is for people, ``error`` is the exception."""

    step: int
    message: str
    error: BaseException


Event = Started | StepDone | PreviewReady | QualityMeasured | CheckpointSaved | Paused | Resumed | Finished | Failed
