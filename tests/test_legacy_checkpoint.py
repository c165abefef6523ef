"""A run folder written by an earlier version of the engine (``tests/fixtures/legacy-run``: the
tiny model, 4 steps on random images) still samples as it did then and resumes.

``legacy-run-samples.safetensors`` holds what that version sampled from the checkpoint's EMA
weights (seed 3, two images per sampler and step count): the engine must reproduce it to fp32
rounding, but for the rows whose sampler changed on purpose (:data:`CHANGED`). Bit for bit holds only on the CPU kind that wrote it; another kind's kernels sum in
another order (measured: at most 1.2e-6 apart on an AVX2-only EPYC), which a changed sampler or
a checkpoint read differently would exceed by orders of magnitude.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core import trainer as tr
from core.checkpoint import read_training_state
from core.runs import RunDir
from core.sampling import SamplingModel
from tests.test_trainer import RandomImages

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY_RUN = FIXTURES / "legacy-run"
ROUNDING = 1e-5  # fp32 on images in [-1, 1], after up to 20 network calls
#: Rows whose sampler changed on purpose since the fixture was written, and the row they must
#: now match: DDPM on a grid shorter than the schedule (this run's has 20 steps) takes its mean
#: from the clamped x0 since 2026-12-03, which is DDIM's step at eta = 1.
CHANGED = {"ddpm-7-0.0": "ddim-7-1.0"}


@pytest.mark.slow
def test_legacy_run_samples_exactly_as_it_did():
    model = SamplingModel.load(LEGACY_RUN, device="cpu")
    recorded = load_file(FIXTURES / "legacy-run-samples.safetensors")
    assert model.schedule.num_timesteps == 20  # so ddpm-20 is the tutorial's full chain, unchanged
    for key in recorded:
        sampler, steps, eta = key.rsplit("-", 2)
        options = {"eta": float(eta)} if sampler == "ddim" else None
        got = model.images(num_images=2, sampler=sampler, steps=int(steps), options=options, seed=3)
        torch.testing.assert_close(got, recorded[CHANGED.get(key, key)], rtol=0, atol=ROUNDING, msg=key)


def test_legacy_weights_file_loads_for_sampling():
    model = SamplingModel.load(LEGACY_RUN / "ddpm_ckpt.safetensors", device="cpu")
    assert model.config.model_params.down_channels == [8, 16, 16]


@pytest.mark.slow
def test_legacy_run_resumes(tmp_path):
    run = tmp_path / "legacy-run"
    shutil.copytree(LEGACY_RUN, run)
    config = read_training_state(run / "checkpoints" / "step-000004.safetensors").config
    config = config.replace("train_params", max_steps=6)
    events = []
    trainer = tr.Trainer(config, run, dataset=RandomImages(n=16), resume=True, on_event=events.append)
    finished = trainer.run()
    assert isinstance(events[0], tr.Started) and events[0].start_step == 4
    assert finished.step == 6 and finished.reason == "completed"
    assert [r["step"] for r in RunDir(run).read_log()] == [1, 2, 3, 4, 5, 6]
