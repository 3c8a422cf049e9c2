"""Webdataset ``.tar`` shards in the img2dataset layout (the format COYO / LAION / DataComp ship in).

Each sample is a group of consecutive tar members sharing a key: ``KEY.jpg`` (or ``.jpeg`` /
``.png`` / ``.webp``) and a caption in ``KEY.txt`` and/or ``KEY.json`` (field ``"caption"``;
``.txt`` wins). The key is the member name up to the first dot of its base name and the
extension the rest, lower-cased -- the ``webdataset`` package's convention -- but the shards are
read here, as local files, with :mod:`tarfile`:

* a shard name is only ever a file path. ``webdataset`` hands names to its URL opener, where a
  name such as ``pipe:touch X;cat a.tar;#.tar`` runs a shell command; here it is opened with
  ``open()`` like any file (and refused before opening when it is not a regular file, e.g. a FIFO);
* shards are split over ranks *and* DataLoader workers by :func:`semhitok.data.sharding.worker_shard`
  (every shard read by exactly one worker of the job; see there for fewer shards than workers),
  after an optional per-epoch shuffle seeded by (seed, epoch) that every rank and worker agree on;
* images are decoded by :func:`semhitok.image_io.decode_image`, the decoder of the image folders
  and of ``semhitok encode``: the same bytes give the same pixels (EXIF orientation included);
* an image member that does not decode, a member larger than :data:`MAX_MEMBER_BYTES`, a sample
  without an image, or an unreadable shard is skipped, counted and logged by the
  :class:`BadDataTracker`, which stops the run past its threshold.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import torch
from torch.utils.data import IterableDataset

from semhitok.data.bad_files import BadDataTracker, reason_for
from semhitok.data.sample import Sample, sample_generator
from semhitok.data.sharding import current_rank_and_world, current_worker, worker_shard
from semhitok.data.transforms import ImageTransform, TransformConfig
from semhitok.image_io import check_regular_file, decode_image

__all__ = ["IMAGE_MEMBER_EXTENSIONS", "MAX_MEMBER_BYTES", "WebDatasetReader", "expand_shards", "is_shard_spec", "read_shard"]

logger = logging.getLogger("semhitok.data")

# Preference order when a sample carries several images.
IMAGE_MEMBER_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# A member is read into memory whole; a larger one (a hostile or broken shard) is skipped unread.
MAX_MEMBER_BYTES = 2**28

# webdataset's key / extension split: "dir/abc.seg.png" -> ("dir/abc", "seg.png").
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
# webdataset's metadata members ("__index__", "__meta__/..."), which belong to no sample.
_META = re.compile(r"__[^/]*__($|/)")
_SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, zlib.error)


@dataclass(frozen=True)
class _TooLarge:
    """Stands in for the bytes of a member that was not read because of its size."""

    size: int


def is_shard_spec(spec: str | Path | Sequence[str | Path]) -> bool:
    """Whether ``spec`` names tar shards: a ``.tar`` path, a brace pattern, or a list of those."""
    if isinstance(spec, (list, tuple)):
        return len(spec) > 0 and all(is_shard_spec(s) for s in spec)
    s = str(spec)
    return s.endswith(".tar") or ("{" in s and ".." in s and "}" in s)


def expand_shards(spec: str | Path | Sequence[str | Path], check_exist: bool = True) -> list[str]:
    """Shard paths from a path, a brace pattern (``shards-{000..009}.tar``), or a list of either.

    Order is kept as given (the sharding relies on every rank agreeing on it). A name that exists
    as a file is taken literally, so a file whose name holds braces is not expanded.

    Raises:
        ValueError: no shard at all; a shard is a folder, a FIFO or another non-regular file
            (with ``check_exist``). FileNotFoundError: a shard is missing (with ``check_exist``).
    """
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    shards = [s for item in items for s in _expand_one(str(item))]
    if not shards:
        raise ValueError(f"no shards in {spec!r}")
    if check_exist:
        missing = []
        for s in shards:
            try:
                check_regular_file(s)
            except FileNotFoundError:
                missing.append(s)
            except IsADirectoryError:
                raise ValueError(f"{s} is a directory, not a .tar shard") from None
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(shards)} shards do not exist (first: {missing[0]})")
    return shards


def _expand_one(item: str) -> list[str]:
    return [item] if Path(item).exists() else list(braceexpand.braceexpand(item))


def read_shard(path: str | Path, on_error: Callable[[Exception], None]) -> Iterator[dict[str, Any]]:
    """The samples of one local tar shard, as dicts ``{"__key__", "__url__", ext: bytes, ...}``.

    The shard is opened as a plain file (never through a URL scheme) and read as a stream
    (``tar`` or compressed ``tar.gz``). Members that are not regular files, and webdataset
    metadata members, are skipped; a member over :data:`MAX_MEMBER_BYTES` is not read and is
    represented by a placeholder that :class:`WebDatasetReader` reports as bad. A repeated
    extension within one sample keeps the first member. When the shard cannot be read on (not a
    tar, truncated, unreadable), ``on_error`` gets the exception, the samples complete so far have
    been yielded, and the shard ends there.
    """
    current: dict[str, Any] | None = None
    try:
        check_regular_file(path)
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                parts = _member_key(member)
                if parts is None:
                    continue
                key, ext = parts
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": str(path)}
                if ext in current:
                    logger.debug("%s: duplicate member %s, keeping the first", path, member.name)
                    continue
                current[ext] = _member_bytes(tar, member)
                tar.members = []  # a stream needs no index; without this it grows with the shard
    except _SHARD_ERRORS as exc:
        on_error(exc)
    if current is not None:
        yield current


def _member_key(member: tarfile.TarInfo) -> tuple[str, str] | None:
    if not member.isreg() or _META.match(member.name):
        return None
    match = _KEY_EXT.match(member.name)
    return None if match is None else (match.group(1), match.group(2).lower())


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | _TooLarge:
    if member.size > MAX_MEMBER_BYTES:
        return _TooLarge(member.size)
    handle = tar.extractfile(member)
    if handle is None:  # isreg() members always have data; kept for the type checker
        return b""
    return handle.read()


class WebDatasetReader(IterableDataset[Sample]):
    """Iterable dataset over local tar shards; yields :class:`Sample` (label None).

    In a ``DataLoader`` with ``num_workers=W`` under DDP, each worker reads the shards of global
    worker ``rank * W + worker_id`` (rank and world from ``torch.distributed`` unless given).

    Args:
        shards: see :func:`expand_shards`.
        transform: a :class:`TransformConfig` or :class:`ImageTransform`.
        seed: seeds the per-sample augmentation (by tar key) and the shard shuffle.
        shuffle_shards: permute the shard list each epoch (the same permutation on every rank and
            worker, a function of ``seed + epoch`` like ``DistributedSampler``'s) before splitting it;
            a resumed run that sets the same epoch reads the same order.
        rank, world: override the process group (tests, or manual launch).
        tracker: bad-data counter; None builds one per iteration (per worker) from the values below.
        max_bad_fraction, min_seen, log_path: passed to the :class:`BadDataTracker`.
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
        log_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.shards = expand_shards(shards)
        self.transform = transform if isinstance(transform, ImageTransform) else ImageTransform(transform)
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.rank, self.world = rank, world
        self.epoch = 0
        BadDataTracker(max_bad_fraction, min_seen, log_path)  # validate now, not in a worker
        self.max_bad_fraction, self.min_seen, self.log_path = max_bad_fraction, min_seen, log_path
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
        tracker = self.tracker if self.tracker is not None else BadDataTracker(self.max_bad_fraction, self.min_seen, self.log_path)
        for shard in shards:
            label = Path(shard).name

            def on_error(exc: Exception, label: str = label) -> None:
                # The shard is not a tar, is truncated, or cannot be read: the rest of it is skipped.
                tracker.record_bad(label, _one_line(exc))

            for raw in read_shard(shard, on_error):
                sample = self._decode(raw, label, tracker)
                if sample is not None:
                    yield sample
        tracker.check(final=True)

    def _decode(self, raw: dict[str, Any], shard_label: str, tracker: BadDataTracker) -> Sample | None:
        key = str(raw["__key__"])
        name = f"{shard_label}:{key}"
        ext = next((e for e in IMAGE_MEMBER_EXTENSIONS if e in raw), None)
        if ext is None:
            members = sorted(k for k in raw if not k.startswith("__"))
            tracker.record_bad(name, f"no image member (has: {', '.join(members) or 'nothing'})")
            return None
        name = f"{name}.{ext}"
        data = raw[ext]
        if isinstance(data, _TooLarge):
            tracker.record_bad(name, f"a {data.size}-byte member, more than the {MAX_MEMBER_BYTES}-byte limit; not read")
            return None
        try:
            image = decode_image(data, name=name)
        except (ValueError, OSError) as exc:
            tracker.record_bad(name, reason_for(exc, name))
            return None
        tracker.record_good()
        gen = sample_generator(self.seed, self.epoch, key) if self.transform.config.is_random else None
        return Sample(image=self.transform(image, gen), label=None, caption=_caption(raw), key=key)


def _caption(raw: dict[str, Any]) -> str | None:
    """``KEY.txt`` if present, else the ``"caption"`` field of ``KEY.json``; None if neither."""
    if isinstance(raw.get("txt"), bytes):
        return raw["txt"].decode("utf-8", errors="replace").strip()
    if isinstance(raw.get("json"), bytes):
        try:
            meta = json.loads(raw["json"].decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            logger.debug("sample %s: unreadable json side file, no caption", raw.get("__key__"))
            return None
        caption = meta.get("caption") if isinstance(meta, dict) else None
        return caption.strip() if isinstance(caption, str) else None
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
