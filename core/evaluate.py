"""How good is a model: FID and KID of its samples against its training images, with a yardstick.

Every score comes with the same metric for real images against real images at the same N
(two disjoint random subsets of the data), because FID at small N is biased upward and a bare
number means little: a model is as good as the data's own spread when its FID nears the
reference. The real images' features are computed once per dataset content and N, and cached
in the user cache folder.

Results of a run are appended to ``<run>/eval.jsonl``, one JSON object a line, so an opened
run shows its history; training with ``train_params.eval_every_steps`` adds its quality curve
(KID at :data:`CURVE_N`) to the same file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import inception, metrics
from .atomic import append_line, atomic_writer
from .choices import DEFAULT_SAMPLER, app_steps
from .device import Precision
from .errors import UserError

if TYPE_CHECKING:
    from .sampling import SamplingModel

CURVE_N = 200  # images per point of the training quality curve: KID is unbiased, so small N is honest
SAMPLE_BATCH = 100  # images sampled at once: bounds the attention maps' memory at 28 px
EVAL_LOG = "eval.jsonl"

#: progress(stage, done, total); stages are "real images", "sampling", "features"
Progress = Callable[[str, int, int], None]
ShouldCancel = Callable[[], bool]


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: the scores, the real-vs-real reference at the same N, and how it was made."""

    fid: float
    kid_mean: float
    kid_std: float
    n: int
    reference_fid: float | None
    reference_kid_mean: float | None
    sampler: str | None
    steps: int | None
    seconds: float
    reference_n: int | None = None
    sample_seconds: float | None = None
    step: int | None = None  # the training step of the weights, when known
    kind: str = "evaluate"  # or "training" for the points of the quality curve
    time: float = field(default_factory=time.time)

    JSON_KEYS = ("fid", "kid_mean", "kid_std", "n", "reference_fid", "reference_kid_mean", "sampler", "steps", "seconds")

    def summary(self) -> dict[str, Any]:
        """The JSON object ``ddpm eval --json`` prints: exactly :attr:`JSON_KEYS`."""
        return {k: getattr(self, k) for k in self.JSON_KEYS}

    def record(self) -> dict[str, Any]:
        """Everything, for ``eval.jsonl``."""
        return asdict(self)

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> EvalResult:
        known = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        return cls(**known)


@dataclass(frozen=True)
class RealFeatures:
    """Features of two disjoint random subsets of the real images: one scores, one is the yardstick."""

    scored: np.ndarray
    held_out: np.ndarray

    def reference(self) -> tuple[float | None, float | None, int | None]:
        """(FID, KID mean, N) of the held-out subset against the scored one, at equal N."""
        m = min(len(self.scored), len(self.held_out))
        if m < 2:
            return None, None, None
        a, b = self.scored[:m], self.held_out[:m]
        return metrics.fid(metrics.Gaussian.of(a), metrics.Gaussian.of(b)), kid(a, b)[0], m


def kid(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """KID over subsets of half the rows (at most 1000), so that the subsets differ and the std means something."""
    size = max(2, min(metrics.KID_SUBSET_SIZE, len(x) // 2, len(y) // 2))
    return metrics.kid(x, y, subset_size=size)


def score(fake: np.ndarray, real: RealFeatures) -> tuple[float, float, float]:
    """(FID, KID mean, KID std) of generated features against the scored real subset."""
    real_feats = real.scored[:len(fake)]
    return (metrics.fid(metrics.Gaussian.of(fake), metrics.Gaussian.of(real_feats)), *kid(fake, real_feats))


# ------------------------------------------------------------------------------ real images


def cache_dir() -> Path:
    """The user cache folder for feature files (``XDG_CACHE_HOME`` and platform rules apply)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("ddpm-studio", "ddpm-studio")) / "fid-features"


def split_indices(count: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint seeded random subsets: ``n`` images to score against and up to ``n`` held out.

    Random, not the first n: datasets are often sorted by class.
    """
    if count < n:
        raise UserError(f"The real images number only {count}, fewer than the {n} to compare: lower N (--num) "
                        f"to at most {count}.")
    order = np.random.default_rng(0).permutation(count)
    return order[:n], order[n:2 * n]


def real_features(
    images: torch.Tensor | Any,
    n: int,
    *,
    device: torch.device,
    precision: Precision | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    folder: Path | None = None,
) -> RealFeatures:
    """Features of the real images' two subsets (see :func:`split_indices`), cached by content.

    ``images`` is uint8 (N, C, H, W) or anything indexing like it (a lazily decoded dataset). The
    cache key is a hash of the chosen images' bytes, the network file and the precision, so a
    changed dataset or network never reuses stale features.
    """
    scored_idx, held_idx = split_indices(len(images), n)
    idx = torch.from_numpy(np.concatenate([scored_idx, held_idx]))
    chosen = images[idx]
    precision = precision or inception.feature_precision(device)
    key = hashlib.sha1()
    key.update(f"{inception.network_path().stat().st_size}:{precision.name}:{tuple(chosen.shape)}".encode())
    key.update(chosen.contiguous().numpy().tobytes())
    path = (folder or cache_dir()) / f"{key.hexdigest()[:24]}.npy"
    feats = _read_cached(path)
    if feats is None:
        feats = inception.features(chosen, device=device, precision=precision,
                                   progress=_stage(progress, "real images"), should_cancel=should_cancel)
        with atomic_writer(path) as f:
            buf = io.BytesIO()
            np.save(buf, feats.astype(np.float32))
            f.write(buf.getvalue())
    feats = feats.astype(np.float64)
    return RealFeatures(feats[:n], feats[n:])


def _read_cached(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # absent, or damaged by hand: compute again
        return None


def _stage(progress: Progress | None, stage: str) -> inception.Progress | None:
    return None if progress is None else (lambda done, total: progress(stage, done, total))


# ------------------------------------------------------------------------------ generated images


def sample_uint8(
    model: SamplingModel,
    n: int,
    *,
    sampler: str,
    steps: int | None,
    seed: int,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> torch.Tensor:
    """``n`` samples as the uint8 pixels an export holds, in batches of :data:`SAMPLE_BATCH`.

    Batch i is seeded from (seed, i), so the same seed gives the same images at any N.
    """
    from .exports import to_uint8

    out = []
    for i, start in enumerate(range(0, n, SAMPLE_BATCH)):
        count = min(SAMPLE_BATCH, n - start)
        batch_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        images = model.images(num_images=count, sampler=sampler, steps=steps, seed=batch_seed,
                              should_cancel=should_cancel)
        out.append(to_uint8(images))
        if progress is not None:
            progress("sampling", start + count, n)
    return torch.cat(out)


# ------------------------------------------------------------------------------ one evaluation


def evaluate_images(
    fake: torch.Tensor,
    real: RealFeatures,
    *,
    device: torch.device,
    sampler: str | None = None,
    steps: int | None = None,
    started: float | None = None,
    sample_seconds: float | None = None,
    step: int | None = None,
    kind: str = "evaluate",
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> EvalResult:
    """Score uint8 images (N, C, H, W) against ``real`` (which must hold at least N scored rows)."""
    started = time.perf_counter() if started is None else started
    feats = inception.features(fake, device=device, progress=_stage(progress, "features"), should_cancel=should_cancel)
    f, k_mean, k_std = score(feats, real)
    ref_fid, ref_kid, ref_n = real.reference()
    return EvalResult(fid=f, kid_mean=k_mean, kid_std=k_std, n=len(fake), reference_fid=ref_fid,
                      reference_kid_mean=ref_kid, sampler=sampler, steps=steps,
                      seconds=round(time.perf_counter() - started, 2), reference_n=ref_n,
                      sample_seconds=sample_seconds, step=step, kind=kind)


def evaluate_model(
    model: SamplingModel,
    real: RealFeatures,
    *,
    n: int,
    sampler: str,
    steps: int | None,
    seed: int = 0,
    step: int | None = None,
    kind: str = "evaluate",
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> EvalResult:
    """Sample ``n`` images from ``model`` and score them."""
    from .samplers import default_steps

    steps = steps or default_steps(sampler, model.schedule.num_timesteps)
    started = time.perf_counter()
    fake = sample_uint8(model, n, sampler=sampler, steps=steps, seed=seed, progress=progress,
                        should_cancel=should_cancel)
    sample_seconds = round(time.perf_counter() - started, 2)
    return evaluate_images(fake, real, device=model.device, sampler=sampler, steps=steps, started=started,
                           sample_seconds=sample_seconds, step=step, kind=kind, progress=progress,
                           should_cancel=should_cancel)


def curve_point(
    model: SamplingModel,
    images: torch.Tensor | Any,
    *,
    step: int,
    should_cancel: ShouldCancel | None = None,
) -> EvalResult:
    """One point of the training quality curve: KID (and FID) of :data:`CURVE_N` samples drawn the
    app's default way (:data:`core.choices.DEFAULT_SAMPLER`), as the window would show them.

    The sampler and seed stay fixed along the curve, so points differ only by the weights. A
    dataset smaller than twice CURVE_N is split in halves, keeping the reference at the same N.
    """
    n = min(CURVE_N, max(2, len(images) // 2))
    real = real_features(images, n, device=model.device, should_cancel=should_cancel)
    return evaluate_model(model, real, n=n, sampler=DEFAULT_SAMPLER,
                          steps=app_steps(DEFAULT_SAMPLER, model.schedule.num_timesteps),
                          seed=model.config.train_params.seed, step=step, kind="training", should_cancel=should_cancel)


def comparison_grid(step_counts: Sequence[int] | None = None) -> list[tuple[str, int]]:
    """(sampler, steps) pairs a sampler comparison runs: every sampler at every step count."""
    from .choices import COMPARISON_STEPS, SAMPLERS

    step_counts = step_counts or COMPARISON_STEPS
    return [(s, k) for s in SAMPLERS for k in step_counts]


# ------------------------------------------------------------------------------ a model on disk


@dataclass
class LoadedModel:
    """A model to evaluate, and its run folder and training step when known."""

    model: SamplingModel
    run_dir: Path | None
    step: int | None


def load_model(source: str | os.PathLike, config: Any = None, *, device: str | torch.device = "auto") -> LoadedModel:
    """The EMA weights of a run folder (its newest checkpoint), a .safetensors file or a tutorial .pth."""
    from .checkpoint import read_training_state
    from .runs import RunDir
    from .sampling import SamplingModel

    source = Path(source)
    if not source.exists():
        raise UserError(f"{source} does not exist: give a run folder, a weights file or a folder of images.")
    model = SamplingModel.load(source, config, device=device)
    run_dir = source if source.is_dir() else None
    latest = RunDir(run_dir).latest_checkpoint() if run_dir is not None else None
    return LoadedModel(model, run_dir, read_training_state(latest).step if latest else None)


def evaluate_source(
    loaded: LoadedModel,
    grid: Sequence[tuple[str, int | None]],
    *,
    n: int,
    data: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    on_result: Callable[[EvalResult], None] | None = None,
) -> list[EvalResult]:
    """Score the model once per (sampler, steps) of ``grid`` against its training data (or ``data``).

    Each finished result goes to the run's ``eval.jsonl`` at once (and to ``on_result``), so
    cancelling a comparison half-way keeps the rows already measured.
    """
    from .data import load_dataset

    inception.network_path()  # say what to install before anything heavy runs
    config = loaded.model.config
    m = config.model_params
    dataset = load_dataset(data or config.dataset_params.im_path, m.im_channels, m.im_size,
                           should_cancel=should_cancel)
    real = real_features(dataset.images, n, device=loaded.model.device, progress=progress,
                         should_cancel=should_cancel)
    results = []
    for sampler, steps in grid:
        result = evaluate_model(loaded.model, real, n=n, sampler=sampler, steps=steps, seed=seed,
                                step=loaded.step, progress=progress, should_cancel=should_cancel)
        if loaded.run_dir is not None:
            append_result(loaded.run_dir, result)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


# ------------------------------------------------------------------------------ the run's history


def eval_log_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / EVAL_LOG


def append_result(run_dir: str | os.PathLike, result: EvalResult) -> None:
    """Add one result to ``<run>/eval.jsonl`` as one whole line."""
    append_line(eval_log_path(run_dir), json.dumps(result.record()))


def read_results(run_dir: str | os.PathLike) -> list[EvalResult]:
    """The run's evaluations, oldest first, skipping a torn or foreign line."""
    path = eval_log_path(run_dir)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(EvalResult.from_record(json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return rows
