"""Training data: image folders, webdataset tar shards, Fashion-MNIST; transforms; sharding over
ranks and workers; the skip-count-log policy for undecodable files.

:func:`build_dataset` picks the reader from the path; every reader yields :class:`Sample`
(``image`` float (3, S, S) in [0, 1], ``label``, ``caption``, ``key``) and batches with
:func:`collate_samples`. Token shards written by ``semhitok tokenize`` are read back with
:func:`read_token_shards` (every shard of a folder, checked against its manifest's fingerprint).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset, IterableDataset

from semhitok.data.bad_files import BadDataError, BadDataTracker
from semhitok.data.fashion_mnist import (
    CAPTIONS as FASHION_MNIST_CAPTIONS,
    CLASS_NAMES as FASHION_MNIST_CLASSES,
    FashionMNISTDataset,
    find_fashion_mnist,
    has_fashion_mnist,
    read_idx,
    write_idx,
)
from semhitok.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset, list_image_files
from semhitok.data.sample import Sample, SampleBatch, collate_samples, sample_generator
from semhitok.data.sharding import current_rank_and_world, current_worker, shard_indices, worker_shard
from semhitok.data.token_shards import TokenSample, load_manifest, read_token_shard, read_token_shards
from semhitok.data.transforms import ImageTransform, TransformConfig
from semhitok.data.webdataset import WebDatasetReader, expand_shards, is_shard_spec

__all__ = [
    "BadDataError",
    "BadDataTracker",
    "FASHION_MNIST_CAPTIONS",
    "FASHION_MNIST_CLASSES",
    "FashionMNISTDataset",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageTransform",
    "Sample",
    "SampleBatch",
    "TokenSample",
    "TransformConfig",
    "WebDatasetReader",
    "build_dataset",
    "collate_samples",
    "current_rank_and_world",
    "current_worker",
    "expand_shards",
    "find_fashion_mnist",
    "has_fashion_mnist",
    "is_shard_spec",
    "list_image_files",
    "load_manifest",
    "read_idx",
    "read_token_shard",
    "read_token_shards",
    "sample_generator",
    "shard_indices",
    "worker_shard",
    "write_idx",
]


def build_dataset(
    path: str | Path | Sequence[str | Path],
    transform: TransformConfig | None = None,
    *,
    labels: bool = False,
    captions: bool = True,
    split: str = "train",
    seed: int = 0,
    max_bad_fraction: float = 0.05,
    min_seen: int = 100,
    shuffle_shards: bool = False,
    bad_files_log: str | Path | None = None,
) -> Dataset | IterableDataset:
    """The reader for ``path``:

    * ``.tar`` file, brace pattern (``shards-{000..009}.tar``) or list of those -> :class:`WebDatasetReader`;
    * folder holding Fashion-MNIST IDX files -> :class:`FashionMNISTDataset` (``split``; always labelled);
    * any other folder -> :class:`ImageFolderDataset` (``labels`` from sub-folders, ``captions`` from ``.txt``).

    Args:
        transform: image size, crop, flip (default: 256 px center crop; Fashion-MNIST: 28 px).
        seed: per-sample augmentation and, with ``shuffle_shards``, the per-epoch shard order.
        max_bad_fraction, min_seen: the :class:`BadDataTracker` threshold.
        shuffle_shards: for tar shards, a new shard order every epoch (seeded, the same on every rank).
        bad_files_log: file that lists every skipped undecodable file (one line each, appended);
            None: they are logged at DEBUG level by the ``semhitok.data`` logger.

    Raises:
        FileNotFoundError: the path does not exist. ValueError: it is a file that is not a shard
        (or a FIFO / device).
    """
    tracker_kwargs = {"max_bad_fraction": max_bad_fraction, "min_seen": min_seen, "log_path": bad_files_log}
    if is_shard_spec(path):
        return WebDatasetReader(
            path, transform or TransformConfig(), seed=seed, shuffle_shards=shuffle_shards, **tracker_kwargs
        )
    if not isinstance(path, (str, Path)):
        raise ValueError(f"a list of data paths must name .tar shards, got {list(path)!r}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not p.is_dir():
        raise ValueError(f"{p}: not a data source (expected a folder of images, a Fashion-MNIST folder, or .tar shards)")
    if has_fashion_mnist(p):
        return FashionMNISTDataset(p, split=split, transform=transform, seed=seed)  # type: ignore[arg-type]
    return ImageFolderDataset(
        p, transform or TransformConfig(), labels=labels, captions=captions, seed=seed, tracker=BadDataTracker(**tracker_kwargs)
    )
