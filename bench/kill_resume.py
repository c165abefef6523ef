"""Kill training at random moments (SIGKILL, also mid-checkpoint), resume, and check nothing is lost.

Each trial starts `ddpm train` on a tiny config that checkpoints every step, kills it after a
random delay, checks that every checkpoint on disk loads, then resumes and checks that the run
continues from the newest checkpoint (never behind it) and makes progress. Prints JSON.

    python bench/kill_resume.py --trials 20 [--seed 0] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.checkpoint import load_checkpoint  # noqa: E402
from core.errors import CheckpointError  # noqa: E402
from core.runs import RunDir  # noqa: E402
from core.trainer import Trainer  # noqa: E402

# A wide time embedding makes each checkpoint ~40 MB while a step stays cheap, so a good share
# of random kills lands while a checkpoint is being written.
TINY = {
    "dataset_params": {"im_path": "builtin:mnist"},
    "diffusion_params": {"num_timesteps": 100},
    "model_params": {"im_channels": 1, "im_size": 16, "down_channels": [16, 32, 32], "mid_channels": [32, 32],
                     "down_sample": [True, False], "time_emb_dim": 1024, "num_down_layers": 1,
                     "num_mid_layers": 1, "num_up_layers": 1, "num_heads": 2, "down_attention": [False, True]},
    "train_params": {"batch_size": 8, "lr": 1e-3, "device": "cpu", "precision": "fp32",
                     "checkpoint_every_steps": 1, "keep_checkpoints": 3, "max_steps": 100000},
}


def _train_cmd(config: Path, run: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "core.cli", "train", str(config), "--run-dir", str(run)]
    return cmd + (["--resume"] if resume else [])


def _checkpoints_load(run: RunDir, config) -> tuple[int, int, int]:
    """(number of checkpoints, number that fail to load, newest step)."""
    trainer = Trainer(config, run.path)
    found = run.list_checkpoints()
    corrupt = 0
    for _, path in found:
        try:
            load_checkpoint(path, model=trainer.model, ema=trainer.ema_model, optimizer=trainer.optimizer)
        except CheckpointError:
            corrupt += 1
    return len(found), corrupt, (found[-1][0] if found else 0)


def _kill_after_progress(cmd: list[str], run: RunDir, past_step: int, delay: float, limit: float = 240) -> None:
    """Start ``cmd``; once it has checkpointed beyond ``past_step``, SIGKILL it ``delay`` s later.

    Waiting for real progress (rather than a fixed time) keeps trials meaningful on a slow or
    loaded machine; the random delay lands kills anywhere, mid-checkpoint included.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + limit
    while proc.poll() is None and time.monotonic() < deadline:
        found = run.list_checkpoints()
        if found and found[-1][0] > past_step:
            break
        time.sleep(0.05)  # polling another process's files: there is nothing to wait on
    if proc.poll() is not None:
        raise RuntimeError(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def trial(work: Path, rng: random.Random) -> dict:
    from core.config import Config

    config_path = work / "c.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    config = Config.from_dict(TINY)
    run = RunDir(work / "run")
    _kill_after_progress(_train_cmd(config_path, run.path, resume=False), run, 0, rng.uniform(0.0, 1.5))
    mid_write = len(list(run.checkpoints.glob(".*.tmp")))  # a temp file left: killed while writing
    count, corrupt, newest = _checkpoints_load(run, config)
    resumed_from = None
    progressed = False
    if count:
        _kill_after_progress(_train_cmd(config_path, run.path, resume=True), run, newest, rng.uniform(0.0, 1.5))
        mid_write += len(list(run.checkpoints.glob(".*.tmp")))
        log = run.read_log()
        steps = [r["step"] for r in log]
        resumed_from = newest
        after_count, after_corrupt, after_newest = _checkpoints_load(run, config)
        corrupt += after_corrupt
        progressed = after_newest > newest and steps == list(range(1, len(steps) + 1))
    return {"checkpoints": count, "killed_mid_write": mid_write, "corrupt": corrupt, "newest_step_before_resume": newest,
            "resumed_from": resumed_from, "progressed_after_resume": progressed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = []
    start = time.time()
    for _ in range(args.trials):
        with tempfile.TemporaryDirectory() as work:
            results.append(trial(Path(work), rng))
    print(json.dumps({
        "trials": len(results),
        "corrupt_checkpoints": sum(r["corrupt"] for r in results),
        "trials_without_checkpoint": sum(r["checkpoints"] == 0 for r in results),
        "kills_mid_checkpoint_write": sum(r["killed_mid_write"] for r in results),
        "resumed_and_progressed": sum(r["progressed_after_resume"] for r in results),
        "seconds": round(time.time() - start, 1),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
