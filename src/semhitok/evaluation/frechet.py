"""Fréchet distance between Gaussians fitted to feature sets (the math behind FID / rFID).

Only torch and numpy are needed. Everything is computed in float64.

``frechet_distance`` evaluates

    d² = ||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr( (S1 S2)^{1/2} )

The awkward term is ``tr((S1 S2)^{1/2})``. ``S1 S2`` is *not* symmetric, so the usual route
(``scipy.linalg.sqrtm(S1 @ S2)``, as in pytorch-fid, or ``eigvals(S1 @ S2).sqrt()`` as in torchmetrics)
goes through a general, complex-valued eigen/Schur decomposition whose round-off shows up as
imaginary parts and tiny negative eigenvalues. We instead use the symmetric matrix

    M = S1^{1/2} S2 S1^{1/2}

which is similar to ``S1 S2`` when ``S1`` is invertible (``S1^{-1/2} (S1 S2) S1^{1/2} = M``) and in
general shares its non-zero eigenvalues (``AB`` and ``BA`` have the same non-zero spectrum, with
``A = S1^{1/2}``, ``B = S1^{1/2} S2``). ``M`` is symmetric positive semi-definite, so
``torch.linalg.eigh`` gives real eigenvalues; we clamp the round-off negatives to 0 and sum their
square roots. ``S1^{1/2}`` itself comes from ``eigh`` of ``S1`` with clamped eigenvalues. This form
copes with singular covariances (fewer samples than dimensions) without any regularisation.

Only if the decomposition fails or produces a non-finite value do we retry with ``eps * I`` added to
both covariances (the fallback pytorch-fid uses when ``sqrtm`` fails) and emit a ``RuntimeWarning``
saying so.

``FeatureStats`` accumulates mean and covariance batch by batch (Chan et al.'s parallel update in
float64), so an evaluation never has to keep all features in memory.
"""

from __future__ import annotations

import warnings
from typing import Optional, Union

import numpy as np
import torch

__all__ = ["FeatureStats", "feature_statistics", "frechet_distance"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    """Return ``x`` as a float64 CPU-or-same-device tensor; reject non-numeric inputs."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, (np.ndarray, np.generic, float, int, list, tuple)):
        t = torch.as_tensor(np.asarray(x))
    else:
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    return t.to(torch.float64)


def _sym_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Principal square root of a symmetric PSD matrix via eigh (negative round-off clamped to 0)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt().unsqueeze(0)) @ v.T


def _trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """tr((s1 s2)^{1/2}) computed from the symmetric form s1^{1/2} s2 s1^{1/2}."""
    r1 = _sym_sqrt(s1)
    m = r1 @ s2 @ r1
    m = 0.5 * (m + m.T)  # remove round-off asymmetry before eigh
    return torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum()


def frechet_distance(
    mu1: ArrayLike,
    sigma1: ArrayLike,
    mu2: ArrayLike,
    sigma2: ArrayLike,
    eps: float = 1e-6,
) -> float:
    """Fréchet (2-Wasserstein) distance² between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: means, shape ``(D,)`` (a scalar is treated as ``D = 1``).
        sigma1, sigma2: covariances, shape ``(D, D)`` (a scalar is treated as ``(1, 1)``). They are
            symmetrised as ``(S + S^T) / 2`` to remove round-off asymmetry.
        eps: ridge added to both covariances only if the stable computation fails (see module doc).

    Returns:
        The distance as a Python float (float64 arithmetic). The exact value is >= 0; a tiny
        negative result from round-off is clamped to 0.

    Raises:
        ValueError: on shape mismatches, non-square covariances, or NaN/inf in the inputs.
    """
    m1 = _as_float64(mu1, "mu1")
    m2 = _as_float64(mu2, "mu2")
    s1 = _as_float64(sigma1, "sigma1")
    s2 = _as_float64(sigma2, "sigma2")
    # Match pytorch-fid's np.atleast_1d / np.atleast_2d handling of the 1-D case.
    m1, m2 = m1.reshape(1) if m1.ndim == 0 else m1, m2.reshape(1) if m2.ndim == 0 else m2
    s1, s2 = s1.reshape(1, 1) if s1.ndim == 0 else s1, s2.reshape(1, 1) if s2.ndim == 0 else s2
    for name, m in (("mu1", m1), ("mu2", m2)):
        if m.ndim != 1:
            raise ValueError(f"{name} must have shape (D,), got {tuple(m.shape)}")
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.ndim != 2 or s.shape[0] != s.shape[1]:
            raise ValueError(f"{name} must be a square (D, D) matrix, got {tuple(s.shape)}")
    if m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 have different shapes: {tuple(m1.shape)} vs {tuple(m2.shape)}")
    if s1.shape != s2.shape:
        raise ValueError(f"sigma1 and sigma2 have different shapes: {tuple(s1.shape)} vs {tuple(s2.shape)}")
    if s1.shape[0] != m1.shape[0]:
        raise ValueError(
            f"means have dimension {m1.shape[0]} but covariances are {tuple(s1.shape)}"
        )
    for name, t in (("mu1", m1), ("mu2", m2), ("sigma1", s1), ("sigma2", s2)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    device = m1.device
    m2, s1, s2 = m2.to(device), s1.to(device), s2.to(device)
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)

    diff = m1 - m2
    try:
        tr_covmean = _trace_sqrt_product(s1, s2)
        ok = bool(torch.isfinite(tr_covmean))
    except RuntimeError:  # torch.linalg.LinAlgError (eigh did not converge) subclasses it
        ok = False
    if not ok:
        warnings.warn(
            f"frechet_distance: eigendecomposition failed or was not finite; adding {eps:g} * I to "
            "both covariances (as pytorch-fid does when sqrtm fails)",
            RuntimeWarning,
            stacklevel=2,
        )
        eye = torch.eye(s1.shape[0], dtype=s1.dtype, device=device)
        tr_covmean = _trace_sqrt_product(s1 + eps * eye, s2 + eps * eye)
    value = diff.dot(diff) + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return max(float(value), 0.0)


def feature_statistics(features: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``features`` ``(N, D)``, as float64 tensors.

    Raises ``ValueError`` unless ``features`` is 2-D with ``N >= 2`` and finite.
    """
    f = _as_float64(features, "features")
    if f.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(f.shape)}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    if not torch.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    mu = f.mean(dim=0)
    c = f - mu
    sigma = c.T @ c / (f.shape[0] - 1)
    return mu, sigma


class FeatureStats:
    """Streaming mean / covariance of feature vectors (float64; Chan et al.'s parallel update).

    Use::

        stats = FeatureStats()
        for batch in loader:
            stats.update(extractor(batch))   # (B, D)
        mu, sigma = stats.mean_cov()         # same as feature_statistics(all features)

    ``merge`` combines two accumulators (e.g. from different processes). The state lives on the
    device of the first batch unless ``device`` is given.
    """

    def __init__(self, dim: Optional[int] = None, device: Optional[Union[str, torch.device]] = None):
        self.dim = dim
        self.device = torch.device(device) if device is not None else None
        self.count = 0
        self._mean: Optional[torch.Tensor] = None
        self._m2: Optional[torch.Tensor] = None  # sum of outer products of deviations from the mean

    def _init_state(self, dim: int, device: torch.device) -> None:
        self.dim = dim
        if self.device is None:
            self.device = device
        self._mean = torch.zeros(dim, dtype=torch.float64, device=self.device)
        self._m2 = torch.zeros(dim, dim, dtype=torch.float64, device=self.device)

    def _combine(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def update(self, features: ArrayLike) -> "FeatureStats":
        """Add a batch ``(B, D)`` (a single ``(D,)`` vector is treated as ``B = 1``)."""
        f = _as_float64(features, "features")
        if f.ndim == 1:
            f = f.unsqueeze(0)
        if f.ndim != 2:
            raise ValueError(f"features must have shape (B, D), got {tuple(f.shape)}")
        if self.dim is not None and f.shape[1] != self.dim:
            raise ValueError(f"expected feature dimension {self.dim}, got {f.shape[1]}")
        if f.shape[0] == 0:
            return self
        if not torch.isfinite(f).all():
            raise ValueError("features contain NaN or inf")
        if self._mean is None:
            self._init_state(f.shape[1], f.device)
        f = f.to(self.device)
        mean_b = f.mean(dim=0)
        c = f - mean_b
        self._combine(f.shape[0], mean_b, c.T @ c)
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Fold another accumulator into this one (in place) and return ``self``."""
        if other.count == 0:
            return self
        if self.dim is not None and other.dim != self.dim:
            raise ValueError(f"cannot merge stats of dimension {other.dim} into dimension {self.dim}")
        if self._mean is None:
            self._init_state(other.dim, other._mean.device)
        self._combine(other.count, other._mean.to(self.device), other._m2.to(self.device))
        return self

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of everything seen so far."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        return self._mean.clone(), self._m2 / (self.count - 1)
