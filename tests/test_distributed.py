"""torchrun + DDP on CPU (gloo): two processes train one run; rank 0 writes; resume works."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from core.runs import RunDir

from .conftest import ROOT, tiny_config_dict


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "core.cli", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_cpu_processes_train_and_resume(tmp_path):
    # in parts of 2: DDP syncs the last part's backward only (no_sync before it)
    cfg = tiny_config_dict(batch_size=4, micro_batch_size=2, checkpoint_every_steps=3)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    first = _torchrun(str(tmp_path / "c.yaml"), "--run-dir", str(run), "--max-steps", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    rundir = RunDir(run)
    assert [s for s, _ in rundir.list_checkpoints()] == [3, 4]
    second = _torchrun(str(tmp_path / "c.yaml"), "--run-dir", str(run), "--max-steps", "7", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert [s for s, _ in rundir.list_checkpoints()] == [6, 7]
    # rank 0 alone logs: each step exactly once, across the resume
    assert [r["step"] for r in rundir.read_log()] == list(range(1, 8))
    assert rundir.weights_path().exists()
