"""Errors that a person can act on.

Everything a user can cause (a bad config, an unreadable folder, a checkpoint from another
model, a full disk) raises a subclass of :class:`UserError`. The edges of the program — the CLI,
the window — catch ``UserError`` and show its message verbatim, so each message names the file
or field and says what to do. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class UserError(Exception):
    """A problem the user can fix; the message is shown as it is."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config: the field it is about and what to do, kept apart so the
    window can mark the field and show the message beside it.

    ``field`` is a dotted path, ``section.key`` or ``section.key[i]`` for a list entry, or ""
    when the problem is with the config as a whole (an unreadable file, not a mapping).
    ``message`` reads after the field name: "must be at least 1, got 0".
    """

    field: str
    message: str

    @property
    def key(self) -> str:
        """``section.key`` without a list index: the form's field."""
        return self.field.split("[", 1)[0]

    def __str__(self) -> str:
        return f"{self.field} {self.message}" if self.field else self.message


class ConfigError(UserError):
    """The config is invalid; ``problems`` lists every :class:`ConfigProblem` found."""

    def __init__(self, problems: Iterable[ConfigProblem | str], source: str | None = None) -> None:
        self.problems = [p if isinstance(p, ConfigProblem) else ConfigProblem("", p) for p in problems]
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(map(str, self.problems)))


class DatasetError(UserError):
    """The dataset cannot be used (missing folder, no usable image)."""


class CheckpointError(UserError):
    """A checkpoint is missing, damaged, unsafe or from another config."""


class DiskFullError(UserError):
    """A write failed for lack of space; the previous file is untouched."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""
