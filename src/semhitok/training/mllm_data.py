"""The MLLM's training data: image-caption pools, a text pool, and the mixed, resumable batch plan.

**Sources.** Image-caption pairs come from image folders (``<stem>.txt`` captions), uncompressed
webdataset ``.tar`` shards (``KEY.txt`` or ``KEY.json``'s ``caption``) and token folders written by
``semhitok tokenize`` (ids already computed, checked against the tokenizer's fingerprint). All are
random-access pools: folders by file, shards by an index of member offsets built at start (headers
only), token folders held in memory (4 bytes per image token). Only pairs with a caption are used.
Text samples come from JSON-lines files (``{"text": ...}`` or ``{"prompt": ..., "response": ...}``).

**The plan.** Samples are numbered globally: global micro-batch ``g`` holds samples
``g*G .. g*G+G-1`` with ``G = batch_size x world size``, and rank ``r`` loads the ``r``-th block
of ``batch_size``. The kind of sample ``s`` is a function of ``s`` alone: a golden-ratio sequence
``u_s = frac(s * 0.618...)`` falls in the kind's share of [0, 1), so every window of samples holds
each kind at its ratio to within a couple of samples (not just on average). The ``j``-th sample of a
kind is item ``perm_e[j mod n]`` of its pool, with ``perm_e`` a permutation seeded by (seed, kind,
epoch ``e = j // n``). The position (next sample, samples used per kind) is saved with every
checkpoint, so a resumed run, or the same run on another number of ranks with the same global
batch, reads exactly the same samples.

**Bad data.** An image that does not decode is counted and logged by a
:class:`semhitok.data.BadDataTracker` (one per process, as the other readers do) and replaced by the
next item of the same pool, so the plan stays fixed; past ``max_bad_fraction`` the run stops.
"""

from __future__ import annotations

import json
import math
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..data import BadDataTracker, expand_shards, is_shard_spec, list_image_files, load_manifest, read_token_shards, sample_generator
from ..data.bad_files import BadDataError, reason_for
from ..data.webdataset import IMAGE_MEMBER_EXTENSIONS, MAX_MEMBER_BYTES
from ..image_io import decode_image, load_image
from ..modeling import fit_to_size
from .mllm_config import KINDS

__all__ = ["ImageCaptionPool", "MixPosition", "PlanEntry", "RawSample", "TextPool", "mixed_batches", "open_image_pool", "open_text_pool"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_WDS_NAME = re.compile(r"^(.*/)?([^/.]+)\.([^/]+)$")  # webdataset: key = basename up to its first dot


# ---- pools -------------------------------------------------------------------------------------
@dataclass
class RawSample:
    """One loaded sample: ``ids`` (h, w) int32 when pre-tokenized, else ``image`` (3, S, S) float;
    ``text`` the caption / question / prompt, ``answer`` the caption (understanding) or response."""

    kind: str
    sample: int
    text: str
    answer: str | None = None
    ids: Tensor | None = None
    image: Tensor | None = None


@dataclass
class _FolderSource:
    files: list[Path]
    captions: list[str]


@dataclass
class _ShardSource:
    items: list[tuple[str, str, int, int]]  # (shard, key.ext, data offset, size)
    captions: list[str]


@dataclass
class _TokenSource:
    ids: list[np.ndarray]
    captions: list[str]


class ImageCaptionPool:
    """Every (image or ids, caption) pair of the configured sources, by index.

    Args:
        sources: the sources in order (their items are concatenated).
        image_size: the tokenizer's input size (images are resized and cropped to it).
        tracker: counts undecodable images (see :class:`BadDataTracker`).
    """

    def __init__(self, sources: Sequence[_FolderSource | _ShardSource | _TokenSource], image_size: int, tracker: BadDataTracker) -> None:
        self.sources = list(sources)
        self.sizes = [len(s.captions) for s in self.sources]
        self.image_size = image_size
        self.tracker = tracker

    def __len__(self) -> int:
        return sum(self.sizes)

    @property
    def needs_tokenizer(self) -> bool:
        return any(not isinstance(s, _TokenSource) for s in self.sources)

    def load(self, index: int) -> tuple[Tensor | None, Tensor | None, str]:
        """``(ids, image, caption)`` of item ``index``, or of the next decodable one (bad ones are
        counted by the tracker, which stops the run past its threshold)."""
        n = len(self)
        for attempt in range(n):
            source, local = self._locate((index + attempt) % n)
            caption = source.captions[local]
            if isinstance(source, _TokenSource):
                return torch.from_numpy(source.ids[local].astype(np.int64)), None, caption
            name, image = self._decode(source, local)
            if image is None:
                self.tracker.record_bad(name[0], name[1])
                continue
            self.tracker.record_good()
            # The resize of `semhitok tokenize` (fit_to_size, crop): the same ids as its token shards.
            return None, fit_to_size(image.unsqueeze(0), self.image_size, "crop")[0], caption
        raise BadDataError(f"none of the {n} images could be decoded; {self.tracker.details_hint()}")

    def _locate(self, index: int) -> tuple[Any, int]:
        for source, size in zip(self.sources, self.sizes):
            if index < size:
                return source, index
            index -= size
        raise IndexError(index)

    @staticmethod
    def _decode(source: _FolderSource | _ShardSource, local: int) -> tuple[tuple[str, str], Tensor | None]:
        """((name, reason), image or None)."""
        if isinstance(source, _FolderSource):
            path = source.files[local]
            try:
                return (str(path), ""), load_image(path)
            except (ValueError, OSError) as exc:
                return (str(path), reason_for(exc, str(path))), None
        shard, member, offset, size = source.items[local]
        name = f"{shard}:{member}"
        try:
            with open(shard, "rb") as f:
                f.seek(offset)
                data = f.read(size)
            if len(data) != size:
                raise ValueError(f"{name}: the shard ends inside the member (truncated)")
            return (name, ""), decode_image(data, name=name)
        except (ValueError, OSError) as exc:
            return (name, reason_for(exc, name)), None


def open_image_pool(paths: Sequence[str], image_size: int, fingerprint: str, grid: tuple[int, int], tracker: BadDataTracker) -> ImageCaptionPool:
    """The pool of ``paths`` (folders, shard specs, token folders), checked before training starts.

    Raises:
        FileNotFoundError: a path does not exist. ValueError: a token folder of another tokenizer
            or grid, a compressed shard, or no captioned item at all.
    """
    sources: list[_FolderSource | _ShardSource | _TokenSource] = []
    for path in paths:
        if is_shard_spec(path):
            sources.append(_index_shards(expand_shards(path), tracker))
        elif (Path(path) / "manifest.json").is_file():
            sources.append(_read_token_folder(Path(path), fingerprint, grid))
        elif Path(path).is_dir():
            sources.append(_list_folder(Path(path)))
        elif not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        else:
            raise ValueError(f"{path}: not an image folder, a .tar shard or a token folder (with manifest.json)")
        if not sources[-1].captions:
            raise ValueError(f"{path}: no image with a caption (folders: <stem>.txt beside the image; shards: KEY.txt or KEY.json 'caption')")
    return ImageCaptionPool(sources, image_size, tracker)


def _list_folder(root: Path) -> _FolderSource:
    files, captions = [], []
    for path in list_image_files(root):
        side = path.with_suffix(".txt")
        caption = side.read_text(encoding="utf-8", errors="replace").strip() if side.is_file() else ""
        if caption:
            files.append(path)
            captions.append(caption)
    return _FolderSource(files, captions)


def _index_shards(shards: Sequence[str], tracker: BadDataTracker) -> _ShardSource:
    """Offsets of every captioned image member (headers are read, image bytes are not)."""
    items, captions = [], []
    for shard in shards:
        samples: dict[str, dict[str, Any]] = {}
        try:
            with tarfile.open(shard, mode="r:") as tar:
                for member in tar:
                    match = _WDS_NAME.match(member.name)
                    if not member.isreg() or match is None or member.name.startswith("__"):
                        continue
                    key, ext = (match.group(1) or "") + match.group(2), match.group(3).lower()
                    entry = samples.setdefault(key, {})
                    if ext in IMAGE_MEMBER_EXTENSIONS and "image" not in entry:
                        entry["image"] = (f"{key}.{ext}", member.offset_data, member.size)
                    elif ext in ("txt", "json") and member.size <= MAX_MEMBER_BYTES:
                        handle = tar.extractfile(member)
                        entry[ext] = handle.read() if handle is not None else b""
        except tarfile.ReadError as exc:
            raise ValueError(f"{shard}: not an uncompressed .tar shard ({' '.join(str(exc).split())}); MLLM training reads shards by offset") from exc
        for key, entry in samples.items():
            caption = _caption(entry)
            if "image" not in entry:
                tracker.record_bad(f"{shard}:{key}", "no image member")
            elif caption:
                member, offset, size = entry["image"]
                items.append((shard, member, offset, size))
                captions.append(caption)
    return _ShardSource(items, captions)


def _caption(entry: dict[str, Any]) -> str:
    """``KEY.txt``, else ``KEY.json``'s ``caption`` (the webdataset reader's rule); "" if none."""
    if "txt" in entry:
        return entry["txt"].decode("utf-8", errors="replace").strip()
    if "json" in entry:
        try:
            meta = json.loads(entry["json"].decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            return ""
        caption = meta.get("caption") if isinstance(meta, dict) else None
        return caption.strip() if isinstance(caption, str) else ""
    return ""


def _read_token_folder(folder: Path, fingerprint: str, grid: tuple[int, int]) -> _TokenSource:
    manifest = load_manifest(folder, expect_fingerprint=fingerprint)
    if tuple(manifest["grid"]) != grid:
        raise ValueError(f"{folder}: tokens on a {manifest['grid'][0]}x{manifest['grid'][1]} grid, the tokenizer's is {grid[0]}x{grid[1]}")
    ids, captions = [], []
    for sample in read_token_shards(folder, expect_fingerprint=fingerprint):
        if sample.caption and sample.caption.strip():
            ids.append(sample.ids)
            captions.append(sample.caption.strip())
    return _TokenSource(ids, captions)


@dataclass
class TextPool:
    """Text-only samples: ``(prompt, response)``, response None for a plain document."""

    items: list[tuple[str, str | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def open_text_pool(paths: Sequence[str], tracker: BadDataTracker) -> TextPool:
    """Read JSON-lines text files; lines that are not such objects are counted as bad data."""
    items: list[tuple[str, str | None]] = []
    for path in paths:
        before = len(items)
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                item, reason = _text_item(line)
                if item is None:
                    tracker.record_bad(f"{path}:{number}", reason)
                    continue
                tracker.record_good()
                items.append(item)
        if len(items) == before:
            raise ValueError(f"{path}: no text sample (JSON lines with 'text', or 'prompt' and 'response')")
    return TextPool(items)


def _text_item(line: str) -> tuple[tuple[str, str | None] | None, str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    if isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj["text"].strip():
        return (obj["text"], None), ""
    if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
        return (obj["prompt"], obj["response"]), ""
    return None, "not an object with 'text', or 'prompt' and 'response'"


# ---- the plan ----------------------------------------------------------------------------------
@dataclass
class MixPosition:
    """Where the sample stream stands: the next global sample index and the samples of each kind
    used so far (saved in checkpoints)."""

    sample: int = 0
    used: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "used": dict(self.used)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MixPosition:
        return cls(int(raw["sample"]), {k: int(raw["used"][k]) for k in KINDS})


@dataclass(frozen=True)
class PlanEntry:
    """Sample ``sample`` is item ``item`` of its kind's pool (``question``: for understanding)."""

    sample: int
    kind: str
    item: int
    question: int


def kind_of(sample: int, ratios: dict[str, float]) -> str:
    """The kind of global sample ``sample`` (golden-ratio sequence over the kinds' shares)."""
    u = (sample * _GOLDEN) % 1.0
    edge = 0.0
    for kind in KINDS:
        edge += ratios[kind]
        if u < edge and ratios[kind] > 0:
            return kind
    return next(k for k in reversed(KINDS) if ratios[k] > 0)  # u at the rounding edge of 1.0


class MixPlan:
    """The global sample plan (see the module doc); every rank computes all of it."""

    def __init__(self, ratios: dict[str, float], sizes: dict[str, int], num_questions: int, seed: int) -> None:
        self.ratios, self.sizes, self.num_questions, self.seed = ratios, sizes, num_questions, seed
        self._perms: dict[tuple[str, int], Tensor] = {}

    def entry(self, sample: int, position: MixPosition) -> PlanEntry:
        """The entry of ``sample`` (the next one after ``position``), advancing ``position``."""
        kind = kind_of(sample, self.ratios)
        j = position.used[kind]
        position.used[kind] = j + 1
        position.sample = sample + 1
        n = self.sizes[kind]
        epoch, within = divmod(j, n)
        perm = self._perms.get((kind, epoch))
        if perm is None:
            self._perms = {k: v for k, v in self._perms.items() if k[0] != kind}  # one epoch per kind kept
            perm = torch.randperm(n, generator=sample_generator(self.seed, epoch, f"mllm-{kind}"))
            self._perms[(kind, epoch)] = perm
        question = int(torch.randint(self.num_questions, (), generator=sample_generator(self.seed, 0, f"question-{sample}"))) if kind == "understanding" else 0
        return PlanEntry(sample, kind, int(perm[within]), question)

    def micro_batches(self, start: MixPosition, global_batch: int) -> Iterator[tuple[MixPosition, list[PlanEntry]]]:
        """``(position after, entries)`` of every global micro-batch from ``start``, forever."""
        position = MixPosition(start.sample, dict(start.used))
        while True:
            entries = [self.entry(position.sample, position) for _ in range(global_batch)]
            yield MixPosition(position.sample, dict(position.used)), entries


class _MixedBatches(IterableDataset):
    """This rank's raw samples, one list per micro-batch; DataLoader worker ``w`` of ``W`` loads
    the micro-batches ``g`` with ``g % W == w`` (the DataLoader returns them round-robin, in order)."""

    def __init__(self, plan: MixPlan, start: MixPosition, batch_size: int, rank: int, world: int,
                 images: ImageCaptionPool | None, texts: TextPool | None, questions: Sequence[str]) -> None:
        self.plan, self.start, self.batch_size, self.rank, self.world = plan, start, batch_size, rank, world
        self.images, self.texts, self.questions = images, texts, list(questions)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], list[RawSample]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for g, (position, entries) in enumerate(self.plan.micro_batches(self.start, self.batch_size * self.world)):
            if g % workers == worker:
                yield position.to_dict(), [self._load(e) for e in entries[mine]]

    def _load(self, entry: PlanEntry) -> RawSample:
        if entry.kind == "text":
            assert self.texts is not None
            prompt, response = self.texts.items[entry.item]
            return RawSample("text", entry.sample, prompt, response)
        assert self.images is not None
        ids, image, caption = self.images.load(entry.item)
        if entry.kind == "understanding":
            return RawSample("understanding", entry.sample, self.questions[entry.question], caption, ids, image)
        return RawSample("generation", entry.sample, caption, None, ids, image)


def _identity(batch: Any) -> Any:
    return batch


def mixed_batches(
    plan: MixPlan, start: MixPosition, *, batch_size: int, rank: int, world: int, num_workers: int,
    images: ImageCaptionPool | None, texts: TextPool | None, questions: Sequence[str],
) -> Iterator[tuple[MixPosition, list[RawSample]]]:
    """``(position after, this rank's raw samples)`` per micro-batch, forever, from ``start``."""
    dataset = _MixedBatches(plan, start, batch_size, rank, world, images, texts, questions)
    # Its own generator: a DataLoader draws its workers' base seed when iterated, and from the
    # global RNG without one, which would shift every later draw (LoRA dropout) after a resume.
    generator = sample_generator(plan.seed, 0, f"mllm-loader-rank-{rank}")
    loader = DataLoader(dataset, batch_size=None, collate_fn=_identity, num_workers=num_workers, generator=generator)
    for position, samples in loader:
        yield MixPosition.from_dict(position), samples
