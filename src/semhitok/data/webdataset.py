"""Webdataset ``.tar`` shards in the img2dataset layout (the format COYO / LAION / DataComp ship in).

Each sample is a group of tar members sharing a key: ``KEY.jpg`` (or ``.jpeg`` / ``.png`` /
``.webp``) and a caption in ``KEY.txt`` and/or ``KEY.json`` (field ``"caption"``; ``.txt`` wins).
Reading the tar stream and grouping members by key is done by the ``webdataset`` package
(``webdataset.tariterators.tarfile_samples``); the shard split, decoding and bad-data policy are ours:

* shards are split over ranks *and* DataLoader workers by :func:`semhitok.data.sharding.worker_shard`
  (every shard read by exactly one worker of the job; see there for fewer shards than workers);
* an image member that does not decode, a sample without an image, or an unreadable shard is
  skipped, counted and logged by the :class:`BadDataTracker`, which stops the run past its threshold.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import braceexpand
import torch
import webdataset.tariterators as wds_tar
from PIL import Image, UnidentifiedImageError
from torch.utils.data import IterableDataset

from semhitok.data.bad_files import BadDataTracker
from semhitok.data.sample import Sample, sample_generator
from semhitok.data.sharding import current_rank_and_world, current_worker, worker_shard
from semhitok.data.transforms import ImageTransform, TransformConfig
from semhitok.image_io import pil_to_tensor

__all__ = ["IMAGE_MEMBER_EXTENSIONS", "WebDatasetReader", "expand_shards", "is_shard_spec"]

logger = logging.getLogger("semhitok.data")

# Preference order when a sample carries several images.
IMAGE_MEMBER_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def is_shard_spec(spec: str | Path | Sequence[str | Path]) -> bool:
    """Whether ``spec`` names tar shards: a ``.tar`` path, a brace pattern, or a list of those."""
    if isinstance(spec, (list, tuple)):
        return len(spec) > 0 and all(is_shard_spec(s) for s in spec)
    s = str(spec)
    return s.endswith(".tar") or ("{" in s and ".." in s and "}" in s)


def expand_shards(spec: str | Path | Sequence[str | Path], check_exist: bool = True) -> list[str]:
    """Shard paths from a path, a brace pattern (``shards-{000..009}.tar``), or a list of either.

    Order is kept as given (the sharding relies on every rank agreeing on it).

    Raises:
        ValueError: no shard at all. FileNotFoundError: a shard is missing (with ``check_exist``).
    """
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    shards = [s for item in items for s in braceexpand.braceexpand(str(item))]
    if not shards:
        raise ValueError(f"no shards in {spec!r}")
    if check_exist:
        missing = [s for s in shards if not Path(s).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(shards)} shards do not exist (first: {missing[0]})")
    return shards


class WebDatasetReader(IterableDataset[Sample]):
    """Iterable dataset over tar shards; yields :class:`Sample` (label None).

    In a ``DataLoader`` with ``num_workers=W`` under DDP, each worker reads the shards of global
    worker ``rank * W + worker_id`` (rank and world from ``torch.distributed`` unless given).

    Args:
        shards: see :func:`expand_shards`.
        transform: a :class:`TransformConfig` or :class:`ImageTransform`.
        seed: seeds the per-sample augmentation (by tar key) and the shard shuffle.
        shuffle_shards: permute the shard list each epoch (same permutation on every worker,
            from ``seed + epoch``) before splitting it.
        rank, world: override the process group (tests, or manual launch).
        tracker: bad-data counter; None builds one per iteration from the two values below.
        max_bad_fraction, min_seen: passed to the :class:`BadDataTracker`.
    """

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        transform: TransformConfig | ImageTransform,
        seed: int = 0,
        shuffle_shards: bool = False,
        rank: int | None = None,
        world: int | None = None,
        tracker: BadDataTracker | None = None,
        max_bad_fraction: float = 0.05,
        min_seen: int = 100,
    ) -> None:
        super().__init__()
        self.shards = expand_shards(shards)
        self.transform = transform if isinstance(transform, ImageTransform) else ImageTransform(transform)
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.rank, self.world = rank, world
        self.epoch = 0
        BadDataTracker(max_bad_fraction, min_seen)  # validate now, not in a worker
        self.max_bad_fraction, self.min_seen = max_bad_fraction, min_seen
        self.tracker = tracker

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shard shuffle and augmentation); set it before creating the iterator."""
        self.epoch = int(epoch)

    def shard_order(self) -> list[str]:
        """The shard list of this epoch, identical on every rank and worker."""
        if not self.shuffle_shards:
            return list(self.shards)
        g = torch.Generator().manual_seed(int(self.seed) + int(self.epoch))
        return [self.shards[i] for i in torch.randperm(len(self.shards), generator=g).tolist()]

    def __iter__(self) -> Iterator[Sample]:
        rank, world = current_rank_and_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world if self.world is not None else world
        worker_id, num_workers = current_worker()
        return self.iter_worker(rank, world, worker_id, num_workers)

    def iter_worker(self, rank: int, world: int, worker_id: int, num_workers: int) -> Iterator[Sample]:
        """The samples one (rank, worker) reads: callable directly to simulate a job without one."""
        shards = worker_shard(self.shard_order(), rank, world, worker_id, num_workers)
        tracker = self.tracker if self.tracker is not None else BadDataTracker(self.max_bad_fraction, self.min_seen)

        def on_error(exc: Exception) -> bool:
            # Raised by the tar layer (truncated or non-tar shard): skip the rest of that shard.
            tracker.record_bad(_shard_of(exc), " ".join(str(exc.args[0] if exc.args else exc).split()) or type(exc).__name__)
            return True

        for raw in wds_tar.tarfile_samples(({"url": s} for s in shards), handler=on_error):
            sample = self._decode(raw, tracker)
            if sample is not None:
                yield sample
        tracker.check(final=True)

    def _decode(self, raw: dict[str, Any], tracker: BadDataTracker) -> Sample | None:
        key = str(raw.get("__key__"))
        name = f"{Path(str(raw.get('__url__', '?'))).name}:{key}"
        ext = next((e for e in IMAGE_MEMBER_EXTENSIONS if e in raw), None)
        if ext is None:
            members = sorted(k for k in raw if not k.startswith("__"))
            tracker.record_bad(name, f"no image member (has: {', '.join(members) or 'nothing'})")
            return None
        name = f"{name}.{ext}"
        try:
            with Image.open(io.BytesIO(raw[ext])) as im:
                im.load()
                image = pil_to_tensor(im)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, EOFError, ValueError) as exc:
            tracker.record_bad(name, " ".join(str(exc).split()) or type(exc).__name__)
            return None
        tracker.record_good()
        gen = sample_generator(self.seed, self.epoch, key) if self.transform.config.is_random else None
        return Sample(image=self.transform(image, gen), label=None, caption=_caption(raw), key=key)


def _caption(raw: dict[str, Any]) -> str | None:
    """``KEY.txt`` if present, else the ``"caption"`` field of ``KEY.json``; None if neither."""
    if "txt" in raw:
        return bytes(raw["txt"]).decode("utf-8", errors="replace").strip()
    if "json" in raw:
        try:
            meta = json.loads(bytes(raw["json"]).decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            logger.warning("sample %s: unreadable json side file, no caption", raw.get("__key__"))
            return None
        caption = meta.get("caption") if isinstance(meta, dict) else None
        return caption.strip() if isinstance(caption, str) else None
    return None


def _shard_of(exc: Exception) -> str:
    """webdataset appends the url to ``exc.args``; fall back to a placeholder."""
    for a in reversed(exc.args):
        if isinstance(a, str) and a.endswith(".tar"):
            return a
    return "<shard>"
