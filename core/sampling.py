"""The one path from weights to images, shared by the CLI, the window, the self-test and the
trainer's previews.

A :class:`SamplingModel` is a network ready to sample with everything that must agree between
those callers: the config (schedule, image shape, parameterisation), the device and the
precision resolved from ``train_params.precision`` for that device. Building it in one place is
what makes the window and ``ddpm sample`` give the same images for the same weights, sampler,
steps and seed.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from .choices import DEFAULT_GUIDANCE
from .config import Config
from .denoiser import Denoiser, make_denoiser
from .device import Precision, pick_device, pick_precision
from .guidance import check_request
from .samplers import Frame, final_images, sample
from .schedule import NoiseSchedule


@dataclass(frozen=True)
class SamplingModel:
    """A network in eval mode with its config, device and precision."""

    net: torch.nn.Module
    config: Config
    device: torch.device
    precision: Precision
    setup: str = ""  # how it runs once tuned, e.g. "cpu · 2 threads · fp32 · sdpa"

    @classmethod
    def load(
        cls,
        source: str | os.PathLike,
        config: Config | None = None,
        *,
        use_ema: bool = True,
        device: str | torch.device = "auto",
    ) -> SamplingModel:
        """From a run folder, a weights/checkpoint .safetensors or a tutorial .pth (which needs
        ``config``); ``device`` is a name as ``train_params.device`` takes it, or a device."""
        from .checkpoint import load_for_sampling

        dev = device if isinstance(device, torch.device) else pick_device(device)
        net, config = load_for_sampling(source, config, use_ema=use_ema, device=dev)
        return cls(net, config, dev, pick_precision(config.train_params.precision, dev))

    def tuned(self, num_images: int) -> SamplingModel:
        """This model set up the fastest way this machine runs batches of ``num_images``: the
        attention kernel, memory format and precision timed by :mod:`core.autotune` (once per
        machine and shapes, then remembered). A precision set in the config is kept."""
        from .autotune import tune

        found = tune(self.net, self.config, self.device, training=False, batch=num_images)
        return dataclasses.replace(self, precision=found.precision, setup=found.choice.describe(self.device))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        m = self.config.model_params
        return (m.im_channels, m.im_size, m.im_size)

    @property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_config(self.config.diffusion_params)

    @property
    def class_names(self) -> list[str]:
        """The classes a conditional network can be asked for; empty for an unconditional one."""
        return list(getattr(self.net, "class_names", []))

    def denoiser(self, labels: torch.Tensor | None = None, guidance: float = DEFAULT_GUIDANCE) -> Denoiser:
        return make_denoiser(self.net, self.schedule, self.config.diffusion_params, precision=self.precision,
                             labels=labels, guidance=guidance)

    def frames(
        self,
        *,
        num_images: int,
        sampler: str,
        steps: int | None = None,
        options: Mapping[str, float] | None = None,
        seed: int = 0,
        frame_stride: int = 1,
        should_cancel: Callable[[], bool] | None = None,
        labels: torch.Tensor | None = None,
        guidance: float = DEFAULT_GUIDANCE,
    ) -> Iterator[Frame]:
        """:func:`core.samplers.sample` with this model's schedule, shape, device and precision;
        ``labels`` (one class index per image) ask a conditional network for those classes with
        classifier-free ``guidance`` (:mod:`core.guidance`)."""
        if labels is not None:
            check_request(labels, num_images, guidance)
        return sample(self.denoiser(labels, guidance), num_images=num_images, image_shape=self.image_shape, sampler=sampler,
                      steps=steps, options=options, seed=seed, device=self.device,
                      frame_stride=frame_stride, should_cancel=should_cancel)

    def images(self, *, num_images: int, sampler: str, steps: int | None = None,
               options: Mapping[str, float] | None = None, seed: int = 0,
               should_cancel: Callable[[], bool] | None = None, labels: torch.Tensor | None = None,
               guidance: float = DEFAULT_GUIDANCE) -> torch.Tensor:
        """The final images (float32 CPU, (N, C, H, W)) without per-step copies."""
        return final_images(self.frames(num_images=num_images, sampler=sampler, steps=steps, options=options,
                                        seed=seed, frame_stride=sys.maxsize, should_cancel=should_cancel,
                                        labels=labels, guidance=guidance))
