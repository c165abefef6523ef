"""core.allocator: glibc keeps freed memory for the next step and hands it back when asked.

How many page faults this saves is a benchmark (bench/allocator_faults.py), not a unit test.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from core import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="only glibc's allocator is tuned")


def test_keeping_freed_memory_is_set_once_per_process():
    """The thresholds are set by mallopt; their effect on page faults is measured by
    bench/allocator_faults.py."""
    probe = "import core.allocator as a\nprint(a.keep_freed_memory(), a.keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


@pytest.mark.slow
def test_release_hands_memory_back():
    probe = ("import torch, core.allocator as a\n"
             "assert a.keep_freed_memory()\n"
             "def rss(): return int(open('/proc/self/statm').read().split()[1])\n"
             "x = [torch.ones(2**20) for _ in range(64)]; del x\n"
             "kept = rss(); a.release_freed_memory(); print(kept - rss())\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 10_000  # pages: 64 freed blocks of 4 MiB, kept until released
