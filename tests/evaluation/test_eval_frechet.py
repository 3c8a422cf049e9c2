"""Fréchet distance, feature statistics and the streaming accumulator."""

import math
import warnings

import numpy as np
import pytest
import torch

from semhitok.evaluation.frechet import FeatureStats, feature_statistics, frechet_distance


def _random_spd(d, rng, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


def _reference_fid(mu1, s1, mu2, s2):
    """Reference: scipy.linalg.sqrtm of the non-symmetric product (pytorch-fid's formula) if scipy
    is available, else the eigenvalues of s1 @ s2 via numpy's general eig (torchmetrics' formula)."""
    try:
        from scipy import linalg
    except ImportError:  # pragma: no cover - scipy is installed here
        tr = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    else:
        tr = np.trace(linalg.sqrtm(s1 @ s2)).real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(32), _random_spd(32, rng)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 10), rng.uniform(0.1, 3.0, 10)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_one_dimensional_case_scalars_and_arrays():
    # N(1, 4) vs N(-2, 9): (1+2)^2 + (2-3)^2 = 10
    assert frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(10.0, rel=1e-12)
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == (
        pytest.approx(10.0, rel=1e-12)
    )


def test_symmetric_and_accepts_torch_and_numpy():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    s1, s2 = _random_spd(16, rng), _random_spd(16, rng)
    d12 = frechet_distance(mu1, s1, mu2, s2)
    d21 = frechet_distance(torch.from_numpy(mu2), torch.from_numpy(s2).float(), mu1, s1)
    assert d12 > 0
    assert d12 == pytest.approx(d21, rel=1e-6)  # one input went through float32


def test_matches_sqrtm_reference():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(64), rng.standard_normal(64)
    s1, s2 = _random_spd(64, rng), _random_spd(64, rng)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_reference_fid(mu1, s1, mu2, s2), rel=1e-8)


def test_singular_and_near_singular_covariances_stay_finite():
    rng = np.random.default_rng(4)
    d = 48
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    # Rank 10 < D: what happens with fewer images than feature dimensions.
    s1, s2 = _random_spd(d, rng, rank=10), _random_spd(d, rng, rank=10)
    s1_near = s1 + 1e-12 * np.eye(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the eps fallback must not be needed here
        got = frechet_distance(mu1, s1_near, mu2, s2)
        got_exact_singular = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(got) and got > 0
    assert got == pytest.approx(got_exact_singular, rel=1e-6)
    # pytorch-fid's regularised reference (sqrtm of (s1 + eps I)(s2 + eps I)) agrees closely.
    eye = 1e-6 * np.eye(d)
    assert got == pytest.approx(_reference_fid(mu1, s1 + eye, mu2, s2 + eye), rel=1e-4)
    # Identical singular statistics still give 0.
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_shape_and_value_validation():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="square"):
        frechet_distance(mu, np.ones((3, 2)), mu, s)
    with pytest.raises(ValueError, match="dimension 3"):
        frechet_distance(mu, np.eye(4), mu, np.eye(4))
    with pytest.raises(ValueError, match=r"shape \(D,\)"):
        frechet_distance(np.zeros((3, 1)), s, mu, s)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0, 0]), s, mu, s)
    with pytest.raises(ValueError, match="numpy array or torch tensor"):
        frechet_distance("abc", s, mu, s)


def test_feature_statistics_matches_numpy():
    x = np.random.default_rng(5).standard_normal((50, 7)) * 3 + 1
    mu, sigma = feature_statistics(x)
    assert mu.dtype == torch.float64 and sigma.shape == (7, 7)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x, rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(x[:1])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        feature_statistics(x[0])


def test_streaming_accumulator_equals_one_shot():
    # Large offset: a naive sum-of-squares formula would lose precision here in float32.
    x = torch.randn(103, 12) + 1000.0
    stats = FeatureStats()
    for chunk in torch.split(x, [1, 17, 40, 0, 45]):
        stats.update(chunk.float())
    mu, sigma = stats.mean_cov()
    mu_ref, sigma_ref = feature_statistics(x)
    assert stats.count == 103 and stats.dim == 12
    torch.testing.assert_close(mu, mu_ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(sigma, sigma_ref, rtol=1e-9, atol=1e-9)
    # merge() of two halves equals the whole
    a, b = FeatureStats().update(x[:60]), FeatureStats().update(x[60:])
    mu_m, sigma_m = a.merge(b).mean_cov()
    torch.testing.assert_close(sigma_m, sigma_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mu_m, mu_ref, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="dimension 12"):
        stats.update(torch.randn(2, 5))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats().update(torch.randn(1, 3)).mean_cov()


class _RandomFeatures(torch.nn.Module):
    """A fixed random conv feature extractor returning (N, D) float64 features."""

    num_features = 24

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 24, kernel_size=4, stride=4)

    def forward(self, x):
        return torch.tanh(self.conv(x.float())).mean(dim=(2, 3)).double()


@pytest.mark.slow
def test_agrees_with_torchmetrics_fid_using_same_extractor():
    from torchmetrics.image.fid import FrechetInceptionDistance

    net = _RandomFeatures().eval()
    real = torch.rand(96, 3, 32, 32)
    fake = (real * 0.7 + 0.3 * torch.rand(96, 3, 32, 32)).clamp(0, 1) ** 1.5
    metric = FrechetInceptionDistance(feature=net, normalize=True)
    stats_real, stats_fake = FeatureStats(), FeatureStats()
    with torch.no_grad():
        for r, f in zip(real.split(32), fake.split(32)):
            metric.update(r, real=True)
            metric.update(f, real=False)
            stats_real.update(net(r))
            stats_fake.update(net(f))
        expected = float(metric.compute())
    got = frechet_distance(*stats_real.mean_cov(), *stats_fake.mean_cov())
    assert expected > 1e-4  # a non-trivial distance
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-12)  # observed ~1e-15 relative
