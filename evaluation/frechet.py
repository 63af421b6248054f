"""Fréchet distance between Gaussians fitted to features (FID, FVD).

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), computed as pytorch-fid does
(`scipy.linalg.sqrtm` of the product, without the `disp` argument newer SciPy removes; eps * I
added to both covariances when the product's root is not finite; a small imaginary part from
rounding is dropped, a large one is an error).
Covariances: FID uses the sample covariance (N-1, `np.cov`, as pytorch-fid); FVD the population
covariance (N, as StyleGAN-V's FeatureStats), so each matches its published implementation.
"""

from __future__ import annotations

import numpy as np


def feature_stats(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D,D]` (float64) of features `[N,D]`; `ddof` 1 = sample
    covariance (FID), 0 = population covariance (FVD)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}: "
                         "evaluate more frames or clips")
    mu = x.mean(axis=0)
    d = x - mu
    return mu, d.T @ d / (x.shape[0] - ddof)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: means {mu1.shape} vs {mu2.shape}, covariances "
                         f"{sigma1.shape} vs {sigma2.shape}; were both computed with the same network?")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has an imaginary part of {np.max(np.abs(covmean.imag)):.3g}; "
                             "the covariances are degenerate (too few samples for the feature size?)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
