"""FID and KID maths on small fake feature matrices (no network): exactness, symmetry, bias."""
from __future__ import annotations

import numpy as np
import pytest

from core import metrics


def _feats(n: int, d: int = 16, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """n rows of one fixed correlated Gaussian (shifted by ``shift``); ``seed`` picks the rows."""
    mix = np.random.default_rng(12345).normal(size=(d, d)) / np.sqrt(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix + shift


def _sqrtm_by_iteration(a: np.ndarray) -> np.ndarray:
    """Denman-Beavers iteration: an independent matrix square root for a non-symmetric product."""
    y, z = a.copy(), np.eye(len(a))
    for _ in range(60):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    return y


def test_trace_sqrt_product_matches_an_independent_sqrtm():
    s1 = np.cov(_feats(200, seed=1), rowvar=False)
    s2 = np.cov(_feats(200, seed=2), rowvar=False)
    assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(np.trace(_sqrtm_by_iteration(s1 @ s2)), rel=1e-9)


def test_fid_of_two_gaussians_has_the_closed_form():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a = metrics.Gaussian(np.zeros(3), np.diag([1.0, 4.0, 9.0]), 10)
    b = metrics.Gaussian(np.array([1.0, 0.0, 2.0]), np.diag([4.0, 4.0, 1.0]), 10)
    assert metrics.fid(a, b) == pytest.approx(5 + 1 + 0 + 4)


def test_fid_of_identical_sets_is_zero_and_fid_is_symmetric():
    x, y = _feats(300, seed=3), _feats(300, shift=0.5, seed=4)
    gx, gy = metrics.Gaussian.of(x), metrics.Gaussian.of(y)
    assert metrics.fid(gx, gx) == pytest.approx(0, abs=1e-8)
    assert metrics.fid(gx, gy) == pytest.approx(metrics.fid(gy, gx), rel=1e-9)
    assert metrics.fid(gx, gy) > 16 * 0.25 * 0.9  # the mean shift alone gives d * 0.5^2


def test_fid_of_rank_deficient_covariances_is_finite_and_real():
    # fewer rows than dimensions, as at N = 1000 with 2048 features
    x, y = _feats(10, d=32, seed=5), _feats(10, d=32, seed=6)
    value = metrics.fid(metrics.Gaussian.of(x), metrics.Gaussian.of(y))
    assert np.isfinite(value) and value > 0


def test_mmd2_unbiased_averages_to_zero_for_one_distribution():
    # the biased estimator (diagonal kept) is positive on average for equal distributions
    values = [metrics.mmd2_unbiased(_feats(20, seed=2 * i), _feats(20, seed=2 * i + 1)) for i in range(300)]
    spread = np.std(values) / np.sqrt(len(values))
    assert abs(np.mean(values)) < 3 * spread


def test_mmd2_matches_a_direct_double_sum():
    x, y = _feats(5, d=4, seed=7), _feats(6, d=4, shift=1.0, seed=8)
    k = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / 30
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / 30
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_kid_sees_a_shift_and_reports_a_spread():
    x, y = _feats(200, seed=9), _feats(200, shift=0.5, seed=10)
    same_mean, _ = metrics.kid(x, _feats(200, seed=11), subset_size=100, subsets=20)
    shifted_mean, shifted_std = metrics.kid(x, y, subset_size=100, subsets=20)
    assert shifted_mean > 10 * abs(same_mean)
    assert shifted_std > 0


def test_kid_refuses_fewer_than_two_rows():
    with pytest.raises(ValueError):
        metrics.kid(_feats(1), _feats(5))
