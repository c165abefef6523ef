"""core.allocator: glibc keeps freed memory for the next step and hands it back when asked, and
processes that train start with its tcache off.

How many page faults this saves is a benchmark (bench/allocator_faults.py), not a unit test.
"""
from __future__ import annotations

import os
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


def test_the_tuned_environment_adds_no_tcache_once_and_keeps_other_tunables():
    env = allocator.tuned_environment({"PATH": "/bin", allocator.TUNABLES_ENV: "glibc.malloc.arena_max=2"})
    assert env == {"PATH": "/bin", allocator.TUNABLES_ENV: f"glibc.malloc.arena_max=2:{allocator.NO_TCACHE}"}
    assert allocator.tuned_environment(env) == env
    assert allocator.tuned_environment({})[allocator.TUNABLES_ENV] == allocator.NO_TCACHE


def test_a_command_restarts_itself_once_with_tcache_off():
    """What runs after restart_tuned runs in the new process only (the old one never gets there),
    with glibc's tcache off: a second-stage flag shows the restart happened exactly once."""
    probe = ("import os, core.allocator as a\n"
             "print('started', flush=True)\n"
             "a.restart_tuned()\n"
             "print(os.environ[a.TUNABLES_ENV])\n")
    env = {k: v for k, v in os.environ.items() if k != allocator.TUNABLES_ENV}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["started", "started", allocator.NO_TCACHE]


def test_the_window_starts_its_fork_server_with_tcache_off(monkeypatch):
    """Runs are forked from the fork server, which keeps the allocator it started with."""
    from core import training_process

    monkeypatch.delenv(allocator.TUNABLES_ENV, raising=False)
    if training_process._context().get_start_method() != "forkserver":
        pytest.skip("runs spawn here")
    assert allocator.NO_TCACHE in os.environ[allocator.TUNABLES_ENV].split(":")
