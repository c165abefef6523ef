"""A loaded dataset and its report, whatever it was loaded from (``core.folders``, ``core.idx``).

Images are kept as uint8 — a quarter of float32's memory — and become float in [-1, 1] only when
a batch is taken; a dataset too big for the memory budget is decoded per batch instead
(:class:`LazyImages`). The report lists what was loaded and every file left out, with a reason.
"""
from __future__ import annotations

import operator
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import UserError

PROGRESS_CALLS = 100  # about this many progress calls per load, however many files

Progress = Callable[[int, int], None]
ShouldCancel = Callable[[], bool]


class Unusable(Exception):
    """A file that cannot be used; the message is the reason shown to people."""


class ScanCancelled(UserError):
    """Loading was cancelled through ``should_cancel``; nothing was kept."""


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder) left out of the dataset, with the reason in words a person can act on."""

    path: str
    reason: str


@dataclass
class DatasetReport:
    """What was loaded: shown before training so surprises (skips, mixed sizes) are seen early.

    ``sizes`` and ``modes`` describe the files as stored (before conversion and resizing).
    """

    source: str
    num_images: int
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    classes: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    in_memory: bool = True

    @property
    def named_classes(self) -> list[str]:
        """The class subfolders; images directly in the chosen folder form a class without a name."""
        return [c for c in self.classes if c]

    def summary(self) -> str:
        """One line for the CLI, e.g. "5,000 images, 28x28 L, 10 classes, 0 skipped"."""
        size = _dominant(self.sizes, "sizes", lambda wh: f"{wh[0]}x{wh[1]}")
        mode = _dominant(self.modes, "modes", str)
        mixed = len(self.sizes) > 1 or len(self.modes) > 1
        parts = [plural(self.num_images, "image"), f"{size}, {mode}" if mixed else f"{size} {mode}"]
        named = self.named_classes
        parts.append(plural(len(named), "class", "classes") if named else "no classes")
        parts.append(f"{len(self.skipped):,} skipped")
        if not self.in_memory:
            parts.append("decoded per batch (too big to keep in memory)")
        return ", ".join(parts)


def fit_description(channels: int, size: int) -> str:
    """How every image becomes a training example, in the words the CLI, README and window use."""
    colour = "RGB" if channels == 3 else "grayscale"
    return (f"each image is resized so its shorter side is {size} px, centre-cropped to {size}x{size} "
            f"(the longer side loses its edges) and converted to {colour}")


_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


def stored_channels(report: DatasetReport) -> int:
    """3 if most files are stored in colour (RGB, RGBA, palette, CMYK...), else 1."""
    gray = sum(n for mode, n in report.modes.items() if mode in _GRAY_MODES or str(mode).startswith("I;16"))
    return 1 if gray * 2 >= sum(report.modes.values()) else 3


def dataset_advice(report: DatasetReport, channels: int, size: int) -> list[str]:
    """Surprises worth a warning before training: images smaller than the model's size (they
    are enlarged, so blurry) and a colour setting that differs from how most files are stored."""
    advice = []
    small = {wh: n for wh, n in report.sizes.items() if isinstance(wh, tuple) and min(wh) < size}
    if small:
        smallest = min(small, key=lambda wh: wh[0] * wh[1])
        advice.append(
            f"{plural(sum(small.values()), 'image')} smaller than {size} px on the shorter side (the "
            f"smallest {smallest[0]}x{smallest[1]}) will be enlarged and look blurry; remove them or "
            f"lower model_params.im_size"
        )
    stored = stored_channels(report)
    if report.modes and stored != channels:
        if stored == 3:
            advice.append("most images are in colour but model_params.im_channels is 1, so they are trained "
                          "as grayscale; set im_channels to 3 to keep the colours")
        else:
            advice.append("most images are grayscale but model_params.im_channels is 3; set im_channels "
                          "to 1 for a smaller, faster model")
    return advice


def _dominant(counts: Counter, noun: str, show: Callable) -> str:
    if len(counts) <= 1:
        return show(next(iter(counts))) if counts else "?"
    return f"mixed {noun} (mostly {show(counts.most_common(1)[0][0])})"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


class LazyImages:
    """Stands in for the (N, C, S, S) uint8 tensor of a dataset too big for memory.

    Indexing (int, slice, index tensor or list) decodes just the images asked for, so
    :class:`ImageDataset` and the preview code (``dataset.images[:n]``) need no second path.
    ``decode`` must be picklable (a ``functools.partial`` of a module function) so DataLoader
    workers can receive it.
    """

    dtype = torch.uint8

    def __init__(self, count: int, item_shape: tuple[int, int, int], decode: Callable[[int], torch.Tensor]):
        self._count = count
        self._item_shape = item_shape
        self._decode = decode

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._count, *self._item_shape))

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        if isinstance(index, slice):
            positions: Iterable[int] = range(*index.indices(self._count))
        elif isinstance(index, (torch.Tensor, np.ndarray, list, tuple)) and np.ndim(index) > 0:
            positions = torch.as_tensor(index).reshape(-1).tolist()
        else:
            return self._decode(self._position(operator.index(index)))
        items = [self._decode(self._position(i)) for i in positions]
        return torch.stack(items) if items else torch.empty((0, *self._item_shape), dtype=torch.uint8)

    def _position(self, i: int) -> int:
        if not -self._count <= i < self._count:
            raise IndexError(f"image {i} out of range for {self._count} images")
        return i % self._count


Images = torch.Tensor | LazyImages


class ImageDataset(Dataset):
    """uint8 images (kept or decoded on demand), int64 labels and the load report.

    ``images`` is a (N, C, S, S) uint8 tensor, or a :class:`LazyImages` that indexes like one when
    ``report.in_memory`` is false. ``labels[i]`` indexes ``class_names``.
    """

    def __init__(self, images: Images, labels: torch.Tensor, class_names: list[str], report: DatasetReport):
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.report = report

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> torch.Tensor:
        """One image as float32 (C, S, S) in [-1, 1]."""
        return to_float(self.images[index])

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Images ``idx`` as float32 (B, C, S, S) in [-1, 1], converted only now to save memory."""
        return to_float(self.images[idx])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] to float32 [-1, 1], the range the model is trained on."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def memory_budget() -> int:
    """Bytes of decoded uint8 pixels worth keeping in RAM: a quarter of it, at most 4 GiB."""
    total = _physical_memory()
    return min(4 << 30, total // 4) if total else 2 << 30


def _physical_memory() -> int | None:
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().total)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None


def fits_in_memory(count: int, channels: int, size: int) -> bool:
    return count * channels * size * size <= memory_budget()


def check_cancel(should_cancel: ShouldCancel | None) -> None:
    if should_cancel is not None and should_cancel():
        raise ScanCancelled("Loading the dataset was cancelled.")


class ProgressTicker:
    """Reports ``done`` of ``total`` about a hundred times, so a 100k-file scan doesn't flood a GUI."""

    def __init__(self, callback: Progress | None, total: int):
        self._callback = callback
        self._total = total
        self._step = max(1, -(-total // PROGRESS_CALLS))  # ceil: at most PROGRESS_CALLS + 1 calls
        self._done = self._reported = 0
        if callback is not None:
            callback(0, total)

    def advance(self, n: int = 1) -> None:
        self._done += n
        due = self._done - self._reported >= self._step or self._done == self._total
        if self._callback is not None and due:
            self._reported = self._done
            self._callback(self._done, self._total)
