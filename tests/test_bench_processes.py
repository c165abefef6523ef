"""The speed benchmarks run each path in a process of its own, set up as its own program is, and
take turns step by step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.allocator import NO_TCACHE
from core.presets import tiny_config_dict

ROOT = Path(__file__).resolve().parents[1]


def run_bench(module: str, tmp_path: Path, *extra: str) -> dict:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict()))
    cmd = [sys.executable, "-m", module, "--config", str(config), "--batch", "2", "--repeats", "2",
           "--warmup", "1", "--threads", "1", "--no-memory", *extra]
    env = os.environ | {"DDPM_STUDIO_CACHE_DIR": str(tmp_path / "cache")}  # autotune's timings stay here
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_sample_step_times_each_path_in_its_own_process(tmp_path: Path) -> None:
    result = run_bench("bench.sample_step", tmp_path)
    paths = result["paths"]
    assert set(paths) == {"naive", "naive-attention_kernel", "fast"}
    for row in paths.values():
        assert row["step_s"]["n"] == 2 and row["step_s"]["median"] > 0 and row["cpu_s"]["median"] > 0
    # the tutorial's processes keep glibc's allocator, the app's keeps freed memory (and, sampling, its tcache)
    assert not paths["naive"]["malloc_tuned"] and not paths["naive-attention_kernel"]["malloc_tuned"]
    assert paths["fast"]["malloc_tuned"] == (sys.platform == "linux")
    assert all(NO_TCACHE not in row["glibc_tunables"] for row in paths.values())
    assert paths["fast"]["speedup_vs_naive"] == pytest.approx(
        paths["naive"]["step_s"]["median"] / paths["fast"]["step_s"]["median"])
    assert result["settings"]["fast_setup"].startswith("cpu")  # autotune's choice, from the fast process


def test_train_step_reports_what_each_process_resolved(tmp_path: Path) -> None:
    result = run_bench("bench.train_step", tmp_path, "--paths", "naive,fast")
    assert set(result["paths"]) == {"naive", "fast"}
    info = result["settings"]["paths"]
    assert info["naive"]["resolved_precision"] == "fp32" and info["naive"]["attention"] == "tutorial"
    assert info["fast"]["setup"].startswith("cpu")
    # the app's training process starts as `ddpm train` starts it: glibc's tcache off
    tunables = {name: row["glibc_tunables"].split(":") for name, row in result["paths"].items()}
    assert NO_TCACHE in tunables["fast"] and NO_TCACHE not in tunables["naive"]


def test_train_step_names_an_unknown_path(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict()))
    done = subprocess.run([sys.executable, "-m", "bench.train_step", "--config", str(config), "--paths", "naive,fastest"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "unknown path fastest" in done.stderr


def test_alternate_in_one_process_takes_turns() -> None:
    from bench.common import alternate

    calls: list[str] = []
    rows = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # each path warmed up, then one step of each in turn
    assert rows["a"]["step_s"]["n"] == rows["b"]["cpu_s"]["n"] == 3
