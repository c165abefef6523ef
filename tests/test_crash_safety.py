"""Nothing lost: SIGKILL at random moments, a full disk during a checkpoint or an export."""
from __future__ import annotations

import errno
import os
import random
import sys

import pytest
import torch

from core import trainer as tr
from core.config import Config
from core.checkpoint import read_training_state
from core.errors import DiskFullError
from core.runs import RunDir

from .conftest import ROOT, tiny_config_dict
from .test_trainer import RandomImages

sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_then_resume_loses_nothing(tmp_path):
    import kill_resume

    rng = random.Random(1)
    for i in range(2):
        work = tmp_path / str(i)
        work.mkdir()
        result = kill_resume.trial(work, rng)
        assert result["checkpoints"] > 0, result
        assert result["corrupt"] == 0, result
        assert result["progressed_after_resume"], result


def _fail_writes_after(monkeypatch, n_ok: int):
    """Make os.fsync raise ENOSPC after ``n_ok`` successful calls: a disk that fills up."""
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.slow
def test_full_disk_during_checkpoint_keeps_previous_and_says_so(tmp_path, monkeypatch):
    cfg = Config.from_dict(tiny_config_dict(max_steps=20, checkpoint_every_steps=5))
    events: list = []
    trainer = tr.Trainer(cfg, tmp_path / "run", dataset=RandomImages(), on_event=events.append)
    real_save = tr.save_checkpoint

    def save_then_fill(path, **kw):
        real_save(path, **kw)
        if kw["step"] == 5:
            _fail_writes_after(monkeypatch, 0)

    monkeypatch.setattr(tr, "save_checkpoint", save_then_fill)
    with pytest.raises(DiskFullError, match="No space left"):
        trainer.run()
    monkeypatch.undo()
    failed = events[-1]
    assert isinstance(failed, tr.Failed) and "Free some space" in failed.message
    run = RunDir(tmp_path / "run")
    assert [s for s, _ in run.list_checkpoints()] == [5]
    assert read_training_state(run.latest_checkpoint()).step == 5
    assert not list(run.checkpoints.glob(".*.tmp"))  # no half-written leftovers


def test_full_disk_during_export_keeps_existing_file(tmp_path, monkeypatch):
    from core.exports import save_grid

    out = tmp_path / "grid.png"
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    save_grid(images, out, nrow=2)
    before = out.read_bytes()
    _fail_writes_after(monkeypatch, 0)
    with pytest.raises(DiskFullError, match="grid.png"):
        save_grid(-images, out, nrow=2)
    monkeypatch.undo()
    assert out.read_bytes() == before


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from core.atomic import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
