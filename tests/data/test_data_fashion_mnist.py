"""IDX reader/writer round trip (plain and gzip), clear errors, FashionMNISTDataset items."""

import gzip
import struct

import numpy as np
import pytest
import torch

from semhitok.data import FashionMNISTDataset, TransformConfig, build_dataset, find_fashion_mnist, read_idx, write_idx
from semhitok.data.fashion_mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC


def _write_by_hand(path, array, magic):
    """IDX written with struct alone, independent of write_idx."""
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


@pytest.fixture
def fmnist(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 7, 9, 3, 7, 1], np.uint8)
    _write_by_hand(tmp_path / "train-images-idx3-ubyte.gz", images, IDX_IMAGES_MAGIC)
    _write_by_hand(tmp_path / "train-labels-idx1-ubyte.gz", labels, IDX_LABELS_MAGIC)
    _write_by_hand(tmp_path / "t10k-images-idx3-ubyte", images[:2], IDX_IMAGES_MAGIC)
    _write_by_hand(tmp_path / "t10k-labels-idx1-ubyte", labels[:2], IDX_LABELS_MAGIC)
    return tmp_path, images, labels


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    _write_by_hand(tmp_path / name, arr, IDX_IMAGES_MAGIC)
    got = read_idx(tmp_path / name, IDX_IMAGES_MAGIC)
    assert got.dtype == np.uint8 and np.array_equal(got, arr)
    write_idx(tmp_path / ("w" + name), arr)
    assert (tmp_path / ("w" + name)).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    assert np.array_equal(read_idx(tmp_path / ("w" + name)), arr)
    labels = np.array([1, 2, 3], np.uint8)
    write_idx(tmp_path / "l", labels)
    assert np.array_equal(read_idx(tmp_path / "l", IDX_LABELS_MAGIC), labels)


def test_wrong_magic_is_a_clear_error(tmp_path):
    (tmp_path / "bad").write_bytes(struct.pack(">I", 0x12345678) + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"bad: not an IDX file .*0x12345678.*0x00000803"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="magic number 0x00000801, expected 0x00000803"):
        read_idx(tmp_path / "labels", IDX_IMAGES_MAGIC)


def test_truncated_data_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "t", np.zeros((2, 4, 4), np.uint8))
    raw = (tmp_path / "t").read_bytes()
    (tmp_path / "t").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="holds 29"):
        read_idx(tmp_path / "t")


def test_dataset_items(fmnist):
    root, images, labels = fmnist
    ds = FashionMNISTDataset(root, split="train", transform=TransformConfig(image_size=32))
    assert len(ds) == 6
    s = ds[1]
    assert s.image.shape == (3, 32, 32) and s.label == 7 and s.caption == "a photo of a sneaker" and s.key == "train/00001"
    assert ds[2].caption == "a photo of an ankle boot"
    native = FashionMNISTDataset(root, split="test")  # default: native 28 px, no interpolation
    assert len(native) == 2
    x = native[0].image
    assert torch.equal(x[0], x[2]) and torch.equal(x[0], torch.from_numpy(images[0]).float() / 255)


def test_find_and_build(fmnist, tmp_path_factory):
    root, _, _ = fmnist
    imgs, lbls = find_fashion_mnist(root, "train")
    assert imgs.name.endswith(".gz") and lbls.name == "train-labels-idx1-ubyte.gz"
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        find_fashion_mnist(empty, "test")
    ds = build_dataset(root, split="test")
    assert isinstance(ds, FashionMNISTDataset) and len(ds) == 2


def test_label_count_mismatch(fmnist):
    root, images, _ = fmnist
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="5,"):
        FashionMNISTDataset(root)
