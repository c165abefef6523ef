"""Where training images come from: a folder of files, an IDX file, or a built-in demo.

:func:`load_dataset` is the one entry point; ``core.folders`` and ``core.idx`` read the two
formats and ``core.dataset`` holds what they return (an :class:`ImageDataset` with its
:class:`DatasetReport`).
"""
from __future__ import annotations

import os
from pathlib import Path

from .choices import BUILTIN_DATASETS, BUILTIN_PREFIX
from .dataset import (
    DatasetReport, ImageDataset, Progress, ScanCancelled, ShouldCancel, SkippedFile, dataset_advice, fit_description,
    stored_channels,
)
from .errors import DatasetError
from .folders import load_folder
from .idx import idx_images_file, load_idx
from .resources import resources_dir

__all__ = ["DatasetReport", "ImageDataset", "ScanCancelled", "SkippedFile", "builtin_path", "dataset_advice",
           "fit_description", "load_dataset", "resolve_im_path", "stored_channels"]


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
    idx_file = idx_images_file(path)
    if idx_file is not None:
        return load_idx(idx_file, channels, size, progress, should_cancel)
    if not path.is_dir():
        raise DatasetError(
            f"{path} is a single file, not a dataset: pick the folder that holds your images, "
            "or an MNIST-format *-images-idx3-ubyte[.gz] file."
        )
    return load_folder(path, channels, size, progress, should_cancel)
