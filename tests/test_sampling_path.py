"""One sampling path: the window's sampling job and ``ddpm sample`` give the same images.

The run's config asks for bf16: the window once sampled without the config's precision, so its
images differed from the CLI's on bf16 hardware. The test checks that precision changes these
images at all (else it could not catch that), then that both front ends agree to the bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.config import dump_config
from core.exports import save_images
from core.sampling import SamplingModel

LEGACY_RUN = Path(__file__).parent / "fixtures" / "legacy-run"
CHECKPOINT = LEGACY_RUN / "checkpoints" / "step-000004.safetensors"


def _pixels(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
@pytest.mark.slow
def test_window_job_and_cli_give_bit_identical_images(qtbot, tmp_path, sampler, one_thread):
    """Both front ends sample tuned (core.autotune: the same remembered choice); at one thread,
    as the thread controller may pick another count under load, which changes rounding."""
    from ddpm_gui.engine import SampleRequest, run_sampling
    from ddpm_gui.workers import Worker

    bf16 = SamplingModel.load(CHECKPOINT, device="cpu").config.replace("train_params", precision="bf16")
    config_path = tmp_path / "bf16.yaml"
    config_path.write_text(dump_config(bf16), encoding="utf-8")
    fp32_images = SamplingModel.load(CHECKPOINT, device="cpu").images(num_images=4, sampler=sampler, steps=5, seed=3)
    bf16_images = SamplingModel.load(CHECKPOINT, bf16, device="cpu").tuned(4).images(
        num_images=4, sampler=sampler, steps=5, seed=3)
    assert not np.array_equal(fp32_images.numpy(), bf16_images.numpy())  # precision shows in these images

    assert main(["sample", str(CHECKPOINT), "--config", str(config_path), "--sampler", sampler, "--steps", "5",
                 "--num", "4", "--seed", "3", "--device", "cpu", "--images", str(tmp_path / "cli")]) == 0

    request = SampleRequest(source=CHECKPOINT, config=bf16, sampler=sampler, steps=5, num_images=4, seed=3,
                            use_ema=True, device="cpu")
    worker = Worker(lambda w: run_sampling(w, request))
    with qtbot.waitSignal(worker.returned, timeout=60_000) as returned:
        worker.start()
    worker.wait()
    window_images = returned.args[0].images
    assert np.array_equal(window_images.numpy(), bf16_images.numpy())
    save_images(window_images, tmp_path / "window")
    cli, window = _pixels(tmp_path / "cli"), _pixels(tmp_path / "window")
    assert len(cli) == len(window) == 4
    assert all(np.array_equal(a, b) for a, b in zip(cli, window))
