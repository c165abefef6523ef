"""Errors that a person can act on.

Everything a user can cause (a bad config, an unreadable folder, a checkpoint from another
model, a full disk) raises a subclass of :class:`UserError`. The edges of the program — the CLI,
the window — catch ``UserError`` and show its message verbatim, so each message names the file
or field and says what to do. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message is shown as it is."""


class ConfigError(UserError):
    """The config is invalid; ``problems`` lists one message per offending field."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))


class DatasetError(UserError):
    """The dataset cannot be used (missing folder, no usable image)."""


class CheckpointError(UserError):
    """A checkpoint is missing, damaged, unsafe or from another config."""


class DiskFullError(UserError):
    """A write failed for lack of space; the previous file is untouched."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""
