"""ImageFolderDataset: sorting, labels, captions, bad files skipped / counted / logged, threshold."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from semhitok.data import BadDataError, BadDataTracker, ImageFolderDataset, TransformConfig, collate_samples

CFG = TransformConfig(image_size=8)


def _write(path, value: int, size=(10, 12), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[0], size[1], 3), value, np.uint8)).save(path, format=fmt)


@pytest.fixture
def tree(tmp_path):
    _write(tmp_path / "dog" / "b.png", 10)
    _write(tmp_path / "dog" / "sub" / "a.jpg", 20)
    _write(tmp_path / "cat" / "z.png", 30)
    _write(tmp_path / "cat" / "a.webp", 40)
    (tmp_path / "cat" / "z.txt").write_text("  a grey cat \n", encoding="utf-8")
    (tmp_path / "cat" / "notes.md").write_text("not an image")
    _write(tmp_path / ".hidden" / "x.png", 50)
    return tmp_path


def test_sorted_labels_and_captions(tree):
    ds = ImageFolderDataset(tree, CFG, labels=True)
    assert ds.keys == ["cat/a.webp", "cat/z.png", "dog/b.png", "dog/sub/a.jpg"]
    assert ds.classes == ["cat", "dog"]
    samples = [ds[i] for i in range(len(ds))]
    assert [s.label for s in samples] == [0, 0, 1, 1]
    assert [s.caption for s in samples] == [None, "a grey cat", None, None]
    assert samples[1].image.shape == (3, 8, 8)
    assert torch.allclose(samples[1].image, torch.full((3, 8, 8), 30 / 255))


def test_no_labels_and_no_captions(tree):
    ds = ImageFolderDataset(tree, CFG, captions=False)
    s = ds[1]
    assert s.label is None and s.caption is None and s.key == "cat/z.png"


def test_labels_need_subfolders(tree):
    _write(tree / "loose.png", 1)
    with pytest.raises(ValueError, match="loose.png"):
        ImageFolderDataset(tree, CFG, labels=True)
    assert len(ImageFolderDataset(tree, CFG)) == 5


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        ImageFolderDataset(tmp_path, CFG)
    with pytest.raises(NotADirectoryError):
        ImageFolderDataset(tmp_path / "nope", CFG)


def test_corrupt_file_skipped_counted_logged(tree, caplog):
    (tree / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    tracker = BadDataTracker(max_bad_fraction=0.5, min_seen=10)
    ds = ImageFolderDataset(tree, CFG, labels=True, tracker=tracker)
    assert ds.keys[1] == "cat/broken.jpg"
    with caplog.at_level(logging.DEBUG, logger="semhitok.data"):
        s = ds[1]
    assert s.key == "cat/z.png"  # replaced by the next readable file
    assert (tracker.bad, tracker.seen) == (1, 2)
    # Details at DEBUG only: nothing reaches a terminal that shows warnings.
    assert [r.levelno for r in caplog.records if "cat/broken.jpg" in r.getMessage()] == [logging.DEBUG]


def test_too_many_bad_files_stop_with_clear_message(tmp_path):
    _write(tmp_path / "good.png", 1)
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(tmp_path, CFG, tracker=BadDataTracker(max_bad_fraction=0.25, min_seen=2))
    with pytest.raises(BadDataError, match=r"2 of 2 files could not be decoded \(100.0% > threshold 25.0%\); first: bad0.png"):
        ds[0]


def test_all_bad_files(tmp_path):
    for i in range(3):
        (tmp_path / f"x{i}.png").write_bytes(b"junk")
    log = tmp_path / "bad_files.log"
    ds = ImageFolderDataset(tmp_path, CFG, tracker=BadDataTracker(max_bad_fraction=1.0, log_path=log))
    with pytest.raises(BadDataError) as info:
        ds[0]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}: none of the 3 image files could be decoded (first: x0.png: not an image file that can be read")
    assert message.endswith(f"every bad file is listed in {log}")
    assert [line.split(":")[0] for line in log.read_text().splitlines()] == [f"skipped undecodable file x{i}.png" for i in range(3)]


def test_random_augmentation_depends_on_seed_epoch_index_only(tree):
    cfg = TransformConfig(image_size=8, crop="random", flip=True)
    a = ImageFolderDataset(tree, cfg, seed=1)
    b = ImageFolderDataset(tree, cfg, seed=1)
    assert torch.equal(a[3].image, b[3].image)
    _write(tree / "dog" / "wide.png", 0, size=(8, 60))
    a = ImageFolderDataset(tree, cfg, seed=1)
    i = a.keys.index("dog/wide.png")
    # Give the wide image a gradient so crops differ.
    arr = np.tile(np.arange(60, dtype=np.uint8)[None, :, None] * 4, (8, 1, 3))
    Image.fromarray(arr).save(tree / "dog" / "wide.png")
    first = a[i].image
    assert torch.equal(first, a[i].image)
    crops = set()
    for epoch in range(5):
        a.set_epoch(epoch)
        crops.add(tuple(a[i].image[0, 0].tolist()))
    assert len(crops) > 1


def test_dataloader_collate(tree):
    ds = ImageFolderDataset(tree, CFG, labels=True)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_samples)))
    assert batch.images.shape == (4, 3, 8, 8)
    assert batch.labels.tolist() == [0, 0, 1, 1]
    assert batch.captions == [None, "a grey cat", None, None]
    assert len(batch) == 4
