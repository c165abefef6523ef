"""What the Explore view shows: the forward process of one image, the schedule's curves, what
the network predicts at a timestep, its loss at each noise level, and the UNet level by level.

Every value comes from :class:`~core.schedule.NoiseSchedule`'s own tables and methods, and the
network is read through its :class:`~core.denoiser.Denoiser`, so the view shows exactly what
training and sampling compute, whatever the network predicts. Images are float (C, H, W) in [-1, 1] as
the model sees them; results meant for display come back as uint8 (H, W, C) arrays.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import UNET_OUT_CHANNELS, DiffusionParams, ModelParams
from .denoiser import Denoiser
from .errors import UserError
from .exports import to_uint8
from .schedule import NoiseSchedule
from .unet import UNet, count_parameters

#: How many images the loss-by-timestep curve averages over at each t: enough that the curves
#: of two checkpoints differ by more than the batch's own spread, few enough for a CPU.
LOSS_BATCH = 64
LOSS_TIMESTEPS = 50
#: Noise is shown divided by this, so +-2 standard deviations span black to white.
NOISE_DISPLAY_RANGE = 2.0


class ExploreCancelled(UserError):
    def __init__(self) -> None:
        super().__init__("Stopped before the loss curve was complete.")


def spaced_timesteps(num_timesteps: int, count: int) -> list[int]:
    """``count`` timesteps evenly spaced from 0 to T-1, both ends included (fewer if T is small)."""
    return sorted({int(t) for t in np.linspace(0, num_timesteps - 1, max(1, count)).round()})


# -- the schedule ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleCurves:
    """One schedule's tables as plain arrays, index = timestep."""

    kind: str
    betas: np.ndarray
    alpha_bar: np.ndarray
    log_snr: np.ndarray


def schedule_curves(schedule: NoiseSchedule) -> ScheduleCurves:
    return ScheduleCurves(schedule.kind, schedule.betas.double().numpy(), schedule.alpha_cum_prod64.numpy(),
                          schedule.log_snr_table().numpy())


def compared_schedules(params: DiffusionParams) -> tuple[ScheduleCurves, ScheduleCurves]:
    """The config's schedule and the other kind (linear <-> cosine) over the same T, so the
    difference the choice makes is visible side by side."""
    other = "cosine" if params.schedule == "linear" else "linear"
    mine = NoiseSchedule.from_config(params)
    theirs = NoiseSchedule(params.num_timesteps, params.beta_start, params.beta_end, other)
    return schedule_curves(mine), schedule_curves(theirs)


# -- the forward process -----------------------------------------------------------------------
def draw_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """A standard normal draw that depends on ``seed`` alone: the same noise at every t, so
    moving the slider shows the schedule's effect and nothing else."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def noised(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, ts: Sequence[int]) -> torch.Tensor:
    """x_t of one image (C, H, W) at each of ``ts``: (len(ts), C, H, W)."""
    n = len(ts)
    return schedule.add_noise(x0.expand(n, *x0.shape), noise.expand(n, *noise.shape), torch.tensor(list(ts)))


def image_uint8(x: torch.Tensor, value_range: float = 1.0) -> np.ndarray:
    """One image (C, H, W) in [-value_range, value_range] as uint8 (H, W, C) for display.

    A grid of one image is that image (torchvision's rule), so no grid is made: making one
    imports torchvision, and with it torch._dynamo, which the Explore page's first strip would
    otherwise pay for on the UI thread at start-up (seconds).
    """
    return np.ascontiguousarray(to_uint8(x[None] / value_range)[0].permute(1, 2, 0).numpy())


def strip_uint8(images: torch.Tensor) -> list[np.ndarray]:
    return [image_uint8(x) for x in images]


# -- what the network predicts -----------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """The true and the predicted noise and clean image at one t, and the mean squared errors."""

    t: int
    xt: torch.Tensor
    noise: torch.Tensor
    noise_pred: torch.Tensor
    x0: torch.Tensor
    x0_pred: torch.Tensor
    noise_mse: float  # the training loss of this image at this t
    x0_mse: float


def check_image_shape(model_params: ModelParams, image: torch.Tensor) -> None:
    want = (model_params.im_channels, model_params.im_size, model_params.im_size)
    if tuple(image.shape[-3:]) != want:
        raise UserError(f"The model takes {want[0]}x{want[1]}x{want[2]} images (channels x size x size) "
                        f"but these are {'x'.join(map(str, image.shape[-3:]))}: choose the dataset it was "
                        f"trained on, or another model.")


def _device(denoiser: Denoiser) -> torch.device:
    return next(denoiser.net.parameters()).device


@torch.no_grad()
def predict(denoiser: Denoiser, x0: torch.Tensor, noise: torch.Tensor, t: int) -> Prediction:
    """Noise ``x0`` to step t with ``noise`` and ask the network (in eval mode) what it sees:
    its noise and clamped x0 estimates, as samplers read them."""
    xt = denoiser.schedule.add_noise(x0[None], noise[None], torch.tensor([t]))
    seen = denoiser(xt.to(_device(denoiser)), t)
    noise_pred, x0_pred = seen.eps[0].float().cpu(), seen.x0[0].float().cpu()
    return Prediction(t, xt[0], noise, noise_pred, x0, x0_pred,
                      F.mse_loss(noise_pred, noise).item(), F.mse_loss(x0_pred, x0).item())


# -- where the model is weak -------------------------------------------------------------------
def fixed_batch(dataset: Sequence[torch.Tensor], count: int = LOSS_BATCH, seed: int = 0) -> torch.Tensor:
    """``count`` training images chosen by ``seed`` (all of them when fewer): the same batch for
    every model compared, so their curves differ only by the weights."""
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    return torch.stack([dataset[int(i)] for i in chosen.sort().values])


@dataclass(frozen=True)
class LossByTimestep:
    timesteps: np.ndarray  # int64
    loss: np.ndarray  # float64, the training loss averaged over the batch at each t


@torch.no_grad()
def loss_by_timestep(
    denoiser: Denoiser,
    images: torch.Tensor,
    timesteps: Sequence[int],
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> LossByTimestep:
    """The training loss of the denoiser's network at each of ``timesteps`` over ``images``
    (B, C, H, W): its output against the denoiser's target, weighted as the trainer weighs it.

    The noise at step t is a function of (seed, t) alone, so two models see identical inputs and
    a step's value does not depend on which other steps are asked for. ``should_cancel()`` is
    checked before each step; it raises :class:`ExploreCancelled`.
    """
    device = _device(denoiser)
    losses = []
    for i, t in enumerate(timesteps):
        if should_cancel is not None and should_cancel():
            raise ExploreCancelled()
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(t)))
        tt = torch.full((len(images),), int(t), dtype=torch.long)
        xt = denoiser.schedule.add_noise(images, noise, tt)
        out = denoiser.network(xt.to(device), tt.to(device)).cpu()
        losses.append(denoiser.loss(out, denoiser.target(images, noise, tt), denoiser.loss_weight(tt)).item())
        if progress is not None:
            progress(i + 1, len(timesteps))
    return LossByTimestep(np.asarray(list(timesteps), dtype=np.int64), np.asarray(losses, dtype=np.float64))


# -- the network -------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetLevel:
    """One row of the UNet table: a block, the resolution it works at, its channels in and out,
    whether it attends, and its parameter count."""

    block: str
    resolution: int
    channels_in: int
    channels_out: int
    attention: bool
    parameters: int


def unet_levels(params: ModelParams) -> list[UNetLevel]:
    """The UNet ``params`` builds, block by block in the order data flows through it. The rows'
    parameters add up to the whole model's count (the network is built on the meta device:
    no memory, milliseconds)."""
    with torch.device("meta"):
        model = UNet(params)
    down, mid, attn = params.down_channels, params.mid_channels, params.attention_flags()
    sizes = [params.im_size]
    for halves in params.down_sample:
        sizes.append(sizes[-1] // 2 if halves else sizes[-1])
    rows = [
        UNetLevel("time embedding", 0, params.time_emb_dim, params.time_emb_dim, False, count_parameters(model.t_proj)),
        UNetLevel("input conv", sizes[0], params.im_channels, down[0], False, count_parameters(model.conv_in)),
    ]
    for i, block in enumerate(model.downs):
        rows.append(UNetLevel(f"down {i + 1}", sizes[i], down[i], down[i + 1], attn[i], count_parameters(block)))
    for i, block in enumerate(model.mids):
        rows.append(UNetLevel(f"mid {i + 1}", sizes[-1], mid[i], mid[i + 1], True, count_parameters(block)))
    for j, block in enumerate(model.ups):
        i = len(model.ups) - 1 - j  # ups mirror the downs, deepest first
        out = down[i - 1] if i else UNET_OUT_CHANNELS
        rows.append(UNetLevel(f"up {j + 1}", sizes[i], down[i] * 2, out, attn[i], count_parameters(block)))
    head = count_parameters(model.norm_out) + count_parameters(model.conv_out)
    rows.append(UNetLevel("output", sizes[0], UNET_OUT_CHANNELS, params.im_channels, False, head))
    return rows
