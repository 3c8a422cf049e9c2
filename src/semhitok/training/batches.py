"""Endless, resumable batches: the data position is (epoch, batch index within the epoch)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..data import SampleBatch, collate_samples, shard_indices


@dataclass
class DataPosition:
    """Where the next batch comes from; saved in checkpoints so a resumed run sees the same data."""

    epoch: int = 0
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}


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
    shards) shard themselves over ranks and workers; resuming re-reads and skips the consumed
    batches of the epoch.
    """
    epoch, skip = start.epoch, start.batch
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        if isinstance(dataset, IterableDataset):
            loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples, num_workers=num_workers, drop_last=True)
            index = 0
            for batch in loader:
                index += 1
                if index <= skip:
                    continue
                yield DataPosition(epoch, index), batch
            if index == 0:
                raise ValueError("the dataset yielded no full batch in an epoch (too few images for the batch size?)")
        else:
            indices = shard_indices(len(dataset), rank, world, seed=seed, epoch=epoch, shuffle=True)
            batches = [indices[i : i + batch_size] for i in range(0, len(indices) - batch_size + 1, batch_size)]
            if not batches:
                raise ValueError(f"{len(indices)} images per rank cannot fill one batch of {batch_size}")
            loader = DataLoader(dataset, batch_sampler=batches[skip:], collate_fn=collate_samples, num_workers=num_workers)
            for index, batch in enumerate(loader, start=skip + 1):
                yield DataPosition(epoch, index), batch
        epoch, skip = epoch + 1, 0
