"""Images and animations written for the user: grids, single PNGs, GIF and MP4.

Pixels follow ``torchvision.utils.save_image`` exactly (grid with 2 px black padding, then
``x * 255 + 0.5`` clamped and truncated to uint8) after mapping the model's [-1, 1] range to
[0, 1], so a grid saved here matches the tutorial's ``x0_*.png`` byte for byte in pixels. Every
file goes through :mod:`core.atomic`: a crash or a full disk leaves the previous file intact, and
a full disk raises :class:`~core.errors.DiskFullError` naming the file.
"""
from __future__ import annotations

import errno
import io
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from .atomic import atomic_write_bytes, atomic_writer
from .errors import UserError

ANIMATION_SUFFIXES = (".gif", ".mp4")
#: libx264 constant-rate factor: visually lossless for these small, noisy frames.
MP4_CRF = 18


def to_uint8_grid(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) as one uint8 (H, W, C) grid, ``nrow`` images per row.

    ``nrow`` defaults to a square-ish grid (ceil(sqrt(N))). A single image comes back unpadded
    (torchvision's rule). Grayscale stays one channel, which keeps frame stores small; use
    :func:`to_rgb` where a writer needs three.
    """
    images = images.detach().to("cpu", torch.float32)
    if images.ndim != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got {tuple(images.shape)}")
    n, channels = images.shape[:2]
    nrow = nrow or math.ceil(math.sqrt(n))
    # save_image's per-pixel arithmetic, applied before gridding (padding 0 maps to 0 either
    # way) so make_grid moves bytes instead of floats
    pixels = ((images.clamp(-1, 1) + 1) / 2).mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    grid = make_grid(pixels, nrow=nrow, padding=2, pad_value=0).permute(1, 2, 0)
    return np.ascontiguousarray(grid[..., :channels].numpy())


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 1) or (H, W) grayscale as (H, W, 3); RGB unchanged."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def _encode_image(pixels: np.ndarray, fmt: str) -> bytes:
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _image_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"Cannot save an image as {path}: use a .png (or .jpg) file name.")
    return fmt


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Save images in [-1, 1] as one grid image (format from the suffix; PNG is lossless)."""
    path = Path(path)
    atomic_write_bytes(path, _encode_image(to_uint8_grid(images, nrow), _image_format(path)))
    return path


def save_images(images: torch.Tensor, folder: str | os.PathLike, prefix: str = "sample") -> list[Path]:
    """Save each image as ``folder/{prefix}_0000.png``, ... and return the paths."""
    folder = Path(folder)
    width = max(4, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}_{i:0{width}d}.png"
        atomic_write_bytes(path, _encode_image(to_uint8_grid(image[None]), "PNG"))
        paths.append(path)
    return paths


HOLD_LAST_S = 1.0  # the finished images stay this long before the animation ends or loops


def check_animation_path(path: str | os.PathLike) -> Path:
    """``path`` if its suffix names a format :func:`save_animation` writes; else the reason, in words."""
    path = Path(path)
    if path.suffix.lower() not in ANIMATION_SUFFIXES:
        raise UserError(f"Cannot save an animation as {path}: use a file name ending in .gif or .mp4.")
    return path


def save_animation(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 20, loop: bool = True) -> Path:
    """Write uint8 (H, W, C) frames as a GIF or an MP4, chosen by the suffix of ``path``.

    GIF: Pillow, one palette per frame, ``loop`` forever or play once; frame times are stored in
    1/100 s, so fps above 50 play at most 50 frames per second, and Pillow merges identical
    consecutive frames (lengthening the kept one, so the timing holds). MP4: H.264 (libx264,
    yuv420p, plays in browsers and QuickTime), frames padded with black to even sizes as 4:2:0
    needs; ``loop`` does not apply. Both hold the last frame :data:`HOLD_LAST_S` longer.
    """
    path = check_animation_path(path)
    suffix = path.suffix.lower()
    if not len(frames):
        raise UserError(f"No frames to save in {path}: sample first.")
    if fps <= 0:
        raise UserError(f"fps must be positive; got {fps}.")
    frames = [to_rgb(np.asarray(f, dtype=np.uint8)) for f in frames]
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"animation frames differ in size: {sorted({f.shape for f in frames})}")
    if suffix == ".gif":
        atomic_write_bytes(path, _encode_gif(frames, fps, loop))
    else:
        _write_mp4(frames + [frames[-1]] * round(HOLD_LAST_S * fps), path, fps)
    return path


def _encode_gif(frames: list[np.ndarray], fps: float, loop: bool) -> bytes:
    import imageio.v3 as iio

    durations = [1000 / fps] * (len(frames) - 1) + [1000 / fps + HOLD_LAST_S * 1000]
    options = {"duration": durations, **({"loop": 0} if loop else {})}
    return iio.imwrite("<bytes>", np.stack(frames), extension=".gif", plugin="pillow", **options)


def _write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """Encode into a scratch folder beside ``path``, then copy into the atomic write.

    ffmpeg needs a real file name, so the encode cannot stream into ``atomic_writer``; encoding
    inside its block still gives one clean-up path and one full-disk message (the copy is a few
    MB at most).
    """
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as dst, tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        tmp = Path(scratch) / "video.mp4"
        try:
            writer = imageio_ffmpeg.write_frames(
                str(tmp), (w + w % 2, h + h % 2), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                macro_block_size=2, quality=None, output_params=["-crf", str(MP4_CRF)],
            )
            writer.send(None)
            for frame in frames:
                writer.send(np.ascontiguousarray(np.pad(frame, pad)))
            writer.close()
        except OSError as e:
            if e.errno is None and "No space left" in str(e):  # ffmpeg's failure, reported as text
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from e
            raise
        with open(tmp, "rb") as src:
            shutil.copyfileobj(src, dst)
