"""``ddpm-studio --self-test``: prove that this installation works, end to end, in under a minute.

Meant for packaged builds (PyInstaller bundle, .deb, Windows installer, .dmg) and CI: it goes
through the same code a user does, in a throw-away folder, and prints ONE line of JSON.

1. builds the main window with :func:`ddpm_gui.app.create_main_window` (Qt offscreen when there is
   no display), shows it and waits for the engine (PyTorch) to load, as a launch does;
2. checks the shipped resources are found (presets, icons, the built-in demo datasets);
3. trains a tiny model for a few steps on ``builtin:mnist`` through the window's own training
   runner (worker thread, trainer events, checkpoint written to the run folder);
4. loads the run back (``core.sampling.SamplingModel``, the window's and the CLI's path),
   samples with every registered sampler in 5 steps, writes a grid PNG
   (``core.exports.save_grid``) and decodes it with both Pillow and Qt.

Success: ``{"ok": true, "steps": ..., "grid": ..., "seconds": ..., ...}`` and exit status 0.
Failure: ``{"ok": false, "error": ...}`` and exit status 1. Nothing is written outside the temp
folder: runs (``DDPM_STUDIO_HOME``) and QSettings are redirected there for the duration and the
process environment is restored afterwards. ``--keep`` keeps the folder (its path is in the JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

#: Training steps by default: enough to run the optimiser, the EMA and a checkpoint, and quick.
DEFAULT_STEPS = 3
#: Every wait (engine load, training) gives up after this long; the first torch import of a
#: fresh bundle on a slow disk takes a while, but never minutes.
DEFAULT_TIMEOUT_S = 240.0


def _tiny_config(steps: int, device: str) -> Any:
    """The engine's tiny model, checkpointing once at the end of a ``steps``-step run."""
    from core.config import Config
    from core.presets import tiny_config_dict

    data = tiny_config_dict(task_name="self-test", device=device, checkpoint_every_steps=steps,
                            keep_checkpoints=1, max_steps=steps)
    return Config.from_dict(data, source="self-test")


def _wait(app: Any, done: Any, timeout_s: float, what: str) -> None:
    """Run the Qt event loop until ``done()`` is true; raise TimeoutError after ``timeout_s``."""
    from PySide6.QtCore import QEventLoop

    loop = QEventLoop()  # PySide6 6.12's static QApplication.processEvents() leaks a reference per call
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        loop.processEvents()
        time.sleep(0.01)


def _check_resources() -> dict[str, int]:
    """The shipped files are where core.resources says (inside the bundle when frozen)."""
    from core.choices import BUILTIN_DATASETS
    from core.data import builtin_path
    from core.presets import list_presets
    from core.resources import resources_dir

    root = resources_dir()
    presets = list_presets()
    icons = sorted((root / "icons").glob("ddpm-studio-*.png"))
    missing = [name for name in BUILTIN_DATASETS if not any(builtin_path(name).glob("*-images-idx3-ubyte*"))]
    if not presets:
        raise RuntimeError(f"no presets found in {root / 'presets'}")
    if not icons:
        raise RuntimeError(f"no icons found in {root / 'icons'}")
    if missing:
        raise RuntimeError(f"built-in datasets missing from {root / 'datasets'}: {', '.join(missing)}")
    return {"presets": len(presets), "icons": len(icons), "datasets": len(BUILTIN_DATASETS)}


def _train(app: Any, window: Any, config: Any, run_dir: Path, timeout_s: float) -> int:
    """Train through the window's TrainingRunner; return the last step reached."""
    runner = window.runner
    outcome: dict[str, Any] = {}
    failures: list[str] = []
    runner.failed.connect(failures.append)
    runner.ended.connect(lambda finished: outcome.setdefault("finished", finished))
    runner.start(config, run_dir)
    _wait(app, lambda: "finished" in outcome, timeout_s, "training to end")
    finished = outcome["finished"]
    if failures or finished is None:
        raise RuntimeError("training failed: " + ("; ".join(failures) or "no result"))
    if finished.step != config.train_params.max_steps:
        raise RuntimeError(f"training ended at step {finished.step} ({finished.reason}), "
                           f"expected {config.train_params.max_steps}")
    return int(finished.step)


def _sample_grid(run_dir: Path, out: Path, device: str) -> tuple[Path, str]:
    """Every registered sampler, 5 steps, from the run's EMA weights through the same path as the
    window and the CLI; the last grid as a PNG that must decode again."""
    import torch
    from PIL import Image
    from PySide6.QtGui import QImage

    from core.choices import SAMPLERS
    from core.device import describe
    from core.exports import save_grid
    from core.sampling import SamplingModel

    model = SamplingModel.load(run_dir, use_ema=True, device=device)
    m = model.config.model_params
    for sampler in SAMPLERS:
        images = model.images(num_images=4, sampler=sampler, steps=5, seed=0)
        if not torch.isfinite(images).all():
            raise RuntimeError(f"sampling with {sampler} produced non-finite values")
    grid = save_grid(images, out / "self-test-grid.png", nrow=2)
    with Image.open(grid) as im:
        im.load()
        if im.size[0] < 2 * m.im_size or im.size[1] < 2 * m.im_size:
            raise RuntimeError(f"grid {grid} is {im.size}, too small for 2x2 images of {m.im_size}px")
    if QImage(str(grid)).isNull():
        raise RuntimeError(f"Qt could not decode {grid} (image format plugins missing?)")
    return grid, describe(model.device)


def _self_test(args: argparse.Namespace, work: Path, started: float) -> dict[str, Any]:
    from PySide6.QtCore import QSettings

    from ddpm_gui.app import create_main_window

    window = create_main_window()  # also creates the QApplication (ddpm_gui.app.get_qapp)
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    window.confirm_close = lambda: True
    ready: dict[str, Any] = {}
    window.engineReady.connect(lambda info: ready.setdefault("info", info))
    window.show()
    _wait(app, lambda: window.shown_at is not None, 30, "the window to show")
    to_window = window.shown_at - started
    # The window loads the engine on a worker thread and shows a failure in its banner.
    _wait(app, lambda: "info" in ready or window.banner.kind == "error", args.timeout, "the engine (PyTorch) to load")
    if "info" not in ready:
        raise RuntimeError(f"the engine did not load: {window.banner.message}")
    to_engine = time.perf_counter() - started
    resources = _check_resources()
    try:
        import torch

        from core import matmul, narrow_attention, norm_act, winograd

        steps = _train(app, window, _tiny_config(args.steps, args.device), work / "runs" / "self-test", args.timeout)
        grid, device = _sample_grid(work / "runs" / "self-test", work, args.device)
    finally:
        if window.runner.is_active():  # a failure mid-run: stop it so the thread ends cleanly
            window.runner.stop()
            _wait(app, lambda: not window.runner.is_active(), 60, "training to stop")
        window.close()
        app.processEvents()
        QSettings().sync()
    return {
        "ok": True, "steps": steps, "grid": str(grid), "seconds": round(time.perf_counter() - started, 2),
        "frozen": bool(getattr(sys, "frozen", False)), "torch": torch.__version__, "device": device,
        "cuda": torch.version.cuda, "qt_platform": app.platformName(),
        "start_to_window_s": round(to_window, 2), "start_to_engine_s": round(to_engine, 2),
        "resources": resources, "python": platform.python_version(), "platform": sys.platform,
        # false: built without the compiled kernels, or no AVX2
        "narrow_attention": narrow_attention.available(), "norm_act": norm_act.available(),
        "winograd": winograd.available(), "matmul": matmul.available(),
    }


def _install_dir() -> Path | None:
    """The folder of a frozen bundle (what an installer puts under /opt or Program Files)."""
    bundle = getattr(sys, "_MEIPASS", None)
    return Path(sys.executable).resolve().parent if bundle else None


def _listing(folder: Path | None) -> set[str]:
    """Every path under ``folder`` (empty when not frozen: a checkout's folder is not ours to judge)."""
    if folder is None:
        return set()
    return {os.path.relpath(os.path.join(d, n), folder) for d, dirs, files in os.walk(folder) for n in dirs + files}


def run_self_test(argv: list[str] | None = None) -> int:
    """Run the self-test (see the module docstring); print one JSON line; return the exit status."""
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="ddpm-studio --self-test", description=__doc__.split("\n")[0])
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps (default %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to train and sample (default: auto, i.e. the GPU if there is one)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per wait")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--output", help="also write the JSON verdict to this file (a windowed build "
                                         "on Windows has no stdout)")
    args, _unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    out = sys.stdout if sys.stdout is not None else None  # a windowed build may have no console
    work = Path(tempfile.mkdtemp(prefix="ddpm-selftest-"))
    saved_env = {k: os.environ.get(k) for k in ("DDPM_STUDIO_HOME", "QT_QPA_PLATFORM")}
    try:
        from PySide6.QtCore import QSettings

        # Runs and settings go to the temp folder, never to the user's real ones.
        os.environ["DDPM_STUDIO_HOME"] = str(work / "home")
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(work / "settings"))
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        install = _install_dir()
        before = _listing(install)
        verdict = _self_test(args, work, started)
        added = sorted(_listing(install) - before)
        if added:  # a read-only install (/opt, Program Files, a signed .app) must keep working
            raise RuntimeError(f"the app wrote into its install folder {install}: {', '.join(added[:5])}")
        verdict["work"] = str(work) if args.keep else None
        status = 0
    except BaseException as e:  # noqa: BLE001 - the verdict must be printed whatever happened
        if isinstance(e, KeyboardInterrupt):
            raise
        verdict = {"ok": False, "error": f"{type(e).__name__}: {e}", "seconds": round(time.perf_counter() - started, 2),
                   "frozen": bool(getattr(sys, "frozen", False)), "traceback": traceback.format_exc(limit=8),
                   "work": str(work)}
        status = 1
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if not args.keep and status == 0:
        shutil.rmtree(work, ignore_errors=True)
    line = json.dumps(verdict)
    if args.output:
        Path(args.output).write_text(line + "\n", encoding="utf-8")
    if out is not None:
        print(line, file=out, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(run_self_test())
