"""Exact nearest-code search that never materialises the full N x K distance matrix."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Rows per chunk are chosen so that one chunk of distances holds at most this many elements
# (2**20 fp32 = 4 MiB), which also bounds the extra memory whatever N is.
MAX_CHUNK_ELEMENTS = 2**20

# Codes per block of the two-level argmin (see below).
ARGMIN_BLOCK = 128


def nearest_code(z: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """Index of the nearest code in squared Euclidean distance, ``argmin_k ||z_i - c_k||^2``.

    Exact: the result is the argmin of the fp32 distances of a brute-force search (the first code
    on an exact tie); only float rounding can make two nearly equidistant codes swap.

    Args:
        z: (N, d) inputs.
        codebook: (K, d) codes.
        chunk_size: rows of ``z`` per chunk; default keeps a chunk under ``MAX_CHUNK_ELEMENTS``.

    Returns:
        (N,) long ids.
    """
    n, k = z.shape[0], codebook.shape[0]
    ids = torch.empty(n, dtype=torch.long, device=z.device)
    if n == 0:
        return ids
    if k == 0:
        raise ValueError("nearest_code needs a codebook with at least one code")
    with torch.no_grad():
        # Codes are split into nb blocks of b codes; K is padded to nb*b with dummy codes at
        # distance +inf (zero vector, ||c||^2 = inf), which can never be the minimum.
        b = min(ARGMIN_BLOCK, k)
        nb = math.ceil(k / b)
        kp = nb * b
        c_sq = codebook.pow(2).sum(dim=-1, keepdim=True)  # (K, 1)
        if kp != k:
            codebook = torch.cat([codebook, codebook.new_zeros(kp - k, codebook.shape[1])])
            c_sq = torch.cat([c_sq, c_sq.new_full((kp - k, 1), math.inf)])
        if chunk_size is None:
            chunk_size = max(1, MAX_CHUNK_ELEMENTS // kp)
        chunk_size = min(chunk_size, n)
        z_t = z.t()
        storage = torch.empty(kp * chunk_size, dtype=torch.result_type(z, codebook), device=z.device)
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            rows = end - start
            # Distances of the chunk, transposed: (K, rows) = ||c||^2 - 2 c.z (||z||^2 is constant
            # along k and does not move the argmin). One fused addmm into a reused buffer; the
            # (K,d)x(d,rows) orientation is the faster one for small d on CPU.
            dist = storage[: kp * rows].view(kp, rows)
            torch.addmm(c_sq, codebook, z_t[:, start:end], beta=1.0, alpha=-2.0, out=dist)
            # Two-level argmin, identical to dist.argmin(dim=0) (first index of the minimum) but
            # several times faster on CPU, where the vectorised min is much cheaper than argmin:
            # the minimum of each block, the first block holding the overall minimum, then the
            # first position of that minimum inside the block.
            blocks = dist.view(nb, b, rows)
            best_block = blocks.amin(dim=1).argmin(dim=0)  # (rows,)
            cols = torch.arange(rows, device=z.device)
            within = blocks[best_block, :, cols].argmin(dim=-1)  # (rows, b) candidates -> (rows,)
            ids[start:end] = best_block * b + within
    return ids
