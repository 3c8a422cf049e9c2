"""The colour Fashion-MNIST builder: determinism, held-out pairs, captions and labels, layout."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from semhitok.cli.main import main
from semhitok.data import build_dataset
from semhitok.data.colour_fashion import (
    CLASS_NAMES,
    COLOUR_NAMES,
    COLOURS,
    HELD_OUT_PAIRS,
    build_colour_fashion_mnist,
    caption_for,
    colour_distance_matrix,
    iter_split,
    split_sources,
)
from semhitok.data.fashion_mnist import write_idx


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """Synthetic Fashion-MNIST files: 240 train and 60 test garments (blobs), labels cycling 0..9."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for name, n in (("train", 240), ("t10k", 60)):
        yy, xx = np.mgrid[:28, :28]
        images = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            cy, cx, r = rng.integers(8, 20), rng.integers(8, 20), rng.integers(4, 9)
            images[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(60, 256)
        write_idx(root / f"{name}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{name}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def built(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cfm") / "data"
    manifest = build_colour_fashion_mnist(out, idx_dir=idx_dir, seed=3, size=32, shard_size=50)
    return out, manifest


def _records(root, split):
    return [json.loads(line) for line in (root / "labels" / f"{split}.jsonl").read_text().splitlines()]


def test_colours_are_distinct_and_held_out_pairs_cover_each_class_and_colour_once():
    assert len(COLOURS) >= 8
    d = colour_distance_matrix()
    np.fill_diagonal(d, np.inf)
    assert d.min() > 40  # CIELAB ΔE*76: clearly different colours
    assert sorted(c for c, _ in HELD_OUT_PAIRS) == list(range(10))
    assert sorted(k for _, k in HELD_OUT_PAIRS) == list(range(10))


def test_splits_follow_fashion_mnist():
    train, val = split_sources("train", 60000), split_sources("val", 60000)
    assert len(train) == 55000 and len(val) == 5000
    assert not set(train) & set(val) and len(set(train) | set(val)) == 60000
    assert len(split_sources("test", 10000)) == 10000


def test_captions_and_labels_agree(built):
    root, manifest = built
    assert manifest["counts"] == {"train": 220, "val": 20, "test": 60}
    for split in ("train", "val", "test"):
        for r in _records(root, split):
            assert r["class_name"] == CLASS_NAMES[r["label"]] and r["colour_name"] == COLOUR_NAMES[r["colour"]]
            assert f"{r['colour_name']} {r['class_name']}" in r["caption"]
            assert (root / "images" / split / f"{r['key']}.txt").read_text().strip() == r["caption"]
            assert r["held_out"] == ((r["label"], r["colour"]) in HELD_OUT_PAIRS)


def test_held_out_pairs_never_in_training_splits(built):
    root, _ = built
    for split in ("train", "val"):
        assert not any(r["held_out"] for r in _records(root, split))
    assert any(r["held_out"] for r in _records(root, "test"))  # 60 test images, 1 in 10 pairs held out


def test_articles():
    assert caption_for(4, COLOUR_NAMES.index("orange"), 0) == "an orange coat"
    assert caption_for(9, COLOUR_NAMES.index("red"), 1) == "a photo of a red ankle boot"


def test_deterministic_and_limit_is_a_prefix(idx_dir, built):
    root, _ = built
    full = list(iter_split("train", idx_dir=idx_dir, seed=3, size=32))
    again = list(iter_split("train", idx_dir=idx_dir, seed=3, size=32, limit=7))
    assert all(np.array_equal(a.image, b.image) and a.caption == b.caption for a, b in zip(full, again))
    other = list(iter_split("train", idx_dir=idx_dir, seed=4, size=32, limit=7))
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(full, other))
    from PIL import Image

    stored = np.asarray(Image.open(root / "images" / "train" / "train_00005.png"))
    assert np.array_equal(stored, full[5].image)  # PNG is lossless: the file is the rendering


def test_the_tint_is_visible(idx_dir):
    """Where the garment is opaque the pixel is (shaded) tint: its hue matches the named colour."""
    item = next(iter_split("train", idx_dir=idx_dir, seed=0, size=32))
    rgb = np.asarray(COLOURS[item.colour][1], np.float32)
    image = item.image.astype(np.float32)
    # the 10 pixels closest to the tint direction must be close to a scaled tint
    direction = rgb / np.linalg.norm(rgb)
    flat = image.reshape(-1, 3)
    cos = flat @ direction / np.maximum(np.linalg.norm(flat, axis=1), 1e-6)
    assert np.sort(cos)[-10:].min() > 0.99


def test_both_formats_are_readable_by_the_training_readers(built):
    root, _ = built
    folder = build_dataset(root / "images" / "train")
    shards = sorted((root / "shards").glob("train-*.tar"))
    assert len(folder) == 220 and len(shards) == 5  # 220 images, 50 per shard
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
    assert names[:3] == ["train_00000.png", "train_00000.txt", "train_00000.json"]
    sample = next(iter(build_dataset([str(s) for s in shards])))
    assert sample.caption == _records(root, "train")[0]["caption"]


def test_cli_builds_and_refuses_cleanly(idx_dir, tmp_path, capsys):
    out = tmp_path / "cfm"
    assert main(["data", "colour-fashion-mnist", "-o", str(out), "--idx", str(idx_dir), "--size", "32", "--limit", "5", "--splits", "test"]) == 0
    assert (out / "manifest.json").is_file() and len(list((out / "images" / "test").glob("*.png"))) == 5
    capsys.readouterr()
    assert main(["data", "colour-fashion-mnist", "-o", str(out), "--idx", str(idx_dir)]) == 2  # exists
    assert main(["data", "colour-fashion-mnist", "-o", str(tmp_path / "new"), "--idx", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("semhitok: error:") for line in err)
    assert "apt-get install dataset-fashion-mnist" in err[1]
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new.*"))


def test_the_shipped_slice_is_the_start_of_the_full_build():
    """The 200-per-split slice in the package is what the builder makes from the real Fashion-MNIST
    (checked where Debian's dataset-fashion-mnist is installed)."""
    from importlib import resources

    from semhitok.data.fashion_mnist import find_fashion_mnist

    shipped = resources.files("semhitok") / "assets" / "colour-fashion-mnist-mini"
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 200, "val": 200, "test": 200} and manifest["size"] == 64
    try:
        find_fashion_mnist(None, "train")
    except FileNotFoundError:
        pytest.skip("dataset-fashion-mnist is not installed")
    from PIL import Image

    for split in ("train", "test"):
        items = list(iter_split(split, idx_dir=None, seed=manifest["seed"], size=64, limit=5))
        for item in items:
            stored = np.asarray(Image.open(shipped / "images" / split / f"{item.key}.png"))
            assert np.array_equal(stored, item.image), item.key
