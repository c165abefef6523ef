"""Training images from a user's folder, an MNIST-format IDX file or a built-in demo.

Every image is decoded once, converted to the model's channels, resized so its shorter side is
``size``, centre-cropped square and kept as uint8 — a quarter of float32's memory — and becomes
float in [-1, 1] only when a batch is taken. A file that cannot be used (not an image, truncated,
absurdly large, unreadable) is skipped and listed with a reason in the report: one bad file among
thousands never stops a run. A dataset too big for the memory budget is decoded per batch instead.

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
import gzip
import operator
import os
import re
import struct
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from .choices import BUILTIN_DATASETS, BUILTIN_PREFIX
from .errors import DatasetError, UserError
from .resources import resources_dir

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Larger images are skipped before decoding: 8192x8192 RGBA already needs 256 MiB. It sits below
# PIL's own decompression-bomb warning (89 Mpx); PIL refuses anything over 179 Mpx at open.
MAX_PIXELS = 8192 * 8192
# One filter for both resize paths (PIL per file, torchvision per IDX batch); both antialias.
PIL_RESAMPLE = Image.Resampling.BICUBIC
BACKGROUND = (255, 255, 255)  # what transparent pixels become
_IDX_IMAGES = re.compile(r"(.+)([-.])images([-.])idx3([-.])ubyte(\.gz)?", re.IGNORECASE)
_IDX_CHUNK = 4096  # IDX images resized per torchvision call: bounds the float temporaries
_PROGRESS_CALLS = 100  # about this many progress calls per load, however many files

Progress = Callable[[int, int], None]
ShouldCancel = Callable[[], bool]
T = TypeVar("T")
R = TypeVar("R")


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

    def summary(self) -> str:
        """One line for the CLI, e.g. "5,000 images, 28x28 L, 10 classes, 0 skipped"."""
        size = _dominant(self.sizes, "sizes", lambda wh: f"{wh[0]}x{wh[1]}")
        mode = _dominant(self.modes, "modes", str)
        mixed = len(self.sizes) > 1 or len(self.modes) > 1
        parts = [_plural(self.num_images, "image"), f"{size}, {mode}" if mixed else f"{size} {mode}"]
        named = [c for c in self.classes if c]
        parts.append(_plural(len(named), "class", "classes") if named else "no classes")
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
            f"{_plural(sum(small.values()), 'image')} smaller than {size} px on the shorter side (the "
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


def _plural(n: int, word: str, words: str | None = None) -> str:
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


# ---------------------------------------------------------------------------------------------
# Where the data is


def builtin_path(name: str) -> Path:
    """The folder of a demo dataset shipped in ``resources/datasets``."""
    key = name.strip().lower()
    if key not in BUILTIN_DATASETS:
        choices = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
        raise DatasetError(f"Unknown built-in dataset '{name}'. Choose one of: {choices}.")
    return resources_dir() / "datasets" / key


def resolve_im_path(im_path: str | os.PathLike, base: Path | None = None) -> Path:
    """``im_path`` as a path: ``builtin:NAME`` to its folder, ``~`` expanded, relative to ``base``.

    Without ``base`` a relative path stays relative to the working folder, as in the tutorial.
    """
    text = os.fspath(im_path).strip()
    if not text:
        raise DatasetError("No dataset chosen: set im_path to a folder of images or builtin:mnist.")
    if text.lower().startswith(BUILTIN_PREFIX):
        return builtin_path(text[len(BUILTIN_PREFIX):])
    path = Path(text).expanduser()
    return Path(base) / path if base is not None and not path.is_absolute() else path


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


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    im_path: str | os.PathLike,
    channels: int,
    size: int,
    *,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> ImageDataset:
    """Load a folder, an IDX images file (or a folder holding one) or ``builtin:NAME``.

    ``progress(done, total)`` and ``should_cancel()`` are called from the calling thread, about a
    hundred times per load; cancelling raises :class:`ScanCancelled`. Raises
    :class:`DatasetError` when there is nothing usable, naming the path and the fix.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    path = resolve_im_path(im_path)
    if not os.path.exists(path):
        raise DatasetError(
            f"Dataset not found: {path}. Set im_path to a folder of images, an MNIST-format "
            "*-images-idx3-ubyte[.gz] file, or builtin:mnist."
        )
    idx_file = _idx_images_file(path)
    if idx_file is not None:
        return _load_idx(idx_file, channels, size, progress, should_cancel)
    if not path.is_dir():
        raise DatasetError(
            f"{path} is a single file, not a dataset: pick the folder that holds your images, "
            "or an MNIST-format *-images-idx3-ubyte[.gz] file."
        )
    return _load_folder(path, channels, size, progress, should_cancel)


def _fits_in_memory(count: int, channels: int, size: int) -> bool:
    return count * channels * size * size <= memory_budget()


def _check_cancel(should_cancel: ShouldCancel | None) -> None:
    if should_cancel is not None and should_cancel():
        raise ScanCancelled("Loading the dataset was cancelled.")


class _Progress:
    """Reports ``done`` of ``total`` about a hundred times, so a 100k-file scan doesn't flood a GUI."""

    def __init__(self, callback: Progress | None, total: int):
        self._callback = callback
        self._total = total
        self._step = max(1, -(-total // _PROGRESS_CALLS))  # ceil: at most _PROGRESS_CALLS + 1 calls
        self._done = self._reported = 0
        if callback is not None:
            callback(0, total)

    def advance(self, n: int = 1) -> None:
        self._done += n
        due = self._done - self._reported >= self._step or self._done == self._total
        if self._callback is not None and due:
            self._reported = self._done
            self._callback(self._done, self._total)


# ---------------------------------------------------------------------------------------------
# Folders of image files


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
        _check_cancel(should_cancel)
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


def _load_folder(
    root: Path, channels: int, size: int, progress: Progress | None, should_cancel: ShouldCancel | None
) -> ImageDataset:
    files, skipped = list_images(root, should_cancel)
    in_memory = _fits_in_memory(len(files), channels, size)
    pixels = torch.empty((len(files), channels, size, size), dtype=torch.uint8) if in_memory else None
    kept: list[tuple[str, str]] = []
    sizes: Counter = Counter()
    modes: Counter = Counter()
    ticker = _Progress(progress, len(files))
    decode = functools.partial(_try_decode, channels=channels, size=size)
    with contextlib.closing(_ordered_map(decode, [p for p, _ in files], _decode_workers())) as results:
        for (path, label), result in zip(files, results):
            _check_cancel(should_cancel)
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
        text += f" {_plural(len(skipped), 'file')} skipped, e.g. {first.path}: {first.reason}."
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


class _Unusable(Exception):
    """A file that cannot be used; the message is the reason shown to people."""


def _try_decode(path: str, channels: int, size: int) -> _Decoded | SkippedFile:
    try:
        return _decode_file(path, channels, size)
    except _Unusable as e:
        return SkippedFile(path, str(e))


def _decode_again(paths: tuple[str, ...], channels: int, size: int, i: int) -> torch.Tensor:
    """Image ``i`` of a lazy dataset; it decoded at load time, so a failure now is a changed file."""
    try:
        return torch.from_numpy(_decode_file(paths[i], channels, size).pixels)
    except _Unusable as e:
        raise DatasetError(
            f"{paths[i]} can no longer be used ({e}); it changed after the dataset was loaded. "
            "Load the dataset again."
        ) from None


def _decode_file(path: str, channels: int, size: int) -> _Decoded:
    """One image file as (C, S, S) uint8; raises :class:`_Unusable` with a reason for people."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise _Unusable("empty file")
            with Image.open(f) as im:
                return _decode_image(im, channels, size)
    except PermissionError:
        raise _Unusable("permission denied") from None
    except FileNotFoundError:
        raise _Unusable("file disappeared while loading") from None
    except UnidentifiedImageError:
        raise _Unusable("not an image") from None
    except Image.DecompressionBombError as e:
        raise _Unusable(_too_large_reason(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        raise _Unusable(_damaged_reason(e)) from None


def _decode_image(im: Image.Image, channels: int, size: int) -> _Decoded:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise _Unusable(f"too large: {width}x{height} pixels (the limit is {MAX_PIXELS / 1e6:.0f} megapixels)")
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


# ---------------------------------------------------------------------------------------------
# MNIST-format IDX files


def _idx_images_file(path: Path) -> Path | None:
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
    """An IDX file of unsigned bytes (gzipped or not) as an array; raises :class:`_Unusable`."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except PermissionError:
        raise _Unusable("permission denied") from None
    except (OSError, EOFError, zlib.error) as e:
        raise _Unusable(f"damaged ({e}); download it again") from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:3] != b"\0\0\x08" or data[3] != ndim:
        raise _Unusable(f"not an MNIST-format IDX file of {ndim}-D unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(shape)):
        raise _Unusable(f"truncated or damaged: its header promises {'x'.join(map(str, shape))} values; download it again")
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
    except _Unusable as e:
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


def _load_idx(
    path: Path, channels: int, size: int, progress: Progress | None, should_cancel: ShouldCancel | None
) -> ImageDataset:
    try:
        raw = torch.from_numpy(_read_idx(path, ndim=3)).unsqueeze(1)  # (N, 1, H, W)
    except _Unusable as e:
        raise DatasetError(f"Cannot use {path}: {e}.") from None
    count, _, height, width = raw.shape
    if count == 0:
        raise DatasetError(f"{path} holds no images; pick another dataset.")
    labels, class_names, skipped = _idx_labels(path, count)
    in_memory = _fits_in_memory(count, channels, size)
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
    ticker = _Progress(progress, len(raw))
    for start in range(0, len(raw), _IDX_CHUNK):
        _check_cancel(should_cancel)
        chunk = raw[start : start + _IDX_CHUNK]
        out[start : start + len(chunk)] = _fit_tensor(chunk, channels, size)
        ticker.advance(len(chunk))
    return out
