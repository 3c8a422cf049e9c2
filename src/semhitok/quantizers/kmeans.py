"""Lloyd k-means used to initialise a codebook from data."""

from __future__ import annotations

import torch
from torch import Tensor

from .nearest import nearest_code

# k-means++ costs num_clusters sequential passes over the samples; above this many
# (cluster, sample) pairs the seeding falls back to a uniform draw.
KMEANS_PP_MAX_WORK = 2**24


def kmeans(samples: Tensor, num_clusters: int, iters: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Cluster (N, d) samples into (num_clusters, d) centroids.

    Centroids start from k-means++ seeding when ``num_clusters * N <= KMEANS_PP_MAX_WORK`` (its
    loop is sequential in the number of clusters: a 16384-code book would take minutes on a CPU),
    else from distinct uniformly drawn samples. After each update a centroid that lost all its samples
    is moved to the sample farthest from its own centroid (one per empty cluster), which splits the
    worst-served cluster. The last pass is a plain assignment + mean, so every used centroid is the
    mean of the samples nearest to it.
    """
    n, d = samples.shape
    if n == 0:
        raise ValueError("k-means needs at least one sample")
    if num_clusters * n <= KMEANS_PP_MAX_WORK:
        centroids = kmeans_plus_plus(samples, num_clusters, generator)
    else:  # large codebooks: k-means++ is sequential in K, so draw distinct samples uniformly
        if n < num_clusters:
            idx = torch.randint(n, (num_clusters,), generator=generator)
        else:
            idx = torch.randperm(n, generator=generator)[:num_clusters]
        centroids = samples[idx.to(samples.device)].clone()
    for step in range(iters + 1):
        assign = nearest_code(samples, centroids)
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
        empty = (~nonempty).nonzero().squeeze(1)
        if step == iters or empty.numel() == 0:
            continue
        spread = (samples - centroids[assign]).pow(2).sum(dim=1)
        far = spread.topk(min(empty.numel(), n)).indices
        centroids[empty[: far.numel()]] = samples[far]
    return centroids


def kmeans_plus_plus(samples: Tensor, num_clusters: int, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding: each next centroid is a sample drawn with probability ~ D(x)^2, its
    squared distance to the nearest centroid so far. Spreads the start over the data, where a
    uniform draw often puts two centroids in one cluster and none in another.

    O(num_clusters * N * d) in one pass; with fewer distinct samples than clusters, the surplus
    centroids repeat samples.
    """
    n = samples.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = samples.new_empty(num_clusters, samples.shape[1])
    centroids[0] = samples[first]
    nearest_sq = (samples - centroids[0]).pow(2).sum(dim=1)
    for i in range(1, num_clusters):
        cumulative = torch.cumsum(nearest_sq, dim=0)
        total = float(cumulative[-1])
        if total > 0:  # inverse-CDF draw: cheaper than torch.multinomial inside this loop
            target = float(torch.rand((), generator=generator)) * total
            pick = min(int(torch.searchsorted(cumulative, cumulative.new_tensor([target]), right=True)), n - 1)
        else:  # every sample already coincides with a centroid
            pick = int(torch.randint(n, (1,), generator=generator))
        centroids[i] = samples[pick]
        torch.minimum(nearest_sq, (samples - centroids[i]).pow(2).sum(dim=1), out=nearest_sq)
    return centroids
