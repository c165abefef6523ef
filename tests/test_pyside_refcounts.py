"""The app outlives PySide6's dropped references to None (see ddpm_gui.pyside_refcounts)."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# More void Qt calls than None has references in a fresh process, then a normal exit (which
# runs the interpreter's own teardown, where a freed None also aborts).
OUTLIVE_NONE = """
import sys
from PySide6.QtWidgets import QWidget
from ddpm_gui.app import get_qapp

calls = sys.getrefcount(None) + 20_000
app = get_qapp(route_exceptions=False)
widget = QWidget()
for _ in range(calls):
    widget.setEnabled(True)
    widget.update()
print("alive")
"""


def test_the_app_survives_more_void_qt_calls_than_none_has_references():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", OUTLIVE_NONE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "alive"


def test_pinning_is_once_a_process():
    from ddpm_gui.pyside_refcounts import SPARE_REFERENCES, pin_singletons

    pin_singletons()
    before = sys.getrefcount(None)
    pin_singletons()
    assert sys.getrefcount(None) - before < SPARE_REFERENCES
