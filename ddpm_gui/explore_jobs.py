"""The engine calls the Explore page makes, each importing ``core.explore`` only when run.

The network only ever runs on workers (:func:`serve_predictions`, :func:`compute_loss_curve`);
results come back as uint8 arrays and numbers. Noising one image is microseconds, so
:class:`ForwardProcess` does it on the UI thread, which keeps the slider immediate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import Config, DiffusionParams, ModelParams

from .workers import Mailbox, Worker

STRIP_STEPS = 10
POLL_S = 0.1  # how often an idle predictor checks for an abort


@dataclass(frozen=True)
class ModelSource:
    """A model to explore: a run folder or a weights file, and the config a .pth needs."""

    path: Path
    config: Config | None
    label: str


class ForwardProcess:
    """One image, one fixed noise draw and the schedule of the current config."""

    def __init__(self, diffusion: DiffusionParams, x0: Any, noise_seed: int) -> None:
        from core.explore import draw_noise
        from core.schedule import NoiseSchedule

        self.schedule = NoiseSchedule.from_config(diffusion)
        self.x0 = x0
        self.noise = draw_noise(x0.shape, noise_seed)

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def at(self, t: int) -> np.ndarray:
        """x_t as uint8 (H, W, C)."""
        from core.explore import image_uint8, noised

        return image_uint8(noised(self.schedule, self.x0, self.noise, [t])[0])

    def strip(self, count: int = STRIP_STEPS) -> tuple[list[int], list[np.ndarray]]:
        """x_t at ``count`` evenly spaced t."""
        from core.explore import noised, spaced_timesteps, strip_uint8

        ts = spaced_timesteps(self.num_timesteps, count)
        return ts, strip_uint8(noised(self.schedule, self.x0, self.noise, ts))


def schedule_curves(diffusion: DiffusionParams) -> tuple[Any, Any]:
    from core.explore import compared_schedules

    return compared_schedules(diffusion)


def unet_levels(params: ModelParams) -> list[Any]:
    from core.explore import unet_levels as levels

    return levels(params)


# -- the network's predictions, served to the slider ---------------------------------------------
@dataclass(frozen=True)
class PredictionRequest:
    x0: Any  # float (C, H, W)
    noise: Any
    t: int


@dataclass(frozen=True)
class PredictorReady:
    label: str
    diffusion: DiffusionParams  # the schedule the model was trained with


@dataclass(frozen=True)
class PredictionView:
    """What the page shows for one t: four images and two errors."""

    t: int
    noise: np.ndarray
    noise_pred: np.ndarray
    x0: np.ndarray
    x0_pred: np.ndarray
    noise_mse: float
    x0_mse: float


@dataclass(frozen=True)
class PredictionRefused:
    message: str  # why this image cannot go through this model


def serve_predictions(worker: Worker, source: ModelSource, device: str, requests: Mailbox) -> None:
    """Load the model once, then answer the newest :class:`PredictionRequest` until aborted,
    reporting a :class:`PredictionView` (or :class:`PredictionRefused`) for each."""
    from core.errors import UserError
    from core.explore import NOISE_DISPLAY_RANGE, check_image_shape, image_uint8, predict
    from core.sampling import SamplingModel

    model = SamplingModel.load(source.path, source.config, device=device)
    config, denoiser = model.config, model.denoiser()
    worker.report(PredictorReady(source.label, config.diffusion_params))
    while not worker.should_abort():
        got, request = requests.take(POLL_S)
        if not got:
            continue
        try:
            check_image_shape(config.model_params, request.x0)
        except UserError as e:
            worker.report(PredictionRefused(str(e)))
            continue
        t = min(request.t, denoiser.schedule.num_timesteps - 1)
        p = predict(denoiser, request.x0, request.noise, t)
        worker.report(PredictionView(
            p.t, image_uint8(p.noise, NOISE_DISPLAY_RANGE), image_uint8(p.noise_pred, NOISE_DISPLAY_RANGE),
            image_uint8(p.x0), image_uint8(p.x0_pred), p.noise_mse, p.x0_mse))


# -- loss by timestep ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LossProgress:
    done: int
    total: int


@dataclass(frozen=True)
class LossCurve:
    label: str
    timesteps: np.ndarray
    loss: np.ndarray


def compute_loss_curve(worker: Worker, source: ModelSource, dataset: Any, images: int, device: str) -> LossCurve:
    """The model's mean loss at evenly spaced t over a fixed batch of ``dataset``."""
    from core.explore import LOSS_TIMESTEPS, check_image_shape, fixed_batch, loss_by_timestep, spaced_timesteps
    from core.sampling import SamplingModel

    model = SamplingModel.load(source.path, source.config, device=device)
    batch = fixed_batch(dataset, images)
    check_image_shape(model.config.model_params, batch)
    denoiser = model.denoiser()
    ts = spaced_timesteps(denoiser.schedule.num_timesteps, LOSS_TIMESTEPS)
    result = loss_by_timestep(denoiser, batch, ts,
                              progress=lambda done, total: worker.report(LossProgress(done, total)),
                              should_cancel=worker.should_abort)
    return LossCurve(source.label, result.timesteps, result.loss)
