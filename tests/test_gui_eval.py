"""The Evaluate page and the quality curve: history from eval.jsonl, a live evaluation, and closing
the window mid-evaluation keeps every finished line and leaves no half-written file."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtWidgets import QLabel, QPushButton, QTableWidget

from core import evaluate, inception
from core.config import Config
from core.events import QualityMeasured
from core.trainer import Trainer
from ddpm_gui.engine import EvalProgress
from tests.conftest import needs_fid_network, tiny_config_dict
from tests.gui_helpers import STEP_TIMEOUT_MS, find, screenshot, window  # noqa: F401 - fixture

EVAL_TIMEOUT_MS = 600_000  # Inception on 2 shared cores


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "run"
    Trainer(Config.from_dict(tiny_config_dict(max_steps=2)), path).run()
    return path


def _result(step: int, kind: str, kid: float = 0.05) -> evaluate.EvalResult:
    return evaluate.EvalResult(fid=40.0 + step, kid_mean=kid, kid_std=0.004, n=100, reference_fid=12.5,
                               reference_kid_mean=0.001, sampler="dpm++", steps=20, seconds=30.0,
                               reference_n=100, sample_seconds=20.0, step=step, kind=kind)


def test_an_opened_run_shows_its_evaluations_and_quality_curve(window, qtbot, run_dir):
    for step, kid in ((100, 0.09), (200, 0.05), (300, 0.03)):
        evaluate.append_result(run_dir, _result(step, "training", kid))
    evaluate.append_result(run_dir, _result(2, "evaluate"))
    assert window.open_run(run_dir)
    history = find(window, "evalHistoryTable", QTableWidget)
    qtbot.waitUntil(lambda: history.rowCount() == 1, timeout=STEP_TIMEOUT_MS)
    assert history.item(0, 4).text() == "42.00" and history.item(0, 5).text() == "12.50"
    assert "real vs real: 12.50" in find(window, "evalResultLabel", QLabel).text()
    plot = find(window, "qualityPlot")
    qtbot.waitUntil(lambda: len(plot.results) == 3, timeout=STEP_TIMEOUT_MS)
    x, y = plot.curve.getData()
    assert list(x) == [100, 200, 300] and list(y) == [0.09, 0.05, 0.03] and plot.isVisible()


def test_a_live_quality_point_extends_the_curve(window, run_dir):
    window.training_panel.begin(run_dir, resume=False)
    window.training_panel.on_event(QualityMeasured(50, _result(50, "training")))
    assert list(window.training_panel.quality_plot.curve.getData()[0]) == [50]


@pytest.mark.slow
@needs_fid_network
def test_evaluate_shows_scores_with_the_reference_and_records_them(window, qtbot, run_dir):
    assert window.open_run(run_dir)
    panel = window.evaluation_panel
    qtbot.waitUntil(lambda: find(window, "evaluateButton", QPushButton).isEnabled(), timeout=STEP_TIMEOUT_MS)
    panel.num_combo.setCurrentIndex(0)  # N = 100
    panel.steps_spin.setValue(5)
    assert panel.evaluate() is not None
    # the page's own state, not the worker's finished signal: a signal emitted before a test
    # connects to it is never seen, and the page forgets the worker only once it has ended
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=EVAL_TIMEOUT_MS)
    text = find(window, "evalResultLabel", QLabel).text()
    assert "FID" in text and "real vs real" in text and "N = 100" in text, panel.banner.message
    rows = evaluate.read_results(run_dir)
    assert len(rows) == 1 and rows[0].n == 100 and rows[0].steps == 5 and rows[0].reference_fid is not None
    assert find(window, "evalHistoryTable", QTableWidget).rowCount() == 1


@pytest.mark.slow
@needs_fid_network
def test_closing_during_evaluation_loses_nothing_and_leaves_no_partial_file(window, qtbot, run_dir, tmp_path):
    evaluate.append_result(run_dir, _result(1, "evaluate"))
    before = (run_dir / "eval.jsonl").read_bytes()
    assert window.open_run(run_dir)
    panel = window.evaluation_panel
    qtbot.waitUntil(lambda: panel.evaluate_button.isEnabled(), timeout=STEP_TIMEOUT_MS)
    panel.num_combo.setCurrentIndex(0)
    seen = []
    worker = panel.evaluate()
    worker.yielded.connect(seen.append)

    def ended() -> bool:
        try:
            return worker.isFinished()
        except RuntimeError:  # already deleted, which it is only once it has finished
            return True
    qtbot.waitUntil(lambda: any(isinstance(p, EvalProgress) for p in seen), timeout=EVAL_TIMEOUT_MS)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=EVAL_TIMEOUT_MS)
    qtbot.waitUntil(ended, timeout=EVAL_TIMEOUT_MS)  # aborted at its next batch
    assert (run_dir / "eval.jsonl").read_bytes() == before
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers
    for cached in (tmp_path / "cache").rglob("*.npy"):  # any cache file is whole
        assert np.load(cached).shape[1] == inception.FEATURE_DIM


def test_comparison_rows_fill_the_sampler_table_with_quality_and_time(window):
    panel = window.evaluation_panel
    for sampler, steps in (("ddim", 10), ("dpm++", 20)):
        result = evaluate.EvalResult(30.0, 0.02, 0.003, 100, 12.5, 0.001, sampler, steps, 40.0,
                                     reference_n=100, sample_seconds=25.0)
        panel._on_yielded(result, comparison=True)
    table = find(window, "samplerComparisonTable", QTableWidget)
    assert table.rowCount() == 2
    assert [table.item(1, c).text() for c in range(table.columnCount())] == [
        "DPM-Solver++ (2M)", "20", "30.00", "0.0200", "0.0030", "25.0", "250"]
    assert "Real vs real at the same N: FID 12.50" in panel.comparison_caption.text()
