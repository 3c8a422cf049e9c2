"""Exact nearest-code search that never materialises the full N x K distance matrix."""

from __future__ import annotations

import torch
from torch import Tensor

# Rows per chunk are chosen so that one chunk of distances holds at most this many elements
# (2**19 fp32 = 2 MiB, about one core's L2 cache: the distances are written and re-read
# by the argmin while still in cache), which also bounds the extra memory whatever N is.
MAX_CHUNK_ELEMENTS = 2**19


def nearest_code(z: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """Index of the nearest code in squared Euclidean distance, ``argmin_k ||z_i - c_k||^2``.

    Args:
        z: (N, d) inputs.
        codebook: (K, d) codes.
        chunk_size: rows of ``z`` per chunk; default keeps a chunk under ``MAX_CHUNK_ELEMENTS``.

    Returns:
        (N,) long ids.
    """
    n, k = z.shape[0], codebook.shape[0]
    if chunk_size is None:
        chunk_size = max(1, MAX_CHUNK_ELEMENTS // max(k, 1))
    # ||z||^2 is constant along k and does not move the argmin, so only ||c||^2 - 2 z.c is formed,
    # in one fused addmm per chunk.
    c_sq = codebook.pow(2).sum(dim=-1)
    codebook_t = codebook.t()
    ids = torch.empty(n, dtype=torch.long, device=z.device)
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        dist = torch.addmm(c_sq, z[start:end], codebook_t, beta=1.0, alpha=-2.0)
        ids[start:end] = dist.argmin(dim=-1)
    return ids
