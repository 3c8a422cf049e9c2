"""Fashion-MNIST: the IDX file reader and a dataset of RGB tensors with class captions.

IDX format (big-endian): two zero bytes, a type byte (0x08 = uint8), a byte with the number of
dimensions n, then n uint32 sizes, then the data in C order. Hence the magic numbers
``0x00000803`` (images, N x 28 x 28) and ``0x00000801`` (labels, N). Files may be gzip-compressed;
compression is recognised by content (the gzip magic bytes), not by the file name.

The Debian package ``dataset-fashion-mnist`` ships the four files; :data:`DEFAULT_DIRS` are the
places searched when no folder is given (the package was not installed where this was written,
so its path is a best guess -- pass the folder explicitly to be sure).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from semhitok.data.sample import Sample, sample_generator
from semhitok.data.transforms import ImageTransform, TransformConfig

__all__ = [
    "CLASS_NAMES",
    "CAPTIONS",
    "DEFAULT_DIRS",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "FashionMNISTDataset",
    "find_fashion_mnist",
    "has_fashion_mnist",
    "read_idx",
    "write_idx",
]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CAPTIONS = (
    "a photo of a t-shirt",
    "a photo of a pair of trousers",
    "a photo of a pullover",
    "a photo of a dress",
    "a photo of a coat",
    "a photo of a sandal",
    "a photo of a shirt",
    "a photo of a sneaker",
    "a photo of a bag",
    "a photo of an ankle boot",
)

DEFAULT_DIRS = ("/usr/share/dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist", "/usr/share/fashion-mnist")

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzip) of unsigned bytes into a uint8 array of its stored shape.

    Args:
        path: the file.
        expected_magic: ``IDX_IMAGES_MAGIC`` / ``IDX_LABELS_MAGIC`` to insist on one kind.

    Raises:
        ValueError: wrong magic number, a data type other than uint8, or a size that does not
            match the header (truncated file); the message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: damaged gzip data ({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08 or ndim == 0:
        raise ValueError(
            f"{path}: not an IDX file of unsigned bytes (magic number 0x{magic:08X}; "
            f"expected 0x{IDX_IMAGES_MAGIC:08X} for images or 0x{IDX_LABELS_MAGIC:08X} for labels)"
        )
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: magic number 0x{magic:08X}, expected 0x{expected_magic:08X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count:
        raise ValueError(f"{path}: header says {dims} = {count} bytes of data, the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    Handy to cut small subsets and for tests; the output reads back with :func:`read_idx`.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx needs a uint8 array with 1..255 dimensions, got {array.dtype} with {array.ndim}")
    data = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + np.ascontiguousarray(array).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def find_fashion_mnist(root: str | Path | None = None, split: str = "train") -> tuple[Path, Path]:
    """``(images_file, labels_file)`` of ``split`` in ``root`` (or the first of :data:`DEFAULT_DIRS`
    that has them). Both ``name`` and ``name.gz`` are accepted.

    Raises:
        FileNotFoundError: with the names looked for and the folders searched.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {', '.join(_SPLIT_FILES)}, got {split!r}")
    dirs = [Path(root)] if root is not None else [Path(d) for d in DEFAULT_DIRS]
    for d in dirs:
        found = [_find(d, name) for name in _SPLIT_FILES[split]]
        if all(f is not None for f in found):
            return found[0], found[1]  # type: ignore[return-value]
    names = " and ".join(f"{n}[.gz]" for n in _SPLIT_FILES[split])
    where = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"Fashion-MNIST {split} files ({names}) not found in {where}")


def has_fashion_mnist(root: str | Path) -> bool:
    """Whether ``root`` holds the IDX files of at least one split."""
    return any(all(_find(Path(root), n) is not None for n in names) for names in _SPLIT_FILES.values())


def _find(d: Path, name: str) -> Path | None:
    for candidate in (d / name, d / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


class FashionMNISTDataset(Dataset[Sample]):
    """Fashion-MNIST as RGB tensors: the 28 x 28 grey image repeated over 3 channels, then
    :class:`ImageTransform` (resize to ``image_size``, crop, flip).

    Items: ``Sample(image (3, S, S) float in [0, 1], label in 0..9, caption like "a photo of a
    sneaker", key "train/00042")``. The arrays stay uint8 in memory (47 MB for the training set).

    Args:
        root: folder with the IDX files; None searches :data:`DEFAULT_DIRS`.
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        transform: a :class:`TransformConfig` or :class:`ImageTransform`; default 28 px, center.
        seed: seeds the per-sample augmentation, with the epoch from :meth:`set_epoch`.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: Literal["train", "test"] = "train",
        transform: TransformConfig | ImageTransform | None = None,
        seed: int = 0,
    ) -> None:
        images_path, labels_path = find_fashion_mnist(root, split)
        self.images = read_idx(images_path, IDX_IMAGES_MAGIC)
        self.targets = read_idx(labels_path, IDX_LABELS_MAGIC)
        if self.images.ndim != 3:
            raise ValueError(f"{images_path}: expected images of shape (N, H, W), got {self.images.shape}")
        if self.targets.ndim != 1 or len(self.targets) != len(self.images):
            raise ValueError(f"{labels_path}: {self.targets.shape} labels for {len(self.images)} images")
        if len(self.targets) and int(self.targets.max()) >= len(CLASS_NAMES):
            raise ValueError(f"{labels_path}: label {int(self.targets.max())} outside 0..{len(CLASS_NAMES) - 1}")
        transform = transform if transform is not None else TransformConfig(image_size=self.images.shape[1])
        self.transform = transform if isinstance(transform, ImageTransform) else ImageTransform(transform)
        self.split = split
        self.seed = seed
        self.epoch = 0
        self.classes = list(CLASS_NAMES)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> Sample:
        n = len(self.images)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        grey = torch.from_numpy(self.images[index]).float().div_(255.0)  # (H, W)
        image = grey.unsqueeze(0).expand(3, -1, -1).contiguous()  # (3, H, W)
        gen = sample_generator(self.seed, self.epoch, index) if self.transform.config.is_random else None
        label = int(self.targets[index])
        return Sample(image=self.transform(image, gen), label=label, caption=CAPTIONS[label], key=f"{self.split}/{index:05d}")
