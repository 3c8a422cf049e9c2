"""The item every reader yields (:class:`Sample`), its batch (:class:`SampleBatch`), and the
per-sample random generator that makes augmentation independent of worker/rank assignment."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Sample", "SampleBatch", "collate_samples", "sample_generator"]


@dataclass
class Sample:
    """One training example.

    Attributes:
        image: float32 (3, S, S) in [0, 1].
        label: class index, or None when the source has no labels.
        caption: text describing the image, or None.
        key: a stable identifier (relative path, tar key, ``split/index``) for logs and debugging.
    """

    image: Tensor
    label: int | None
    caption: str | None
    key: str


@dataclass
class SampleBatch:
    """A collated batch.

    Attributes:
        images: float32 (B, 3, S, S).
        labels: long (B,) with -1 where a sample has no label, or None when no sample has one.
        captions: B strings or None.
        keys: B keys.
    """

    images: Tensor
    labels: Tensor | None
    captions: list[str | None]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def collate_samples(samples: Sequence[Sample]) -> SampleBatch:
    """``collate_fn`` for ``torch.utils.data.DataLoader`` (the default one cannot stack dataclasses)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    labels = [s.label for s in samples]
    label_tensor = None if all(lb is None for lb in labels) else torch.tensor([-1 if lb is None else lb for lb in labels], dtype=torch.long)
    return SampleBatch(
        images=torch.stack([s.image for s in samples]),
        labels=label_tensor,
        captions=[s.caption for s in samples],
        keys=[s.key for s in samples],
    )


def sample_generator(seed: int, epoch: int, item: int | str) -> torch.Generator:
    """A generator seeded from (seed, epoch, item): the same sample gets the same augmentation in
    the same epoch on any rank or worker, and a different one next epoch. String items (tar keys)
    are hashed with CRC32, which, unlike ``hash``, does not change between processes."""
    item_int = zlib.crc32(item.encode("utf-8")) if isinstance(item, str) else int(item)
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, item_int & 0xFFFFFFFFFFFF]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
