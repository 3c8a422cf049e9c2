"""Recursive image-folder dataset, with optional class labels (first-level sub-folders) and
captions (``.txt`` side files with the same stem).

Layout::

    root/
      cat/001.jpg  cat/001.txt   -> label "cat", caption from 001.txt
      dog/a/x.png                -> label "dog" (only the first level names the class)

Files are sorted by their relative POSIX path, so index -> file is the same on every machine and
every rank. Hidden files and folders (a leading ".") are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch.utils.data import Dataset

from semhitok.data.bad_files import BadDataError, BadDataTracker, reason_for
from semhitok.data.sample import Sample, sample_generator
from semhitok.data.transforms import ImageTransform, TransformConfig
from semhitok.image_io import load_image

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "list_image_files"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})


def list_image_files(root: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under ``root`` (recursively, suffix match case-insensitive), sorted by
    relative POSIX path; hidden files and anything inside hidden folders are skipped."""
    root = Path(root)
    exts = {e.lower() for e in extensions}
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in exts and p.is_file():
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


class ImageFolderDataset(Dataset[Sample]):
    """Map-style dataset over the images below ``root``.

    A file that cannot be decoded is counted and logged by ``tracker`` and replaced by the next
    readable file in sorted order, so ``len()`` stays fixed (samplers and the sharding of
    :func:`semhitok.data.shard_indices` rely on it) and the run goes on; once the bad fraction passes
    the tracker's threshold, :class:`BadDataError` stops it.

    Args:
        root: folder to scan recursively.
        transform: a :class:`TransformConfig` or :class:`ImageTransform`.
        labels: take class labels from first-level sub-folder names (sorted -> 0, 1, ...); every
            image must then live inside a sub-folder.
        captions: read ``<stem>.txt`` next to each image (stripped UTF-8); missing -> None.
        seed: seeds the per-sample augmentation (with the epoch set by :meth:`set_epoch`).
        tracker: bad-file counter (a default :class:`BadDataTracker` if None).
    """

    def __init__(
        self,
        root: str | Path,
        transform: TransformConfig | ImageTransform,
        labels: bool = False,
        captions: bool = True,
        seed: int = 0,
        tracker: BadDataTracker | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: not a folder of images")
        self.transform = transform if isinstance(transform, ImageTransform) else ImageTransform(transform)
        self.files = list_image_files(self.root, extensions)
        if not self.files:
            raise ValueError(f"{self.root}: no image files found ({', '.join(sorted(extensions))})")
        self.keys = [p.relative_to(self.root).as_posix() for p in self.files]
        self.classes: list[str] = []
        self.labels: list[int | None] = [None] * len(self.files)
        if labels:
            loose = [k for k in self.keys if "/" not in k]
            if loose:
                raise ValueError(
                    f"{self.root}: class labels come from sub-folders, but {len(loose)} image(s) lie directly "
                    f"in the root (e.g. {loose[0]}); move them into a class folder or turn labels off"
                )
            self.classes = sorted({k.split("/", 1)[0] for k in self.keys})
            index = {c: i for i, c in enumerate(self.classes)}
            self.labels = [index[k.split("/", 1)[0]] for k in self.keys]
        self.captions = captions
        self.seed = seed
        self.epoch = 0
        self.tracker = tracker if tracker is not None else BadDataTracker()

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch, in every worker's copy via the sampler)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> Sample:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for attempt in range(n):
            i = (index + attempt) % n
            try:
                image = load_image(self.files[i])
            except (ValueError, OSError) as exc:
                # load_image's message already names the file; keep only the reason part.
                self.tracker.record_bad(self.keys[i], reason_for(exc, str(self.files[i])))
                continue
            self.tracker.record_good()
            gen = sample_generator(self.seed, self.epoch, i) if self.transform.config.is_random else None
            return Sample(image=self.transform(image, gen), label=self.labels[i], caption=self._caption(i), key=self.keys[i])
        first = self.tracker.first_bad or ("?", "?")
        raise BadDataError(
            f"{self.root}: none of the {n} image files could be decoded (first: {first[0]}: {first[1]}); {self.tracker.details_hint()}"
        )

    def _caption(self, i: int) -> str | None:
        if not self.captions:
            return None
        side = self.files[i].with_suffix(".txt")
        if not side.is_file():
            return None
        return side.read_text(encoding="utf-8", errors="replace").strip()

