"""The compiled kernels' modules (``core/_narrow_attention.cpp``, ``core/_norm_act.cpp``,
``core/_winograd.cpp``, ``core/_matmul.cpp``), where this install built them and this CPU runs them.

They are optional (``setup.py``): without a C++ compiler with OpenMP, or on a CPU without AVX2
and FMA, :func:`kernels` gives None and the engine uses torch's kernels.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType


@functools.cache
def kernels(name: str) -> ModuleType | None:
    """``core.<name>`` if it was built and its ``supported()`` says this CPU runs it, else None."""
    try:
        module = importlib.import_module(f"core.{name}")
    except ImportError:
        return None
    return module if module.supported() else None
