"""build_dataset chooses the reader from the path."""

import numpy as np
import pytest
from PIL import Image

from semhitok.data import ImageFolderDataset, TransformConfig, build_dataset, is_shard_spec


def test_folder_and_errors(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    ds = build_dataset(tmp_path, TransformConfig(image_size=4), labels=True)
    assert isinstance(ds, ImageFolderDataset) and ds.classes == ["a"]
    with pytest.raises(FileNotFoundError):
        build_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a data source"):
        build_dataset(tmp_path / "a" / "x.png")


def test_shard_spec_detection():
    assert is_shard_spec("data/shard-000.tar")
    assert is_shard_spec("data/shard-{000..009}.tar")
    assert is_shard_spec(["a.tar", "b.tar"])
    assert not is_shard_spec("data/images")
    assert not is_shard_spec([])


def test_missing_shards_fail_early(tmp_path):
    with pytest.raises(FileNotFoundError, match="2 of 2 shards"):
        build_dataset(str(tmp_path / "s-{0..1}.tar"))
