"""Training images from an MNIST-format IDX file (``*-images-idx3-ubyte[.gz]``), with its labels.

The labels file beside it (``*-labels-idx1-ubyte``) gives the classes, and a ``classes.txt``
their names. Images are resized in chunks with torchvision, with the same filter as
``core.folders`` uses for files.
"""
from __future__ import annotations

import functools
import gzip
import re
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from .dataset import (
    DatasetReport, ImageDataset, Images, LazyImages, Progress, ProgressTicker, ShouldCancel, SkippedFile, Unusable,
    check_cancel, fits_in_memory,
)
from .errors import DatasetError

_IDX_IMAGES = re.compile(r"(.+)([-.])images([-.])idx3([-.])ubyte(\.gz)?", re.IGNORECASE)
_IDX_CHUNK = 4096  # IDX images resized per torchvision call: bounds the float temporaries


def idx_images_file(path: Path) -> Path | None:
    """``path`` if it is an IDX images file, or the one in folder ``path`` (train-* first)."""
    if not path.is_dir():
        return path if _IDX_IMAGES.fullmatch(path.name) else None
    try:
        found = [p for p in path.iterdir() if _IDX_IMAGES.fullmatch(p.name) and p.is_file()]
    except OSError:
        return None  # the folder scan reports why it can't be read
    found.sort(key=lambda p: (not p.name.lower().startswith("train"), p.name))
    return found[0] if found else None


def _idx_labels_file(images: Path) -> Path | None:
    """The labels file beside ``images``: the same name with labels/idx1 for images/idx3."""
    stem, sep1, sep2, sep3, _ = _IDX_IMAGES.fullmatch(images.name).groups()
    for suffix in ("", ".gz"):
        candidate = images.with_name(f"{stem}{sep1}labels{sep2}idx1{sep3}ubyte{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or not) as an array; raises :class:`Unusable`."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except PermissionError:
        raise Unusable("permission denied") from None
    except (OSError, EOFError, zlib.error) as e:
        raise Unusable(f"damaged ({e}); download it again") from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:3] != b"\0\0\x08" or data[3] != ndim:
        raise Unusable(f"not an MNIST-format IDX file of {ndim}-D unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(shape)):
        raise Unusable(f"truncated or damaged: its header promises {'x'.join(map(str, shape))} values; download it again")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def _idx_labels(images: Path, count: int) -> tuple[torch.Tensor, list[str], list[SkippedFile]]:
    """Labels from the matching labels file; without a usable one, every image is class "".

    IDX labels are numbers; a ``classes.txt`` beside the file (one name per line, line i naming
    label i) gives them names, as the built-in Fashion-MNIST has.
    """
    unlabelled = torch.zeros(count, dtype=torch.int64), [""]
    path = _idx_labels_file(images)
    if path is None:
        return *unlabelled, []
    try:
        raw = _read_idx(path, ndim=1)
    except Unusable as e:
        return *unlabelled, [SkippedFile(str(path), str(e))]
    if len(raw) != count:
        return *unlabelled, [SkippedFile(str(path), f"holds {len(raw):,} labels for {count:,} images")]
    values, inverse = np.unique(raw, return_inverse=True)
    names = _class_names(path.with_name(CLASS_NAMES_FILE), values)
    return torch.from_numpy(inverse.astype(np.int64).reshape(-1)), names, []


CLASS_NAMES_FILE = "classes.txt"


def _class_names(path: Path, values: np.ndarray) -> list[str]:
    """Names for numeric labels from ``path`` when it names every one of them, else the numbers."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError):
        lines = []
    if len(lines) > int(values.max()) and all(lines[v] for v in values):
        return [lines[v] for v in values]
    return [str(v) for v in values]


def load_idx(
    path: Path, channels: int, size: int, progress: Progress | None, should_cancel: ShouldCancel | None
) -> ImageDataset:
    try:
        raw = torch.from_numpy(_read_idx(path, ndim=3)).unsqueeze(1)  # (N, 1, H, W)
    except Unusable as e:
        raise DatasetError(f"Cannot use {path}: {e}.") from None
    count, _, height, width = raw.shape
    if count == 0:
        raise DatasetError(f"{path} holds no images; pick another dataset.")
    labels, class_names, skipped = _idx_labels(path, count)
    in_memory = fits_in_memory(count, channels, size)
    if in_memory:
        images: Images = _fit_in_chunks(raw, channels, size, progress, should_cancel)
    else:
        images = LazyImages(count, (channels, size, size), functools.partial(_fit_one, raw, channels, size))
    sizes, modes = Counter({(width, height): count}), Counter({"L": count})
    report = DatasetReport(str(path), count, sizes, modes, class_names, skipped, in_memory)
    return ImageDataset(images, labels, class_names, report)


def _fit_tensor(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 (B, 1, H, W) to (B, C, S, S): shorter side to ``size``, centre crop, gray to RGB."""
    if tuple(images.shape[-2:]) != (size, size):
        # imported here: torchvision pulls in torch._dynamo and triton, seconds the window's
        # start-up should not pay for an IDX file whose images are usually the right size already
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        images = TF.resize(images, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        images = TF.center_crop(images, [size, size])
    return images.expand(-1, channels, -1, -1)


def _fit_one(raw: torch.Tensor, channels: int, size: int, i: int) -> torch.Tensor:
    return _fit_tensor(raw[i : i + 1], channels, size)[0].contiguous()


def _fit_in_chunks(
    raw: torch.Tensor, channels: int, size: int, progress: Progress | None, should_cancel: ShouldCancel | None
) -> torch.Tensor:
    out = torch.empty((len(raw), channels, size, size), dtype=torch.uint8)
    ticker = ProgressTicker(progress, len(raw))
    for start in range(0, len(raw), _IDX_CHUNK):
        check_cancel(should_cancel)
        chunk = raw[start : start + _IDX_CHUNK]
        out[start : start + len(chunk)] = _fit_tensor(chunk, channels, size)
        ticker.advance(len(chunk))
    return out
