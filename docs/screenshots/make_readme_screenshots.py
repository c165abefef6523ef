"""Remake the README's screenshots from a run folder with real digits.

Opens ``RUN_DIR`` in the real window (its log.jsonl gives the loss curve, samples/ the newest
preview grid) and grabs the Train page, then samples 64 images with DPM-Solver++ in 20 steps
and grabs the Sample page midway and at the end. Train the run first, e.g.

    .venv/bin/python -m core.cli train preset:fast-cpu --run-dir /tmp/fastrun
    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_readme_screenshots.py /tmp/fastrun

Writes training.png, sampling-midway.png and sampling.png beside this file. The GUI tests never
write here (their screenshots go to docs/screenshots/test/).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def grab(app, window, name: str) -> None:
    """Let a few repaints through first: the plot's axes widen to fit their labels as they paint."""
    settle = time.monotonic() + 0.5
    while time.monotonic() < settle:
        app.processEvents()
        time.sleep(0.01)
    path = HERE / f"{name}.png"
    if not window.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    run_dir = parser.parse_args().run_dir.resolve()
    from bench.gui_responsiveness import open_window, wait_until

    app, window, _ = open_window(180)

    panel = window.training_panel
    if not window.open_run(run_dir):
        raise SystemExit(f"{run_dir}: {window.banner.message}")
    wait_until(app, lambda: len(panel.loss_plot.history) > 0 and panel.preview.image() is not None, 60)
    panel.loss_plot.refresh()
    grab(app, window, "training")

    sampling = window.sampling_panel
    window.nav.setCurrentRow(3)
    sampling.sampler_combo.setCurrentIndex(sampling.sampler_combo.findData("dpm++"))
    sampling.steps_spin.setValue(20)
    sampling.count_spin.setValue(64)
    worker = sampling.start()
    if worker is None:
        raise SystemExit(f"cannot sample: {sampling.sample_button.toolTip()}")
    midway: list[bool] = []

    def grab_midway(frame) -> None:  # connected after the panel's own slot: the views show it
        if not midway and frame.index + 1 >= frame.num_steps // 2:
            midway.append(True)
            grab(app, window, "sampling-midway")

    worker.yielded.connect(grab_midway)
    wait_until(app, lambda: sampling.result is not None and not sampling.is_sampling(), 600)
    if sampling.banner.kind == "error":
        raise SystemExit(sampling.banner.message)
    grab(app, window, "sampling")
    window.close()


if __name__ == "__main__":
    main()
