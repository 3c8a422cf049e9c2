"""Shared training-test data."""

from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Ten small images: the bundled photos and their mirror images, at 96 px."""
    folder = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(sorted((ROOT / "assets" / "photos").glob("*.jpg"))):
        image = Image.open(path).convert("RGB")
        image.thumbnail((96, 96))
        image.save(folder / f"{i}.png")
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"{i}_flip.png")
    return folder
