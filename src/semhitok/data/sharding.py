"""Deterministic splitting of data over ranks (processes) and DataLoader workers.

Two kinds of reader need two kinds of split:

* map-style datasets (image folders, Fashion-MNIST) split *indices*: :func:`shard_indices` is
  ``torch.utils.data.DistributedSampler`` as a plain function -- every rank gets the same number of
  indices (so no rank runs out of batches first and hangs a collective), padded by wrapping around
  the (shuffled) order, and the shuffle depends only on ``(seed, epoch)``.
* iterable datasets (webdataset tar shards) split *shards*: :func:`worker_shard` gives shard ``i``
  to global worker ``g = rank * num_workers + worker_id`` exactly when
  ``i % (world * num_workers) == g``. Every shard is read by exactly one worker in the job.

  **Fewer shards than global workers** (``len(shards) < world * num_workers``): the workers with
  ``g >= len(shards)`` get no shard and yield nothing (a warning is logged). Every sample is still
  read exactly once, but ranks may see different numbers of samples, and in DDP a rank that runs
  dry first would wait forever in the next all-reduce. Use at least ``world * num_workers`` shards
  (ideally many more), or drive training by a fixed number of steps over a repeated stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TypeVar

import torch

__all__ = ["current_rank_and_world", "current_worker", "shard_indices", "worker_shard"]

T = TypeVar("T")

logger = logging.getLogger("semhitok.data")


def shard_indices(n: int, rank: int, world: int, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> list[int]:
    """The dataset indices rank ``rank`` of ``world`` reads in epoch ``epoch``.

    Every rank gets ``ceil(n / world)`` indices. The global order (a permutation seeded by
    ``seed + epoch`` when ``shuffle``, else ``0..n-1``) is padded to ``world * ceil(n / world)`` by
    wrapping around to its start, then dealt out round-robin: rank r takes positions
    ``r, r + world, r + 2 world, ...``. Hence the ranks together cover every index, and only the
    ``world * ceil(n / world) - n`` padding items are read twice.

    Args:
        n: dataset length (>= 0). ``n == 0`` gives empty lists.
        rank: this process, in ``[0, world)``.
        world: number of processes (>= 1).
        seed, epoch: the shuffle is a function of ``seed + epoch`` only (the same on every rank).
        shuffle: permute the order; ``False`` keeps ``0..n-1``.

    Returns:
        list of ``ceil(n / world)`` ints in ``[0, n)``.
    """
    _check_rank(rank, world, "rank", "world")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if n == 0:
        return []
    if shuffle:
        g = torch.Generator().manual_seed(int(seed) + int(epoch))
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    per_rank = math.ceil(n / world)
    total = per_rank * world
    # Tile rather than slice once: with world > n the padding is longer than the data itself.
    padded = (order * math.ceil(total / n))[:total]
    return padded[rank:total:world]


def worker_shard(items: Sequence[T], rank: int, world: int, worker_id: int, num_workers: int) -> list[T]:
    """The items (shards) that global worker ``rank * num_workers + worker_id`` reads.

    Item ``i`` goes to that worker iff ``i % (world * num_workers) == rank * num_workers + worker_id``;
    the lists of all (rank, worker) pairs partition ``items``. See the module docstring for what
    happens when there are fewer items than workers.
    """
    _check_rank(rank, world, "rank", "world")
    _check_rank(worker_id, num_workers, "worker_id", "num_workers")
    total = world * num_workers
    index = rank * num_workers + worker_id
    mine = [item for i, item in enumerate(items) if i % total == index]
    if not mine:
        logger.warning(
            "worker %d of rank %d gets no shard: %d shards for %d workers in total (%d ranks x %d workers); "
            "it yields nothing -- use at least as many shards as workers",
            worker_id, rank, len(items), total, world, num_workers,
        )
    return mine


def current_worker() -> tuple[int, int]:
    """``(worker_id, num_workers)`` of the DataLoader worker running this code; ``(0, 1)`` outside one."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))


def current_rank_and_world() -> tuple[int, int]:
    """``(rank, world)`` of the process group when one is initialised; ``(0, 1)`` otherwise."""
    from semhitok import distributed

    return distributed.rank(), distributed.world_size()


def _check_rank(rank: int, world: int, rank_name: str, world_name: str) -> None:
    for name, v in ((rank_name, rank), (world_name, world)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    if world < 1:
        raise ValueError(f"{world_name} must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"{rank_name} must be in [0, {world}), got {rank}")
