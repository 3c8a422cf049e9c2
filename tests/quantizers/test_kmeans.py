"""k-means used for codebook init: k-means++ seeding finds separated clusters; fallback for large K."""

import torch

from semhitok.quantizers import kmeans as kmeans_module
from semhitok.quantizers.kmeans import kmeans, kmeans_plus_plus

CENTRES = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [0.0, -10.0]])


def _blobs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (CENTRES[:, None] + torch.randn(4, 100, 2, generator=g)).reshape(-1, 2)


def _found_all(centroids: torch.Tensor) -> bool:
    return bool((torch.cdist(CENTRES, centroids).min(dim=1).values < 1.0).all())


def test_kmeans_finds_four_separated_clusters_for_almost_every_seed():
    """With a uniform random start, about half the seeds leave one cluster without a centroid
    (measured 25/50); k-means++ seeding must get nearly all of them."""
    found = sum(_found_all(kmeans(_blobs(s), 4, 10, torch.Generator().manual_seed(s))) for s in range(20))
    assert found >= 18


def test_kmeans_plus_plus_spreads_the_start():
    """Each k-means++ seed is a sample, and the four seeds land in four different clusters."""
    samples = _blobs(0)
    seeds = kmeans_plus_plus(samples, 4, torch.Generator().manual_seed(0))
    assert all(bool((samples == s).all(dim=1).any()) for s in seeds)
    owner = torch.cdist(seeds, CENTRES).argmin(dim=1)
    assert owner.unique().numel() == 4


def test_large_codebooks_fall_back_to_a_uniform_start(monkeypatch):
    """Above the work budget no k-means++ pass runs, and the result is still a Lloyd fixed point."""
    monkeypatch.setattr(kmeans_module, "KMEANS_PP_MAX_WORK", 0)
    monkeypatch.setattr(kmeans_module, "kmeans_plus_plus", lambda *a, **k: (_ for _ in ()).throw(AssertionError("called")))
    samples = _blobs(1)
    centroids = kmeans(samples, 8, 50, torch.Generator().manual_seed(0))  # enough passes to converge
    assign = torch.cdist(samples, centroids).argmin(dim=1)
    for k in assign.unique():
        torch.testing.assert_close(centroids[k], samples[assign == k].mean(dim=0))


def test_fewer_samples_than_clusters():
    samples = torch.randn(3, 5)
    centroids = kmeans(samples, 8, 3, torch.Generator().manual_seed(0))
    assert centroids.shape == (8, 5)
    # each sample is its own cluster: the centroid nearest to it is the sample itself
    assert torch.isfinite(centroids).all()
    used = torch.cdist(samples, centroids).argmin(dim=1)
    torch.testing.assert_close(centroids[used], samples)
