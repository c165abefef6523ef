"""The boundary between the window and the engine holds in both directions.

The window imports only the surface ``docs/ENGINE_API.md`` lists (so that list is the whole
API a change to core must keep), and core never loads Qt (so the engine runs headless, in the
CLI and on servers, and a stray Qt import cannot creep in through a shared helper).
"""
from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import core

ROOT = Path(__file__).resolve().parents[1]


def documented_surface() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "ENGINE_API.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- window-surface -->\n(.*?)<!-- /window-surface -->", text, re.S)
    assert block, "docs/ENGINE_API.md lacks its window-surface list"
    surface = {}
    for line in block.group(1).strip().splitlines():
        module, _, names = line.partition(":")
        surface[module.strip()] = {n.strip() for n in names.split(",")}
    return surface


def window_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) for every import from core in ddpm_gui; name "" for a whole module."""
    found = []
    for path in sorted((ROOT / "ddpm_gui").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
                for alias in node.names:
                    if node.module == "core" and (ROOT / "core" / f"{alias.name}.py").exists():
                        found.append((path.name, f"core.{alias.name}", ""))  # from core import trainer
                    else:
                        found.append((path.name, node.module, alias.name))
            elif isinstance(node, ast.Import):
                found += [(path.name, a.name, "") for a in node.names if a.name.split(".")[0] == "core"]
    return found


def test_the_window_imports_only_the_documented_surface():
    surface = documented_surface()
    outside = [f"{file}: {module}{'.' + name if name else ''}" for file, module, name in window_imports()
               if module not in surface or (name and name not in surface[module])]
    assert not outside, "not in docs/ENGINE_API.md's window surface: " + ", ".join(outside)


def test_the_documented_surface_exists():
    import importlib

    for module, names in documented_surface().items():
        mod = importlib.import_module(module)
        assert not [n for n in names if not hasattr(mod, n)], module


@pytest.mark.slow
def test_no_core_module_loads_qt():
    modules = [f"core.{m.name}" for m in pkgutil.iter_modules(core.__path__)]
    probe = ("import importlib, sys\n"
             f"for m in {modules!r}: importlib.import_module(m)\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('PySide6', 'PyQt5', 'PyQt6', 'PySide2', 'shiboken6', 'pyqtgraph')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert len(modules) > 15 and out.stdout.strip() == "[]"


def test_what_the_window_needs_before_the_engine_loads_imports_no_torch():
    probe = ("import sys\n"
             "import core.choices, core.config, core.errors, core.events, core.presets, core.resources\n"
             "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
