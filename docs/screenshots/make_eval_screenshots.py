"""Remake the evaluation screenshots from a run folder trained with ``train_params.eval_every_steps``.

Opens ``RUN_DIR`` in the real window and grabs the Train page (loss and quality curve from its
log.jsonl and eval.jsonl), then on the Evaluate page runs Evaluate and Compare samplers at the
smallest N the page offers and grabs each result. Writes eval-quality-curve.png,
eval-result.png and eval-sampler-table.png beside this file.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_eval_screenshots.py RUN_DIR [--steps 10 20]
        [--only eval-sampler-table]

``--only`` remakes just the named ones (the sampler table needs no eval.jsonl in the run).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from make_readme_screenshots import grab  # noqa: E402 - after the path set-up


SHOTS = ["eval-quality-curve", "eval-result", "eval-sampler-table"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20], help="step counts of the comparison")
    parser.add_argument("--only", nargs="+", choices=SHOTS, default=SHOTS, help="the screenshots to make")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    from bench.gui_responsiveness import open_window, wait_until

    app, window, _ = open_window(600)
    if not window.open_run(run_dir):
        raise SystemExit(f"{run_dir}: {window.banner.message}")
    if "eval-quality-curve" in args.only:
        plot = window.training_panel.quality_plot
        wait_until(app, lambda: len(plot.results) > 0 and len(window.training_panel.loss_plot.history) > 0, 60)
        window.training_panel.loss_plot.refresh()
        grab(app, window, "eval-quality-curve")

    panel = window.evaluation_panel
    window.nav.setCurrentRow(window.pages.indexOf(window.evaluation_panel))
    panel.num_combo.setCurrentIndex(0)
    jobs = ((panel.evaluate, "eval-result"), (lambda: panel.compare(tuple(args.steps)), "eval-sampler-table"))
    for start, name in (job for job in jobs if job[1] in args.only):
        wait_until(app, lambda: panel.evaluate_button.isEnabled(), 60)
        if start() is None:
            raise SystemExit(f"cannot evaluate: {panel.evaluate_button.toolTip()}")
        wait_until(app, lambda: not panel.is_running(), 3600)
        if panel.banner.kind == "error":
            raise SystemExit(panel.banner.message)
        grab(app, window, name)
    window.close()


if __name__ == "__main__":
    main()
