"""Plain Lloyd k-means used to initialise a codebook from data."""

from __future__ import annotations

import torch
from torch import Tensor

from .nearest import nearest_code


def kmeans(samples: Tensor, num_clusters: int, iters: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Cluster (N, d) samples into (num_clusters, d) centroids.

    Centroids start at randomly drawn samples (with replacement when N < num_clusters); a cluster
    that loses all its samples keeps its previous centroid.
    """
    n, d = samples.shape
    if n == 0:
        raise ValueError("k-means needs at least one sample")
    replace = n < num_clusters
    if replace:
        idx = torch.randint(n, (num_clusters,), generator=generator, device="cpu")
    else:
        idx = torch.randperm(n, generator=generator, device="cpu")[:num_clusters]
    centroids = samples[idx.to(samples.device)].clone()
    for _ in range(iters):
        assign = nearest_code(samples, centroids)
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
    return centroids
