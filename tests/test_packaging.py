"""Fast checks of the packaging files; the real build is ``packaging/build`` (minutes, not here).

* the PyInstaller spec is valid Python and keeps its promises (onedir, resources, excludes);
* the .desktop entry validates (``desktop-file-validate``, when installed) and names the icon,
  the launcher and the window class the app uses;
* the build scripts are executable bash with ``set -euo pipefail`` and pass ``bash -n``;
* the self-test runs in-process, in a temp folder, in under a minute.
"""
from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
SPEC = PACKAGING / "ddpm-studio.spec"
DESKTOP = PACKAGING / "linux" / "ddpm-studio.desktop"
SCRIPTS = [PACKAGING / "build", PACKAGING / "ci-build-and-selftest", PACKAGING / "linux" / "make-deb",
           PACKAGING / "linux" / "make-tarball", PACKAGING / "linux" / "test-deb", PACKAGING / "macos" / "make-dmg"]


def test_spec_parses_and_builds_a_onedir_bundle_with_resources():
    tree = ast.parse(SPEC.read_text(encoding="utf-8"), filename=str(SPEC))
    calls = {node.func.id: node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE"} <= set(calls), "onedir needs EXE + COLLECT"
    text = SPEC.read_text(encoding="utf-8")
    assert "exclude_binaries=True" in text, "EXE must leave binaries to COLLECT (onedir, not onefile)"
    assert 'prefix="resources"' in text, "resources/ must be bundled as 'resources' (core.resources)"
    assert '"torch": "pyz+py"' in text
    for name in ("PyQt5", "PyQt6", "PySide2", "QtQml", "QtQuick", "QtWebEngineCore", "QtMultimedia", "Qt3DCore"):
        assert f'"{name}"' in text, f"{name} should be excluded"
    for entry in ("ddpm_studio.py", "ddpm.py"):
        assert (PACKAGING / "entry" / entry).is_file()
    assert (PACKAGING / "rthooks" / "rth_ddpm_studio.py").is_file()


def test_spec_excludes_no_qt_module_the_app_imports():
    """Every PySide6 module imported by ddpm_gui and pyqtgraph must survive the excludes."""
    text = SPEC.read_text(encoding="utf-8")
    excluded = set(re.findall(r'"(Qt\w+)"', text))
    used = {"QtCore", "QtGui", "QtWidgets", "QtSvg", "QtOpenGL", "QtOpenGLWidgets", "QtTest"}
    for path in (ROOT / "ddpm_gui").glob("*.py"):
        used |= set(re.findall(r"PySide6\.(Qt\w+)", path.read_text(encoding="utf-8")))
    assert not used & excluded, f"excluded but used: {sorted(used & excluded)}"


def test_desktop_entry_is_valid_and_matches_the_app():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(DESKTOP, encoding="utf-8")
    d = entry["Desktop Entry"]
    assert d["Name"] == "DDPM Studio"
    assert d["Exec"].split()[0] == "ddpm-studio"
    assert d["Icon"] == "ddpm-studio"
    assert d["Categories"] == "Graphics;Science;"
    # X11 WM_CLASS instance = argv[0]'s name; Wayland app id = setDesktopFileName("ddpm-studio")
    assert d["StartupWMClass"] == "ddpm-studio"
    assert 'setDesktopFileName("ddpm-studio")' in (ROOT / "ddpm_gui" / "app.py").read_text(encoding="utf-8")
    validator = shutil.which("desktop-file-validate")
    if validator is None:
        pytest.skip("desktop-file-validate not installed (apt-get install desktop-file-utils)")
    result = subprocess.run([validator, str(DESKTOP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_icons_for_the_hicolor_theme_exist():
    sizes = {int(p.stem.rsplit("-", 1)[1]) for p in (ROOT / "resources" / "icons").glob("ddpm-studio-*.png")}
    assert {16, 32, 48, 128, 256} <= sizes
    assert (ROOT / "resources" / "icons" / "ddpm-studio.ico").is_file()  # the Windows executable's icon


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_build_scripts_are_strict_bash(script):
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script} is not executable"
    bash = shutil.which("bash")
    if bash:
        result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_self_test_runs_in_process(capsys, monkeypatch):
    from PySide6.QtCore import QSettings

    from core import matmul, narrow_attention, norm_act, winograd
    from ddpm_gui.selftest import run_self_test

    home = os.environ.get("DDPM_STUDIO_HOME")
    status = run_self_test(["--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    verdict = json.loads(lines[-1])
    assert status == 0, verdict
    assert verdict["ok"] is True
    assert verdict["steps"] == 3
    assert verdict["grid"].endswith(".png")
    assert verdict["frozen"] is False
    assert verdict["device"].startswith("cpu")
    assert verdict["narrow_attention"] is narrow_attention.available()
    assert verdict["norm_act"] is norm_act.available()
    assert verdict["winograd"] is winograd.available()
    assert verdict["matmul"] is matmul.available()
    assert os.environ.get("DDPM_STUDIO_HOME") == home, "the self-test must restore the environment"
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)  # as the app leaves it


def test_self_test_reports_failure_as_json(capsys):
    from ddpm_gui.selftest import run_self_test

    status = run_self_test(["--device", "cpu", "--steps", "0"])  # 0 steps: the config is invalid
    verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 1
    assert verdict["ok"] is False
    assert verdict["error"]


@pytest.mark.slow
def test_wheel_ships_the_resources_and_finds_them_installed(tmp_path):
    """A plain ``pip install`` (not editable) gets the demo datasets, presets and icons too."""
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("ddpm_studio-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT / "resources").as_posix() for p in (ROOT / "resources").rglob("*") if p.is_file()}
    assert shipped and {f"ddpm_studio_resources/{n}" for n in shipped} <= names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip puts in site-packages
    probe = "from core.resources import resources_dir; print(resources_dir())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True)
    found = Path(out.stdout.strip())
    assert found == site / "ddpm_studio_resources"
    assert (found / "presets" / "fast-cpu.yaml").is_file()


def test_the_fid_network_file_is_installed_and_bundled_where_core_looks():
    from core import inception

    assert f'"{inception.NETWORK_FILE}"' in SPEC.read_text(encoding="utf-8")
    pin = inception.INSTALL_HINT.split()[-1]
    assert any(pin in line and "--no-deps" in line
               for line in (ROOT / "dev" / "bootstrap").read_text(encoding="utf-8").splitlines())


def test_a_workflow_runs_the_whole_suite_on_every_change():
    """Contributors' changes to core or the window are tested too, not only packaging paths."""
    import yaml

    from .conftest import ROOT

    whole_suite = []
    for path in (ROOT / ".github" / "workflows").glob("*.yml"):
        flow = yaml.safe_load(path.read_text())
        triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
        every_change = all(t in triggers and not (triggers[t] or {}).get("paths") for t in ("push", "pull_request"))
        steps = [s.get("run", "") for job in flow["jobs"].values() for s in job["steps"]]
        runs_all = any("pytest" in run and "tests/" not in run and " -k " not in run for run in steps)
        if every_change and runs_all:
            whole_suite.append(path.name)
    assert whole_suite, "no workflow runs the whole test suite on every push and pull request"
