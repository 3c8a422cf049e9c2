"""The few collectives the codebooks need. All are no-ops in a single process.

EMA codebooks are buffers, which DDP does not synchronise by gradient; keeping them identical on
every rank is the quantizer's own job: sum the statistics, and let rank 0 decide anything random.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import is_distributed, rank, world_size

__all__ = ["all_reduce_sum_", "broadcast_", "gather_rows", "is_distributed", "rank", "world_size"]


def all_reduce_sum_(t: Tensor) -> Tensor:
    """In-place sum over ranks."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """In-place copy of rank ``src``'s tensor to every rank."""
    if is_distributed():
        dist.broadcast(t, src=src)
    return t


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate the (n_r, ...) tensors of all ranks along dim 0; n_r may differ between ranks."""
    if not is_distributed():
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_int = [int(s) for s in sizes]
    padded = x.new_zeros((max(sizes_int), *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes_int)], dim=0)
