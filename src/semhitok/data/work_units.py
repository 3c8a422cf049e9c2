"""Work units of ``semhitok tokenize``: the input split into fixed chunks, and their decoded batches.

**Units.** :func:`plan_work_units` turns the inputs into a deterministic list of
:class:`WorkUnit`: the inputs in the order given; an image folder is its sorted image list
(:func:`semhitok.data.folder.list_image_files`) cut into chunks of ``shard_size``; each ``.tar``
shard (brace patterns expanded by :func:`semhitok.data.webdataset.expand_shards`) is one unit,
whatever its size -- its members are only known by reading it, and img2dataset shards already
hold a fixed number. Output shard ``i`` holds unit ``i``, so a run can stop and resume at unit
granularity, and any split of the units over processes gives the same shards.

**Decoding.** :class:`UnitBatches` is an ``IterableDataset`` for a ``DataLoader``: each worker
decodes whole units (unit ``j`` of the list goes to worker ``j % num_workers``) with the project's
readers -- :class:`semhitok.data.webdataset.WebDatasetReader` for shards,
:func:`semhitok.image_io.decode_image` for folder files -- fits every image with
:func:`semhitok.modeling.fit_to_size` (the one resize; ``crop``), and yields batches of one unit
only, the unit's last batch flagged, so the main process can write a shard when it is complete.
Undecodable images are skipped and listed (name, reason) in the batch that passes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from semhitok.data.bad_files import BadDataTracker, reason_for
from semhitok.data.folder import list_image_files
from semhitok.data.sharding import current_worker
from semhitok.data.transforms import ImageTransform, TransformConfig
from semhitok.data.webdataset import WebDatasetReader, expand_shards, is_shard_spec
from semhitok.image_io import decode_image
from semhitok.modeling.images import fit_to_size

__all__ = ["FOLDER", "RESIZE", "TAR", "UnitBatch", "UnitBatches", "WorkUnit", "plan_work_units", "sample_key"]

FOLDER, TAR = "folder", "tar"
RESIZE = "crop"  # the project's default fit: shorter side to the model size, centre square
# Characters kept in a sample key; the rest become "_". A "." would split the key (webdataset
# takes the key up to the first dot of the base name), "\\" and ":" confuse paths.
_KEY_UNSAFE = re.compile(r"[^\w/-]+")


@dataclass(frozen=True)
class WorkUnit:
    """One chunk of input, written as one output shard.

    Attributes:
        index: position in the plan (the output shard's number).
        kind: ``"folder"`` or ``"tar"``.
        source: absolute path of the image folder or the ``.tar`` shard.
        members: folder: the chunk's image paths relative to ``source`` (POSIX); tar: ``()``, the
            whole shard.
    """

    index: int
    kind: str
    source: str
    members: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """Names the unit's content (kind, source, members): a resumed run must plan the same units."""
        text = json.dumps([self.kind, self.source, list(self.members)], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """The unit as recorded in its shard and in the manifest (``planned``: None for a tar)."""
        return {"kind": self.kind, "source": self.source, "digest": self.digest, "planned": len(self.members) if self.kind == FOLDER else None}


def plan_work_units(data: Sequence[str | Path], shard_size: int) -> tuple[list[WorkUnit], list[str]]:
    """The work units of the inputs, and the sources (absolute paths, in order).

    Args:
        data: image folders and ``.tar`` shards / brace patterns, in the order to tokenize them.
        shard_size: images per unit of a folder (>= 1).

    Raises:
        FileNotFoundError: an input or a shard is missing.
        ValueError: an input that is neither a folder nor shards, a folder without images, a shard
            that is a folder or a FIFO, a source given twice.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    units: list[WorkUnit] = []
    sources: list[str] = []
    for item in data:
        text = str(item)
        if is_shard_spec(text):
            for shard in expand_shards(text):
                sources.append(os.path.abspath(shard))
                units.append(WorkUnit(len(units), TAR, sources[-1]))
        elif Path(text).is_dir():
            files = list_image_files(text)
            if not files:
                raise ValueError(f"{text}: no image files found in this folder")
            sources.append(os.path.abspath(text))
            rel = [p.relative_to(text).as_posix() for p in files]
            for start in range(0, len(rel), shard_size):
                units.append(WorkUnit(len(units), FOLDER, sources[-1], tuple(rel[start : start + shard_size])))
        elif not Path(text).exists():
            raise FileNotFoundError(f"{text}: no such file or folder")
        else:
            raise ValueError(f"{text} is not a data source: give image folders or .tar shards (brace patterns such as shards-{{000..009}}.tar are expanded)")
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]} is given twice; each source is tokenized once")
    return units, sources


def sample_key(name: str, used: set[str]) -> str:
    """A webdataset key for a source name (``cat/001.jpg`` without its suffix, a tar key), unique
    among ``used`` (which it joins): unsafe characters and dots become ``_``; ``__`` prefixes,
    which webdataset reserves for metadata, get a ``k``; a repeat gets ``_2``, ``_3``, ..."""
    parts = [_KEY_UNSAFE.sub("_", part) for part in name.split("/") if part not in ("", ".", "..")]
    key = "/".join(p for p in parts if p) or "sample"
    if key.startswith("__"):
        key = "k" + key
    candidate, n = key, 2
    while candidate in used:
        candidate, n = f"{key}_{n}", n + 1
    used.add(candidate)
    return candidate


@dataclass
class UnitBatch:
    """A batch of one unit's images, fitted to the model size.

    Attributes:
        unit: the unit's index.
        images: float32 (b, 3, S, S) in [0, 1]; b is 0 only for a unit without a good image.
        keys, captions, metas: b sample keys, captions (or None) and KEY.json dicts.
        bad: (name, reason) of the images skipped since the unit's previous batch.
        last: the unit's final batch.
    """

    unit: int
    images: Tensor
    keys: list[str]
    captions: list[str | None]
    metas: list[dict[str, Any]]
    bad: list[tuple[str, str]]
    last: bool


@dataclass
class _ListingTracker(BadDataTracker):
    """A :class:`BadDataTracker` that also keeps every skipped (name, reason), for the shard's record."""

    skipped: list[tuple[str, str]] = field(default_factory=list, init=False)

    def record_bad(self, name: str, reason: str) -> None:
        self.skipped.append((name, " ".join(str(reason).split()) or "unknown reason"))
        super().record_bad(name, reason)


class _AsDecoded(ImageTransform):
    """Hands the reader's decoded image on unchanged (3, H, W): its original size goes into KEY.json
    before :func:`fit_to_size` runs (the same fit the reader's centre-crop transform would apply)."""

    def __call__(self, image: Any, generator: torch.Generator | None = None) -> Tensor:
        return image


class UnitBatches(IterableDataset[UnitBatch]):
    """Decoded batches of ``units`` for a ``DataLoader`` (``batch_size=None``: batches are made here).

    Args:
        units: the units to read (this process's share), in order.
        image_size: the model's side S.
        batch_size: images per batch (a unit's last batch may hold fewer).
    """

    def __init__(self, units: Sequence[WorkUnit], image_size: int, batch_size: int) -> None:
        super().__init__()
        self.units = list(units)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)

    def __iter__(self) -> Iterator[UnitBatch]:
        worker_id, num_workers = current_worker()
        for unit in self.units[worker_id::num_workers]:
            yield from self.unit_batches(unit)

    def unit_batches(self, unit: WorkUnit) -> Iterator[UnitBatch]:
        """The batches of one unit, the last one flagged (empty only when no image decoded)."""
        # max_bad_fraction 1.0: a bad image never stops the run; it is skipped and listed.
        tracker = _ListingTracker(max_bad_fraction=1.0)
        images: list[Tensor] = []
        keys: list[str] = []
        captions: list[str | None] = []
        metas: list[dict[str, Any]] = []
        used: set[str] = set()
        reported = 0

        def batch(last: bool) -> UnitBatch:
            nonlocal reported
            stacked = torch.stack(images) if images else torch.empty(0, 3, self.image_size, self.image_size)
            out = UnitBatch(unit.index, stacked, list(keys), list(captions), list(metas), tracker.skipped[reported:], last)
            reported = len(tracker.skipped)
            for pending in (images, keys, captions, metas):
                pending.clear()
            return out

        for name, member, image, caption in self._decoded(unit, tracker):
            if len(images) == self.batch_size:  # a full batch goes once another image follows it
                yield batch(last=False)
            h, w = image.shape[-2:]
            images.append(fit_to_size(image.unsqueeze(0), self.image_size, RESIZE).squeeze(0))
            keys.append(sample_key(name, used))
            captions.append(caption)
            metas.append({"source": unit.source, "member": member, "original_size": [int(h), int(w)]})
        yield batch(last=True)

    def _decoded(self, unit: WorkUnit, tracker: _ListingTracker) -> Iterator[tuple[str, str, Tensor, str | None]]:
        """(key source name, member, decoded image (3, H, W), caption) of the unit's good images."""
        if unit.kind == TAR:
            reader = WebDatasetReader(unit.source, _AsDecoded(TransformConfig(self.image_size)), rank=0, world=1, tracker=tracker)
            for sample in reader.iter_worker(0, 1, 0, 1):
                yield sample.key, sample.key, sample.image, sample.caption
            return
        root = Path(unit.source)
        for rel in unit.members:
            path = root / rel
            try:
                image = decode_image(path)
                caption = _folder_caption(path)
            except (ValueError, OSError) as exc:  # an unreadable caption file skips its image too
                tracker.record_bad(str(path), reason_for(exc, str(path)))
                continue
            tracker.record_good()
            yield str(PurePosixPath(rel).with_suffix("")), rel, image, caption


def _folder_caption(image_path: Path) -> str | None:
    """The image folders' caption rule (as :class:`semhitok.data.ImageFolderDataset`): ``<stem>.txt``
    beside the image, stripped UTF-8; None without one."""
    side = image_path.with_suffix(".txt")
    return side.read_text(encoding="utf-8", errors="replace").strip() if side.is_file() else None
