"""The compiled kernels' modules (``core/_narrow_attention.cpp``, ``core/_norm_act.cpp``,
``core/_winograd.cpp``, ``core/_matmul.cpp``), where this install built them and this CPU runs them.

They are optional (``setup.py``): without a C++ compiler with OpenMP, or on a CPU without AVX2
and FMA, :func:`kernels` gives None and the engine uses torch's kernels.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch


@functools.cache
def kernels(name: str) -> ModuleType | None:
    """``core.<name>`` if it was built and its ``supported()`` says this CPU runs it, else None."""
    try:
        module = importlib.import_module(f"core.{name}")
    except ImportError:
        return None
    return module if module.supported() else None


def readable(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` as the kernels read it through its data pointer: fp32, contiguous, outside autograd
    (a copy where it is not already so, which the caller keeps alive through the call)."""
    return None if t is None else t.detach().float().contiguous()
