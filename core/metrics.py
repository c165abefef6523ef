"""FID and KID from Inception features: pure numpy maths, no network here (see :mod:`core.inception`).

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to two feature sets. It
is biased at small N (it grows as N shrinks), so two FIDs are comparable only at equal N; that is
why every score comes with the same metric for real against real images at the same N.

KID (Bińkowski et al. 2018) is the unbiased estimate of MMD² with the cubic polynomial kernel
``k(x, y) = (x·y / d + 1)^3``, averaged over random subsets (mean ± std): unbiased, so it means
the same at the N a laptop can afford.

The matrix square root of FID needs no scipy: ``tr sqrt(S1 S2)`` is the sum of the square roots of
the eigenvalues of ``S1 S2``, which are those of the symmetric ``sqrt(S1) S2 sqrt(S1)``, so two
symmetric eigen-decompositions give it exactly (and real by construction, where ``sqrtm`` of the
non-symmetric product leaves imaginary round-off to discard).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


@dataclass(frozen=True)
class Gaussian:
    """Mean and covariance of a feature set, and how many rows they came from."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def of(cls, feats: np.ndarray) -> Gaussian:
        feats = np.asarray(feats, dtype=np.float64)
        return cls(feats.mean(axis=0), np.cov(feats, rowvar=False), len(feats))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (round-off negative eigenvalues count as 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr sqrt(s1 @ s2)`` for symmetric positive semi-definite s1, s2."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def fid(a: Gaussian, b: Gaussian) -> float:
    """Fréchet distance ``|mu1 - mu2|² + tr(S1 + S2 - 2 sqrt(S1 S2))``."""
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt_product(a.sigma, b.sigma))


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic kernel: the diagonal terms k(x_i, x_i) are left out."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kid(
    x: np.ndarray, y: np.ndarray, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0
) -> tuple[float, float]:
    """KID as (mean, std) of MMD² over ``subsets`` random subsets of ``min(subset_size, N)`` rows each."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 feature rows on each side, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
