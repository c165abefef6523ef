"""The engine calls the window makes, each importing ``core``'s torch modules only when run.

Everything here runs on a worker thread (see ``workers``); the app imports torch behind its
splash screen before the window appears (``import_engine``), and a window made without it (the
tests) pays for the import in its first call here. Results come back as plain data (numpy uint8
grids, counts, names) so the UI thread never touches a tensor or a model.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.choices import DEFAULT_GUIDANCE
from core.config import Config

from .workers import Throttle, Worker, lower_thread_priority

THUMBNAILS = 96


@dataclass(frozen=True)
class EngineInfo:
    """What the window fills in once torch has loaded: only what depends on this machine.

    Names known without torch (demo datasets, samplers) come from ``core.choices`` when the
    window is built, so they never wait for this.
    """

    devices: dict[str, str]  # name -> human description, best first


def import_engine() -> None:
    """Import torch and every engine module the window's slots use (seconds, once).

    The app does this before its window is shown (``app.import_engine_behind_splash``); the
    engine-ready slots import ``core.explore`` (the Explore page's schedule curves), so it is
    paid here too rather than later on the UI thread.
    """
    from core import data, explore, sampling, training_process  # noqa: F401


def load_engine(_worker: Worker | None = None) -> EngineInfo:
    """The engine, imported if it was not yet, and what this machine offers."""
    return _engine_info()


def prepare_training() -> None:
    """Start the process that training runs fork from, behind the splash: forking the window's
    process holds the interpreter lock for tens of milliseconds, a stall nobody sees there, and
    the first Train then does not wait for torch to load again. Started from a low-priority
    thread, the server (which imports torch meanwhile) takes that priority, not the window's."""
    from core.training_process import start_fork_server

    def start() -> None:
        lower_thread_priority()
        start_fork_server()

    thread = threading.Thread(target=start, name="fork-server-start")
    thread.start()
    thread.join()


@functools.cache
def _engine_info() -> EngineInfo:
    """Asked once per process (behind the splash, see ``app.import_engine_behind_splash``): probing
    devices is Python work that, on a worker thread while the window draws its first frame, would
    take the interpreter lock from it."""
    import_engine()
    from core.device import available_devices, describe, pick_device

    return EngineInfo({name: describe(pick_device(name)) for name in available_devices()})


# -- datasets ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetKey:
    """What a scanned dataset depends on: change any of these and it must be scanned again."""

    im_path: str
    channels: int
    size: int

    @classmethod
    def of(cls, config: Config) -> DatasetKey:
        m = config.model_params
        return cls(config.dataset_params.im_path, m.im_channels, m.im_size)


@dataclass(frozen=True)
class ScanProgress:
    done: int
    total: int


@dataclass
class ScanResult:
    key: DatasetKey
    dataset: Any  # core.data.ImageDataset, handed to the Trainer so it is not loaded twice
    report: Any  # core.data.DatasetReport
    thumbnails: np.ndarray  # (N, H, W, C) uint8, as the model will see them
    thumbnail_labels: list[str]
    thumbnail_indices: list[int]  # each thumbnail's index in the dataset


def scan_dataset(worker: Worker, key: DatasetKey) -> ScanResult:
    """Load and report on a dataset, reporting :class:`ScanProgress` (core paces it to about a
    hundred calls) and honouring abort."""
    return read_dataset(key, progress=lambda done, total: worker.report(ScanProgress(done, total)),
                        should_cancel=worker.should_abort)


def read_dataset(key: DatasetKey, *, progress: Callable[[int, int], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> ScanResult:
    """Load and report on a dataset on the calling thread."""
    from core.data import load_dataset

    dataset = load_dataset(key.im_path, key.channels, key.size, progress=progress, should_cancel=should_cancel)
    n = min(THUMBNAILS, len(dataset))
    spread = np.linspace(0, len(dataset) - 1, n).astype(np.int64) if n else np.zeros(0, np.int64)
    return ScanResult(key, dataset, dataset.report, _as_uint8(dataset, spread), _labels(dataset, spread),
                      spread.tolist())


def _as_uint8(dataset: Any, indices: np.ndarray) -> np.ndarray:
    """The chosen training images as (N, H, W, C) uint8 for display."""
    chosen = np.asarray(dataset.images[indices.tolist()])
    return np.ascontiguousarray(chosen.transpose(0, 2, 3, 1))


def _labels(dataset: Any, indices: np.ndarray) -> list[str]:
    names = list(getattr(dataset, "class_names", []) or [])
    labels = getattr(dataset, "labels", None)
    if not names or labels is None:
        return [""] * len(indices)
    return [names[int(labels[int(i)])] if int(labels[int(i)]) < len(names) else "" for i in indices]


# -- training ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreviewGrid:
    """A trainer preview as a display-ready grid (converted on the training thread)."""

    step: int
    grid: np.ndarray  # (H, W, C) uint8


@dataclass(frozen=True)
class LossLog:
    """The steps a resumed run already logged, so its curve starts where it left off, and the
    last logged row (step, epoch, loss, images_per_s, eta_s, total_steps; logs written before
    eta_s and total_steps were logged lack them), so its statistics do too."""

    steps: np.ndarray
    losses: np.ndarray
    last: dict[str, Any]


def for_display(event: Any) -> Any:
    """A trainer event as the UI thread may hold it: previews become uint8 grids, the rest as is."""
    images = getattr(event, "images", None)
    if images is None:
        return event
    from core.exports import to_uint8_grid

    nrow = max(1, int(round(len(images) ** 0.5)))
    return PreviewGrid(event.step, to_uint8_grid(images, nrow))


def logged_losses(run_dir: Path) -> LossLog:
    """The loss column of a run's ``log.jsonl``."""
    from core.runs import RunDir

    rows = [r for r in RunDir(run_dir).read_log() if "step" in r and "loss" in r]
    return LossLog(np.array([r["step"] for r in rows], dtype=np.float64),
                   np.array([r["loss"] for r in rows], dtype=np.float64), rows[-1] if rows else {})


def run_history(run_dir: Path) -> list[LossLog | PreviewGrid | QualityHistory]:
    """What an opened run shows on the Train page: its loss curve, its quality curve and its
    newest preview grid (``samples/step-NNNNNN.png``, as the trainer saved it), as the events a
    live run sends."""
    from PIL import Image

    from core.evaluate import read_results
    from core.runs import RunDir

    history: list[LossLog | PreviewGrid | QualityHistory] = [
        logged_losses(run_dir), QualityHistory([r for r in read_results(run_dir) if r.kind == "training"])]
    previews = sorted(RunDir(run_dir).samples.glob("step-*.png"))
    if previews:
        with Image.open(previews[-1]) as im:
            grid = np.asarray(im.convert("L" if im.mode in ("1", "L", "I", "I;16") else "RGB"))
        history.append(PreviewGrid(int(previews[-1].stem.removeprefix("step-")), grid))
    return history


# -- sampling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleRequest:
    source: Path  # a run folder, a .safetensors file or a tutorial .pth
    config: Config | None  # required for a .pth; a run knows its own
    sampler: str
    steps: int
    num_images: int
    seed: int
    use_ema: bool
    device: str  # "auto" or a device name
    classes: tuple[int, ...] = ()  # class-conditional models: one row per class; empty: no class
    guidance: float = DEFAULT_GUIDANCE  # classifier-free guidance scale with classes (core.guidance)


@dataclass(frozen=True)
class SampleFrame:
    """One step of the animation, ready to show."""

    index: int
    num_steps: int
    t: int
    xt: np.ndarray  # (H, W, C) uint8 grid
    x0: np.ndarray


@dataclass
class SampleResult:
    store: Any  # core.frames.FrameStore with every kept frame
    images: Any  # final images, float [-1, 1] CPU (N, C, H, W), for exports
    nrow: int
    row_labels: list[str] | None = None  # the class of each row, when classes were asked for


MAX_FRAMES = 200


def check_weights(source: Path, config: Config) -> list[str]:
    """Load ``source`` as sampling will, so that a damaged file or one from another config is
    reported when it is chosen rather than when Sample is pressed; returns its class names."""
    from core.sampling import SamplingModel

    return SamplingModel.load(source, config, device="cpu").class_names


def class_names(source: Path) -> list[str]:
    """The classes a run or weights file can be asked for (empty: an unconditional model)."""
    from core.checkpoint import recorded_class_names

    return recorded_class_names(source)


def run_sampling(worker: Worker, request: SampleRequest) -> SampleResult:
    """Load the model, sample, keep frames in a FrameStore and report each as a SampleFrame."""
    from core.allocator import release_freed_memory
    from core.frames import FrameStore
    from core.sampling import SamplingModel

    model = SamplingModel.load(request.source, request.config, use_ema=request.use_ema, device=request.device)
    num_images, nrow = request.num_images, max(1, int(round(request.num_images ** 0.5)))
    labels = row_labels = None
    if request.classes:
        from core.classes import class_rows

        labels, nrow = class_rows(request.classes, num_images)
        num_images = len(labels)
        row_labels = [model.class_names[int(c)] for c in labels[::nrow]]
    store = FrameStore(max_frames=MAX_FRAMES, nrow=nrow)
    throttle = Throttle(0.03)
    final = None
    model = model.tuned(num_images)
    frames = model.frames(num_images=num_images, sampler=request.sampler, steps=request.steps,
                          seed=request.seed, frame_stride=max(1, request.steps // MAX_FRAMES),
                          should_cancel=worker.should_abort, labels=labels, guidance=request.guidance)
    try:
        for final in frames:
            store.add(final)
            if throttle.ready(force=final.index + 1 == final.num_steps):
                worker.report(SampleFrame(final.index, final.num_steps, final.t, store.xt(-1), store.x0(-1)))
    finally:
        release_freed_memory()  # the window lives on: what the steps kept goes back to the system
    return SampleResult(store, final.xt, nrow, row_labels)


# -- evaluation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalRequest:
    source: Path  # a run folder or a weights file
    config: Config | None
    num_images: int
    grid: tuple[tuple[str, int], ...]  # (sampler, steps) pairs: one for Evaluate, many for a comparison
    seed: int
    device: str


@dataclass(frozen=True)
class EvalProgress:
    stage: str  # "real images", "sampling", "features"
    done: int
    total: int
    index: int  # which (sampler, steps) of the grid
    count: int


@dataclass(frozen=True)
class QualityHistory:
    """An opened run's quality curve (``eval.jsonl`` rows from training)."""

    results: list[Any]  # core.evaluate.EvalResult


def run_evaluation(worker: Worker, request: EvalRequest) -> list[Any]:
    """Score the model per (sampler, steps), reporting :class:`EvalProgress` and each finished
    result (``core.evaluate.EvalResult``, plain data) as it lands in the run's ``eval.jsonl``."""
    from core import evaluate
    from core.allocator import release_freed_memory

    throttle = Throttle(0.1)
    index = 0

    def progress(stage: str, done: int, total: int) -> None:
        if throttle.ready(force=done == total):
            worker.report(EvalProgress(stage, done, total, index, len(request.grid)))

    def on_result(result: Any) -> None:
        nonlocal index
        index += 1
        worker.report(result)

    try:
        loaded = evaluate.load_model(request.source, request.config, device=request.device)
        return evaluate.evaluate_source(loaded, request.grid, n=request.num_images, seed=request.seed,
                                        progress=progress, should_cancel=worker.should_abort, on_result=on_result)
    finally:
        release_freed_memory()


def eval_history(run_dir: Path) -> list[Any]:
    """The run's evaluations, oldest first (``core.evaluate.EvalResult``)."""
    from core.evaluate import read_results

    return read_results(run_dir)
