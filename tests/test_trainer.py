"""The training loop: events, pause/resume/stop, exact resume, checkpoints on disk, divergence."""
from __future__ import annotations

import threading

import pytest
import torch

from core import trainer as tr
from core.config import Config
from core.checkpoint import IncompatibleCheckpoint
from core.errors import CheckpointError, TrainingDiverged, UserError
from core.runs import RunDir

from .conftest import tiny_config_dict


class RandomImages:
    """A few random uint8 images behind the dataset interface the trainer uses (len, batch)."""

    def __init__(self, n: int = 40, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx].float() / 127.5 - 1


def _config(**train) -> Config:
    return Config.from_dict(tiny_config_dict(**train))


def _train(cfg: Config, run_dir, *, resume: bool = False, events: list | None = None) -> tr.Trainer:
    trainer = tr.Trainer(cfg, run_dir, dataset=RandomImages(), resume=resume,
                         on_event=(events.append if events is not None else None))
    trainer.run()
    return trainer


@pytest.mark.slow
def test_events_and_run_folder(tmp_path):
    events: list = []
    _train(_config(max_steps=12), tmp_path / "run", events=events)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Started" and kinds[-1] == "Finished"
    steps = [e.step for e in events if isinstance(e, tr.StepDone)]
    assert steps == list(range(1, 13))
    assert events[-1] == tr.Finished(12, "completed")
    saved = [e.step for e in events if isinstance(e, tr.CheckpointSaved)]
    assert saved == [5, 10, 12]
    run = RunDir(tmp_path / "run")
    assert [s for s, _ in run.list_checkpoints()] == [10, 12]  # keep_checkpoints = 2
    assert run.config_path.exists() and run.weights_path(_config()).exists()
    assert [r["step"] for r in run.read_log()] == list(range(1, 13))
    done = [e for e in events if isinstance(e, tr.StepDone)][-1]
    assert done.images_per_s > 0 and done.eta_s == pytest.approx(0.0) and done.total_steps == 12


@pytest.mark.slow
def test_epochs_decide_length_without_max_steps(tmp_path):
    events: list = []
    _train(_config(num_epochs=2, checkpoint_every_steps=100), tmp_path / "run", events=events)
    assert events[-1].step == 2 * 5  # 40 images / batch 8 = 5 steps per epoch
    assert {e.epoch for e in events if isinstance(e, tr.StepDone)} == {0, 1}


@pytest.mark.slow
def test_resume_ends_with_same_weights_as_uninterrupted(tmp_path, one_thread):
    """CPU, same seed: noise and batch order are functions of (seed, step), so resume is exact.

    Bitwise equality is expected (same ops, same order, same thread count); the tolerance only
    absorbs a different BLAS blocking should the thread count differ between the two runs. At one
    thread, because the load-following controller (core.threads) changes the count, and rounding.
    """
    _train(_config(max_steps=7), tmp_path / "split")
    resumed = _train(_config(max_steps=13), tmp_path / "split", resume=True)
    straight = _train(_config(max_steps=13), tmp_path / "straight")
    for name in ("model", "ema_model"):
        a, b = getattr(resumed, name).state_dict(), getattr(straight, name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 13
    assert [r["step"] for r in RunDir(tmp_path / "split").read_log()] == list(range(1, 14))


@pytest.mark.slow
def test_pause_resume_stop_from_another_thread(tmp_path):
    events: list = []
    paused = threading.Event()
    trainer = tr.Trainer(_config(max_steps=1000), tmp_path / "run", dataset=RandomImages(),
                         on_event=events.append)

    def on_event(event):
        events.append(event)
        if isinstance(event, tr.StepDone) and event.step == 3:
            trainer.request_pause()
        if isinstance(event, tr.Paused):
            paused.set()
        if isinstance(event, tr.StepDone) and event.step == 6:
            trainer.request_stop()

    trainer.on_event = on_event
    result: list = []
    thread = threading.Thread(target=lambda: result.append(trainer.run()))
    thread.start()
    assert paused.wait(60)
    assert thread.is_alive()
    trainer.request_resume()
    thread.join(60)
    assert not thread.is_alive()
    kinds = [type(e).__name__ for e in events]
    p, r = kinds.index("Paused"), kinds.index("Resumed")
    assert "StepDone" not in kinds[p:r]
    assert events[p].step == 3 and events[r].step == 3
    assert result == [tr.Finished(6, "stopped")]
    assert RunDir(tmp_path / "run").latest_checkpoint().name == "step-000006.safetensors"


def test_stop_while_paused_finishes(tmp_path):
    trainer = tr.Trainer(_config(max_steps=1000), tmp_path / "run", dataset=RandomImages())
    paused = threading.Event()

    def on_event(event):
        if isinstance(event, tr.StepDone) and event.step == 2:
            trainer.request_pause()
        if isinstance(event, tr.Paused):
            paused.set()

    trainer.on_event = on_event
    result: list = []
    thread = threading.Thread(target=lambda: result.append(trainer.run()))
    thread.start()
    assert paused.wait(60)
    trainer.request_stop()
    thread.join(60)
    assert result == [tr.Finished(2, "stopped")]


def test_nan_loss_stops_with_step_and_lr_and_keeps_checkpoint(tmp_path):
    events: list = []
    cfg = _config(max_steps=30, lr=1e4)
    trainer = tr.Trainer(cfg, tmp_path / "run", dataset=RandomImages(), on_event=events.append)
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*train_params.lr = 10000"):
        trainer.run()
    failed = events[-1]
    assert isinstance(failed, tr.Failed) and "learning rate" in failed.message
    for _, path in RunDir(tmp_path / "run").list_checkpoints():
        state = tr.read_training_state(path)
        assert state.step < failed.step


def test_refuses_to_overwrite_existing_run(tmp_path):
    _train(_config(max_steps=5), tmp_path / "run")
    with pytest.raises(UserError, match="already holds a training run"):
        _train(_config(max_steps=5), tmp_path / "run")


def test_resume_with_other_model_config_says_what_differs(tmp_path):
    _train(_config(max_steps=5), tmp_path / "run")
    other = tiny_config_dict(max_steps=10)
    other["model_params"]["time_emb_dim"] = 64
    with pytest.raises(IncompatibleCheckpoint, match=r"different model config .*t_proj.0.weight"):
        _train(Config.from_dict(other), tmp_path / "run", resume=True)


@pytest.mark.slow
def test_resume_with_another_schedule_stops_at_the_newest_checkpoint(tmp_path):
    """Older checkpoints of the run have the same schedule: trying them would only hide the cause."""
    _train(_config(max_steps=10), tmp_path / "run")
    other = tiny_config_dict(max_steps=12)
    other["diffusion_params"]["schedule"] = "cosine"
    with pytest.raises(IncompatibleCheckpoint, match=r"step-000010.safetensors was trained with different diffusion_params"):
        _train(Config.from_dict(other), tmp_path / "run", resume=True)


@pytest.mark.slow
def test_resume_skips_a_damaged_newest_checkpoint(tmp_path):
    _train(_config(max_steps=10), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    newest = run.latest_checkpoint()
    newest.write_bytes(newest.read_bytes()[:1000])  # torn write
    events: list = []
    _train(_config(max_steps=12), tmp_path / "run", resume=True, events=events)
    assert events[0].start_step == 5


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        _train(_config(max_steps=5), tmp_path / "empty", resume=True)


@pytest.mark.slow
def test_tiny_model_overfits_a_handful_of_real_digits(tmp_path):
    """Four MNIST digits, 400 steps: the loss falls several-fold and samples move towards them."""
    from core.data import load_dataset
    from core.sampling import SamplingModel

    digits = RandomImages(n=4)
    digits.images = load_dataset("builtin:mnist", 1, 16).images[:4]
    losses: list[float] = []
    cfg = _config(max_steps=400, lr=2e-3, batch_size=16, checkpoint_every_steps=1000, ema_decay=0.95)
    trainer = tr.Trainer(cfg, tmp_path / "run", dataset=digits,
                         on_event=lambda e: losses.append(e.loss) if isinstance(e, tr.StepDone) else None)
    trainer.run()
    assert sum(losses[-20:]) < 0.25 * sum(losses[:20])
    train = digits.batch(torch.arange(4))
    model = SamplingModel(trainer.ema_model.eval(), cfg, trainer.device, trainer.precision)
    samples = model.images(num_images=8, sampler="ddim", steps=50, seed=1)
    noise = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def nearest(x: torch.Tensor) -> float:
        return ((x[:, None] - train[None]) ** 2).mean(dim=(2, 3, 4)).min(dim=1).values.mean().item()

    assert nearest(samples) < 0.8 * nearest(noise)


@pytest.mark.slow
def test_previews_are_emitted_and_saved(tmp_path):
    events: list = []
    _train(_config(max_steps=6, sample_every_steps=3), tmp_path / "run", events=events)
    previews = [e for e in events if isinstance(e, tr.PreviewReady)]
    assert [p.step for p in previews] == [3, 6]
    assert previews[0].images.shape == (tr.PREVIEW_IMAGES, 1, 16, 16)
    assert sorted(p.name for p in RunDir(tmp_path / "run").samples.iterdir()) == ["step-000003.png", "step-000006.png"]


def test_out_of_memory_says_what_to_change(tmp_path, monkeypatch):
    events: list = []
    trainer = tr.Trainer(_config(max_steps=5), tmp_path / "run", dataset=RandomImages(), on_event=events.append)

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.model, "forward", exhausted)
    with pytest.raises(UserError, match=r"Out of memory .* Lower train_params.batch_size \(e.g. to 4\)"
                       r".* set train_params.micro_batch_size to 4 "):
        trainer.run()
    assert isinstance(events[-1], tr.Failed) and "preset" in events[-1].message


@pytest.mark.parametrize("batch, size", [(8, 3), (8, 8), (5, 16), (64, 32), (100, None)])
def test_micro_batches_cover_the_batch_in_near_equal_parts(batch, size):
    parts = tr.micro_batches(batch, size, torch.device("cpu"))
    assert parts[0].start == 0 and parts[-1].stop == batch
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    lengths = [p.stop - p.start for p in parts]
    limit = size or tr.CPU_MICRO_BATCH
    assert max(lengths) <= limit and max(lengths) - min(lengths) <= 1
    assert len(parts) == -(-batch // limit)
    assert len(tr.micro_batches(batch, None, torch.device("cuda"))) == 1  # GPUs: whole by default


def test_micro_batches_give_the_whole_batch_step(tmp_path):
    """The same step, split in parts of 3 or run whole: same loss, same gradients (compared
    rather than the updated weights: Adam's first step is lr * sign(g) where |g| is tiny, which
    any rounding flips)."""
    x0 = RandomImages(n=8).batch(torch.arange(8))
    grads, losses = [], []
    for size in (3, 8):
        cfg = _config(batch_size=8, micro_batch_size=size, precision="fp32")
        trainer = tr.Trainer(cfg, tmp_path / str(size), dataset=RandomImages())
        losses.append(trainer._train_step(trainer.model, x0))
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_ema_warm_up_follows_the_weights_early_and_keeps_its_decay_later():
    assert tr.ema_decay_at(0.995, 0) == pytest.approx(0.1)  # the first update mostly copies
    assert tr.ema_decay_at(0.995, 100) == pytest.approx(101 / 110)
    assert tr.ema_decay_at(0.995, 100_000) == 0.995  # a long run averages as ema_decay says
    assert tr.ema_decay_at(0.0, 5) == 0.0


@pytest.mark.slow
def test_short_run_ema_is_near_the_trained_weights_not_the_initial_ones(tmp_path):
    """200 steps at decay 0.995 left the EMA 37 % initial weights: previews and samples were noise."""
    cfg = _config(max_steps=30, ema_decay=0.995, lr=1e-2)
    torch.manual_seed(cfg.train_params.seed)
    initial = [p.detach().clone() for p in tr.UNet(cfg.model_params).parameters()]
    trainer = _train(cfg, tmp_path / "run")
    raw, ema = list(trainer.model.parameters()), list(trainer.ema_model.parameters())
    moved = sum(((r - i) ** 2).sum() for r, i in zip(raw, initial, strict=True)).sqrt()
    lag = sum(((r - e) ** 2).sum() for r, e in zip(raw, ema, strict=True)).sqrt()
    assert lag < 0.5 * moved, (float(lag), float(moved))


@pytest.mark.slow
def test_intervals_longer_than_the_run_are_scaled_to_it(tmp_path):
    """A 12-step run with 500-step intervals still gets previews and a periodic checkpoint."""
    events: list = []
    _train(_config(max_steps=12, checkpoint_every_steps=500, sample_every_steps=1000), tmp_path / "run",
           events=events)
    started = events[0]
    assert started.preview_every == 3 and started.checkpoint_every == 3
    assert [e.step for e in events if isinstance(e, tr.PreviewReady)] == [3, 6, 9, 12]
    assert [e.step for e in events if isinstance(e, tr.CheckpointSaved)] == [3, 6, 9, 12]


def test_intervals_within_the_run_are_kept():
    assert tr.run_interval(500, 3000) == 500
    assert tr.run_interval(500, 500) == 125
    assert tr.run_interval(1000, 700) == 175
    assert tr.run_interval(1000, 3) == 1
    assert tr.run_interval(None, 700) is None
