"""The run folder: where one training run keeps its config, checkpoints, samples and log.

    <run>/config.yaml                 the config it ran with
    <run>/checkpoints/step-000500.safetensors   resumable, the last K kept
    <run>/samples/step-000500.png     preview grids
    <run>/log.jsonl                   one JSON object per step (machine-readable)
    <run>/<ckpt_name stem>.safetensors  EMA weights for sampling, tutorial key names
"""
from __future__ import annotations

import errno
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .config import Config
from .errors import DiskFullError

_CKPT = re.compile(r"^step-(\d+)\.safetensors$")


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    def weights_path(self, config: Config | None = None) -> Path:
        stem = Path(config.train_params.ckpt_name).stem if config else None
        if stem:
            return self.path / f"{stem}.safetensors"
        found = sorted(p for p in self.path.glob("*.safetensors"))
        return found[0] if found else self.path / "ddpm_ckpt.safetensors"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}.safetensors"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint file, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := _CKPT.match(p.name))]
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        found = self.list_checkpoints()
        return found[-1][1] if found else None

    def prune_checkpoints(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints (and stray temp files of killed writes)."""
        for _, path in self.list_checkpoints()[:-keep]:
            path.unlink(missing_ok=True)
        for tmp in self.checkpoints.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def start_log(self) -> None:
        """An empty ``log.jsonl`` for a new run."""
        atomic_write_text(self.log_path, "")

    def append_log(self, row: dict[str, Any]) -> None:
        """One JSON line, appended: what a step reported, so an opened run shows where it stood.

        Appending (not the atomic rewrite) keeps a step's cost flat in the log's length; a crash
        can tear only the last line, which :meth:`read_log` skips.
        """
        try:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"No space left on the disk while writing {self.log_path}. Free some space, "
                    "then resume: the last checkpoint is intact."
                ) from e
            raise

    def read_log(self) -> list[dict[str, Any]]:
        """Logged steps, skipping a torn last line from a crash."""
        if not self.log_path.exists():
            return []
        rows = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_log(self, last_step: int) -> None:
        """Drop log rows after ``last_step`` so a resumed run does not log steps twice."""
        rows = [r for r in self.read_log() if r.get("step", 0) <= last_step]
        atomic_write_text(self.log_path, "".join(json.dumps(r) + "\n" for r in rows))