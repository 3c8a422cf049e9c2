"""Endless, resumable batches: the data position is (epoch, batch index within the epoch).

Nothing here draws from the global torch RNG. A ``DataLoader`` without a ``generator`` draws its
workers' base seed from the global RNG each time an iterator is created, and a resumed run creates
one more iterator than an uninterrupted one (the epoch it resumes in): every later draw from the
global RNG (dead-code restarts, k-means) would then differ. Each loader here gets its own generator
seeded from (seed, epoch, rank), so a resume replays the exact same stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..data import SampleBatch, collate_samples, sample_generator, shard_indices

logger = logging.getLogger("semhitok.training")


@dataclass
class DataPosition:
    """Where the next batch comes from; saved in checkpoints so a resumed run sees the same data."""

    epoch: int = 0
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}


def loader_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The DataLoader's own generator for this (seed, epoch, rank) (worker base seeds come from it)."""
    return sample_generator(seed, epoch, f"dataloader-rank-{rank}")


def epoch_batches(n: int, batch_size: int, *, rank: int, world: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's full batches of dataset indices in ``epoch`` (a seeded permutation, see
    ``shard_indices``).

    A rank with fewer images than one batch repeats its (shuffled) images to fill exactly one batch
    per epoch, so a handful of photos still trains; :func:`iterate_batches` warns about it.
    """
    indices = shard_indices(n, rank, world, seed=seed, epoch=epoch, shuffle=True)
    if not indices:
        raise ValueError("the dataset is empty: no image to train on")
    if len(indices) < batch_size:
        indices = (indices * math.ceil(batch_size / len(indices)))[:batch_size]
    return [indices[i : i + batch_size] for i in range(0, len(indices) - batch_size + 1, batch_size)]


def iterate_batches(
    dataset: Dataset | IterableDataset,
    batch_size: int,
    *,
    rank: int,
    world: int,
    seed: int,
    num_workers: int,
    start: DataPosition,
) -> Iterator[tuple[DataPosition, SampleBatch]]:
    """Yield ``(position after this batch, batch)`` forever, epoch after epoch, from ``start``.

    Map-style datasets: each epoch, this rank's share of a seeded permutation (``shard_indices``)
    cut into full batches; resuming jumps straight to the batch. Iterable datasets (webdataset
    shards, in a seeded per-epoch shard order) shard themselves over ranks and workers; resuming
    re-reads and skips the consumed batches of the epoch.
    """
    if not isinstance(dataset, IterableDataset):
        per_rank = math.ceil(len(dataset) / world)  # type: ignore[arg-type]
        if 0 < per_rank < batch_size:
            logger.warning(
                "only %d image(s) per rank for a batch of %d: each batch repeats images "
                "(add images or lower data.batch_size)", per_rank, batch_size,
            )
    epoch, skip = start.epoch, start.batch
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        generator = loader_generator(seed, epoch, rank)
        if isinstance(dataset, IterableDataset):
            loader = DataLoader(
                dataset, batch_size=batch_size, collate_fn=collate_samples, num_workers=num_workers,
                drop_last=True, generator=generator,
            )
            index = 0
            for batch in loader:
                index += 1
                if index <= skip:
                    continue
                yield DataPosition(epoch, index), batch
            if index == 0:
                raise ValueError("the dataset yielded no full batch in an epoch (too few images for the batch size?)")
        else:
            batches = epoch_batches(len(dataset), batch_size, rank=rank, world=world, seed=seed, epoch=epoch)  # type: ignore[arg-type]
            loader = DataLoader(
                dataset, batch_sampler=batches[skip:], collate_fn=collate_samples, num_workers=num_workers,
                generator=generator,
            )
            for index, batch in enumerate(loader, start=skip + 1):
                yield DataPosition(epoch, index), batch
        epoch, skip = epoch + 1, 0
