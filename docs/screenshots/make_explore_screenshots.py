"""Remake the README's Explore screenshots from a run on the MNIST demo.

Opens ``RUN_DIR`` in the real window (its newest checkpoint becomes the model) and grabs the
Explore page at t = 0, 250, 500 and 999 with the predictions shown, the schedule plot, the
loss by timestep of an early and a late checkpoint of the run, and the UNet table. Train the
run first with checkpoints kept, e.g. a fast-cpu config with ``checkpoint_every_steps: 25`` and
``keep_checkpoints: 20``, then

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_explore_screenshots.py RUN_DIR \\
        --early RUN_DIR/checkpoints/step-000025.safetensors --late RUN_DIR/checkpoints/step-000800.safetensors

Writes explore-*.png beside this file.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from make_readme_screenshots import grab  # noqa: E402 - after the path is set

TIMESTEPS = (0, 250, 500, 999)
TABS = {"schedule": 0, "prediction": 1, "loss": 2, "network": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--early", type=Path, required=True, help="an early checkpoint of the run")
    parser.add_argument("--late", type=Path, required=True, help="a late checkpoint of the run")
    parser.add_argument("--image", type=int, default=0, help="index of the dataset image shown")
    args = parser.parse_args()
    from bench.gui_responsiveness import open_window, wait_until

    app, window, _ = open_window(300)
    if not window.open_run(args.run_dir.resolve()):
        raise SystemExit(f"{args.run_dir}: {window.banner.message}")
    wait_until(app, lambda: window.current_dataset() is not None, 300)

    page = window.explore_panel
    window.nav.setCurrentRow(window.pages.indexOf(page))
    page.show_dataset_image(args.image)
    page.tabs.setCurrentIndex(TABS["prediction"])
    for t in TIMESTEPS:
        page.slider.setValue(t)
        wait_until(app, lambda t=t: page.shown_prediction is not None and page.shown_prediction.t == t, 300)
        grab(app, window, f"explore-t{t:03d}")
    page.slider.setValue(250)
    page.tabs.setCurrentIndex(TABS["schedule"])
    grab(app, window, "explore-schedule")
    page.tabs.setCurrentIndex(TABS["network"])
    grab(app, window, "explore-network")

    page.tabs.setCurrentIndex(TABS["loss"])
    for checkpoint in (args.early, args.late):
        page.choose_loss_source(checkpoint.resolve())
        wait_until(app, lambda: not page.is_computing_loss(), 1800)
    if len(page.loss_plot.curves) != 2:
        raise SystemExit(f"loss by timestep failed: {page.banner.message}")
    grab(app, window, "explore-loss")
    window.close()
    wait_until(app, lambda: not window.isVisible(), 60)


if __name__ == "__main__":
    main()
