"""The classes of a class-conditional run: which a dataset offers, and which a request means.

The order of the names is the order of the model's class embedding rows, so it is fixed when
training starts (the dataset's order: sorted folder names, or IDX label values) and kept with
the run (``classes.json``) and in every checkpoint.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .errors import DatasetError, UserError

ALL_CLASSES = "all"  # asks for one row per class


def conditioning_classes(dataset: Any) -> list[str]:
    """The dataset's class names, checked to be usable for conditional training.

    Images without a class (loose in the chosen folder, or an IDX file without its labels file)
    cannot teach a class, and one class leaves nothing to choose: both are refused with the fix.
    """
    names = list(getattr(dataset, "class_names", None) or [""])
    report = getattr(dataset, "report", None)
    where = getattr(report, "source", None) or "the dataset"
    off = "or turn off model_params.class_conditional"
    if names == [""]:
        raise DatasetError(
            f"{where} has no classes, and conditional training needs them: sort the images into "
            f"one subfolder per class (e.g. cats/, dogs/), give an IDX file its labels file, {off}."
        )
    if "" in names:
        loose = int((dataset.labels == names.index("")).sum())
        raise DatasetError(
            f"{loose:,} images lie directly in {where}, outside any class subfolder, and conditional "
            f"training needs a class for every image: move them into a class's subfolder, {off}."
        )
    if len(names) < 2:
        raise DatasetError(
            f"{where} has one class ('{names[0]}'); conditional training needs at least two to "
            f"choose between: add a subfolder per class, {off}."
        )
    return names


def class_indices(requested: Sequence[str], class_names: Sequence[str]) -> list[int]:
    """Embedding rows for class names as a user types them; ``all`` means every class in order.

    Raises :class:`UserError` for a model without classes, and for an unknown name, listing the
    valid ones.
    """
    if not class_names:
        raise UserError(
            "this model was trained without classes (model_params.class_conditional was off), so "
            "it cannot be asked for one; sample without a class."
        )
    rows: list[int] = []
    for name in requested:
        if name == ALL_CLASSES:
            rows.extend(range(len(class_names)))
        elif name in class_names:
            rows.append(list(class_names).index(name))
        else:
            raise UserError(
                f"unknown class '{name}'; this model's classes are: {', '.join(class_names)} "
                f"(or '{ALL_CLASSES}' for one row per class)."
            )
    return rows


def class_rows(rows: Sequence[int], num_images: int) -> tuple[torch.Tensor, int]:
    """Labels for a grid with one row per requested class, and the row length.

    ``num_images`` is shared evenly among the classes, rounded up so that every row is full. A
    single class fills a square-ish grid instead of one long row.
    """
    per_class = max(1, -(-num_images // len(rows)))
    nrow = per_class if len(rows) > 1 else max(1, round(math.sqrt(per_class)))
    return torch.tensor(rows, dtype=torch.long).repeat_interleave(per_class), nrow
