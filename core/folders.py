"""Training images from a folder of image files, one class per first-level subfolder.

Every image is decoded once, converted to the model's channels, resized so its shorter side is
``size`` and centre-cropped square. A file that cannot be used (not an image, truncated,
absurdly large, unreadable) is skipped and listed with a reason in the report: one bad file among
thousands never stops a run.

Choices, and why:

- Transparent pixels are composited onto **white**, as browsers and image viewers show them, so
  icons and sprites look the way their authors drew them.
- Folder symlinks **are followed** (datasets are often linked in from another disk) and each
  folder is entered once, by its (device, inode): a link back to a parent ends there instead of
  looping, and a folder linked twice is not loaded twice.
- Dot-prefixed files and folders are ignored without a report: they are tool and system files
  (.DS_Store, .git, ._resource forks), never images a user meant to train on.
- Images directly in the chosen folder get the class ``""``; each first-level subfolder is a class.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import struct
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .dataset import (
    DatasetReport, ImageDataset, Images, LazyImages, Progress, ProgressTicker, ShouldCancel, SkippedFile, Unusable,
    check_cancel, fits_in_memory, plural,
)
from .errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Larger images are skipped before decoding: 8192x8192 RGBA already needs 256 MiB. It sits below
# PIL's own decompression-bomb warning (89 Mpx); PIL refuses anything over 179 Mpx at open.
MAX_PIXELS = 8192 * 8192
# The resize filter; core.idx resizes with the same one (torchvision's), both antialiased.
PIL_RESAMPLE = Image.Resampling.BICUBIC
BACKGROUND = (255, 255, 255)  # what transparent pixels become

T = TypeVar("T")
R = TypeVar("R")


def list_images(
    root: str | os.PathLike, should_cancel: ShouldCancel | None = None
) -> tuple[list[tuple[str, str]], list[SkippedFile]]:
    """Image files under ``root`` as (path, class name), and the entries that could not be listed.

    Only names are read — one ``stat`` per folder, none per file — so listing 100k files takes
    about a second; decoding decides later which files are usable. Folders are walked in sorted
    order, so the same folder gives the same dataset order on every run and platform.
    """
    found: list[tuple[str, str]] = []
    skipped: list[SkippedFile] = []
    entered: set[tuple[int, int]] = set()
    stack: list[tuple[str, str | None]] = [(os.fspath(root), None)]  # (folder, its class)
    while stack:
        check_cancel(should_cancel)
        folder, label = stack.pop()
        subfolders = []
        for entry in _folder_entries(folder, entered, skipped):
            if entry.name.startswith("."):
                continue
            kind = _entry_kind(entry)
            if kind == "folder":
                subfolders.append((entry.path, entry.name if label is None else label))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                if kind == "file":
                    found.append((entry.path, label or ""))
                else:
                    skipped.append(SkippedFile(entry.path, kind))
        stack.extend(reversed(subfolders))
    return found, skipped


def _folder_entries(folder: str, entered: set[tuple[int, int]], skipped: list[SkippedFile]) -> list[os.DirEntry]:
    """The sorted entries of a folder not entered before (through another link), else none."""
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in entered:
            return []
        entered.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except PermissionError:
        skipped.append(SkippedFile(folder, "permission denied"))
    except OSError as e:
        skipped.append(SkippedFile(folder, f"cannot read the folder ({e.strerror or e})"))
    return []


def _entry_kind(entry: os.DirEntry) -> str:
    """"folder", "file", or why the entry is neither (a FIFO named .png would block a reader)."""
    try:
        if entry.is_dir():
            return "folder"
        if entry.is_file():
            return "file"
        return "broken link" if entry.is_symlink() else "not a regular file"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"


def load_folder(
    root: Path, channels: int, size: int, progress: Progress | None, should_cancel: ShouldCancel | None
) -> ImageDataset:
    files, skipped = list_images(root, should_cancel)
    in_memory = fits_in_memory(len(files), channels, size)
    pixels = torch.empty((len(files), channels, size, size), dtype=torch.uint8) if in_memory else None
    kept: list[tuple[str, str]] = []
    sizes: Counter = Counter()
    modes: Counter = Counter()
    ticker = ProgressTicker(progress, len(files))
    decode = functools.partial(_try_decode, channels=channels, size=size)
    with contextlib.closing(_ordered_map(decode, [p for p, _ in files], _decode_workers())) as results:
        for (path, label), result in zip(files, results):
            check_cancel(should_cancel)
            if isinstance(result, SkippedFile):
                skipped.append(result)
            else:
                if pixels is not None:
                    pixels[len(kept)] = torch.from_numpy(result.pixels)
                kept.append((path, label))
                sizes[result.size] += 1
                modes[result.mode] += 1
            ticker.advance()
    if not kept:
        raise DatasetError(_no_images_message(root, skipped))
    class_names = sorted({label for _, label in kept})
    number = {name: i for i, name in enumerate(class_names)}
    labels = torch.tensor([number[label] for _, label in kept], dtype=torch.int64)
    if pixels is not None:
        images: Images = pixels[: len(kept)]
    else:
        paths = tuple(p for p, _ in kept)
        images = LazyImages(len(kept), (channels, size, size), functools.partial(_decode_again, paths, channels, size))
    report = DatasetReport(str(root), len(kept), sizes, modes, class_names, skipped, in_memory)
    return ImageDataset(images, labels, class_names, report)


def _no_images_message(root: Path, skipped: list[SkippedFile]) -> str:
    text = f"No usable images in {root}: put .png/.jpg images in it (subfolders are fine) or pick another folder."
    if skipped:
        first = skipped[0]
        text += f" {plural(len(skipped), 'file')} skipped, e.g. {first.path}: {first.reason}."
    return text


def _decode_workers() -> int:
    """Threads decoding files: PIL releases the GIL while decoding and resizing."""
    return min(4, os.cpu_count() or 1)


def _ordered_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, in order, with a bounded number of files in flight.

    Unlike ``Executor.map`` it doesn't queue every item up front (100k futures), and closing the
    iterator early (on cancel) drops the queued work instead of finishing it.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pending: deque[Future] = deque()
    feed = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        try:
            for item in feed:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@dataclass(frozen=True)
class _Decoded:
    pixels: np.ndarray  # (C, S, S) uint8
    size: tuple[int, int]  # as stored in the file
    mode: str  # as stored in the file


def _try_decode(path: str, channels: int, size: int) -> _Decoded | SkippedFile:
    try:
        return _decode_file(path, channels, size)
    except Unusable as e:
        return SkippedFile(path, str(e))


def _decode_again(paths: tuple[str, ...], channels: int, size: int, i: int) -> torch.Tensor:
    """Image ``i`` of a lazy dataset; it decoded at load time, so a failure now is a changed file."""
    try:
        return torch.from_numpy(_decode_file(paths[i], channels, size).pixels)
    except Unusable as e:
        raise DatasetError(
            f"{paths[i]} can no longer be used ({e}); it changed after the dataset was loaded. "
            "Load the dataset again."
        ) from None


def _decode_file(path: str, channels: int, size: int) -> _Decoded:
    """One image file as (C, S, S) uint8; raises :class:`Unusable` with a reason for people."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise Unusable("empty file")
            with Image.open(f) as im:
                return _decode_image(im, channels, size)
    except PermissionError:
        raise Unusable("permission denied") from None
    except FileNotFoundError:
        raise Unusable("file disappeared while loading") from None
    except UnidentifiedImageError:
        raise Unusable("not an image") from None
    except Image.DecompressionBombError as e:
        raise Unusable(_too_large_reason(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        raise Unusable(_damaged_reason(e)) from None


def _decode_image(im: Image.Image, channels: int, size: int) -> _Decoded:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise Unusable(f"too large: {width}x{height} pixels (the limit is {MAX_PIXELS / 1e6:.0f} megapixels)")
    mode = im.mode
    im.draft(None, (size, size))  # JPEG: libjpeg decodes at 1/2..1/8 scale, never below ``size``
    im.load()
    ImageOps.exif_transpose(im, in_place=True)
    im = ImageOps.fit(_to_channels(im, channels), (size, size), PIL_RESAMPLE)
    array = np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on PIL's read-only view
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return _Decoded(np.ascontiguousarray(array), (width, height), mode)


def _too_large_reason(error: Exception) -> str:
    """PIL refuses over 179 Mpx at open, before the size can be read; its message has the count."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    megapixels = f"{int(found[1]) / 1e6:,.0f} megapixels" if found else "over 179 megapixels"
    return f"too large: {megapixels} (the limit is {MAX_PIXELS / 1e6:.0f} megapixels)"


def _damaged_reason(error: Exception) -> str:
    text = str(error)
    if "truncated" in text.lower() or "broken data stream" in text:
        return "truncated image"
    return f"damaged image ({text})" if text else "damaged image"


def _to_channels(im: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode to L or RGB: high bit depths scaled down, transparency over ``BACKGROUND``."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _high_depth_to_l(im)
    elif im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = _onto_background(im)
    elif im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # P, 1, CMYK, YCbCr...: every mode converts to RGB
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit (and 32-bit) grayscale to 8 bits by scaling; PIL's ``convert("L")`` clips at 255.

    Integer images are taken to span 0..65535 and float images 0..1.
    """
    values = np.asarray(im, dtype=np.float32)
    scale = 255.0 if im.mode == "F" else 255.0 / 65535.0
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))


def _onto_background(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    page = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    page.alpha_composite(rgba)
    return page.convert("RGB")
