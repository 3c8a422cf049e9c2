"""Colour Fashion-MNIST on real backgrounds: the mini-world's image-caption data.

The paper trains on tens of millions of image-text pairs with SigLIP as the teacher; none of that
fits a laptop. This data set keeps what the method needs -- images whose *semantics* (what object,
which colour) are separable from their *pixels* (exact shape, shading, background) -- at 64 px:

* a Fashion-MNIST garment (10 classes, 28 x 28 grey), scaled and placed at random,
* tinted with one of :data:`COLOURS` (10 named colours, far apart in CIELAB),
* composited onto a random crop of a real photo or texture (bundled with the package),
* captioned from several templates ("a red ankle boot", "a photo of a red ankle boot", ...).

Splits follow Fashion-MNIST's: ``train`` and ``val`` come from its 60,000 training images (every
12th one is ``val``: 5,000), ``test`` from its 10,000 test images. A fixed list of class x colour
pairs (:data:`HELD_OUT_PAIRS`, one per class and one per colour) never appears in ``train`` or
``val``; ``test`` draws colours from all ten, so about a tenth of it are held-out pairs, flagged
``held_out`` in the labels (for composition tests).

Every image is a pure function of (seed, split, index): building a subset (``limit``) gives the
first images of the full build, bit for bit, and two builds with the same seed are identical.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from semhitok.data.fashion_mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, find_fashion_mnist, read_idx

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "HELD_OUT_PAIRS",
    "LabelledSplit",
    "SPLITS",
    "TEMPLATES",
    "ColourFashionItem",
    "background_images",
    "build_colour_fashion_mnist",
    "caption_for",
    "caption_variants",
    "colour_distance_matrix",
    "load_split",
    "render_item",
    "split_sources",
]

# Lower-case names as they appear in captions (Fashion-MNIST's label order).
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")

# Named colours (sRGB). Chosen so that every pair is at least 45 apart in CIELAB (ΔE*76; tested),
# well past what a small network needs to tell them apart on a busy background.
COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (215, 35, 35)),
    ("orange", (245, 140, 20)),
    ("yellow", (240, 225, 40)),
    ("green", (35, 155, 55)),
    ("blue", (20, 120, 230)),
    ("purple", (120, 20, 140)),
    ("pink", (250, 135, 205)),
    ("brown", (120, 70, 30)),
    ("white", (245, 245, 245)),
    ("black", (25, 25, 25)),
)
COLOUR_NAMES = tuple(name for name, _ in COLOURS)

# Held out of train and val: class c with colour (3c + 2) mod 10. Since gcd(3, 10) = 1 this is a
# permutation: every class and every colour loses exactly one partner.
HELD_OUT_PAIRS: tuple[tuple[int, int], ...] = tuple((c, (3 * c + 2) % 10) for c in range(10))

TEMPLATES = (
    "a {colour} {cls}",
    "a photo of a {colour} {cls}",
    "a picture of a {colour} {cls}",
    "a {colour} {cls} on a background",
    "an image of a {colour} {cls}",
    "a close-up photo of a {colour} {cls}",
)

SPLITS = ("train", "val", "test")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
VAL_EVERY = 12  # every 12th Fashion-MNIST training image is validation: 5,000 of 60,000
BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ColourFashionItem:
    """One rendered example: the image and everything known about it."""

    key: str
    image: np.ndarray  # uint8 (S, S, 3)
    caption: str
    label: int  # Fashion-MNIST class 0..9
    colour: int  # index into COLOURS
    held_out: bool
    source_index: int  # index into the Fashion-MNIST file of the split
    background: str

    def metadata(self) -> dict[str, object]:
        """The side-file record (JSON-friendly)."""
        return {
            "key": self.key, "caption": self.caption, "label": self.label, "class_name": CLASS_NAMES[self.label],
            "colour": self.colour, "colour_name": COLOUR_NAMES[self.colour], "held_out": self.held_out,
            "source_index": self.source_index, "background": self.background,
        }


def _with_article(text: str) -> str:
    return ("an " if text[0] in "aeiou" else "a ") + text


def caption_for(label: int, colour: int, template: int) -> str:
    """The caption of template ``template`` for a class and a colour, with the right article."""
    text = TEMPLATES[template].format(colour=COLOUR_NAMES[colour], cls=CLASS_NAMES[label])
    # Templates are written with "a"; fix it when the colour starts with a vowel ("an orange coat").
    return text.replace(f"a {COLOUR_NAMES[colour]}", _with_article(COLOUR_NAMES[colour]), 1)


def caption_variants(caption: str, label: int, colour: int) -> dict[tuple[int, int], str]:
    """Every ``(class, colour)`` pair's caption in the template that ``caption`` was written in.

    Raises:
        ValueError: ``caption`` is not one of the templates' captions of ``label`` and ``colour``.
    """
    for template in range(len(TEMPLATES)):
        if caption_for(label, colour, template) == caption:
            return {(k, c): caption_for(k, c, template) for k in range(len(CLASS_NAMES)) for c in range(len(COLOUR_NAMES))}
    raise ValueError(f"caption {caption!r} is no template's caption of class {label} and colour {colour}")


def split_sources(split: str, n_train_file: int) -> np.ndarray:
    """Indices into the Fashion-MNIST file that make up ``split`` (train and val share the file)."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    every = np.arange(n_train_file)
    if split == "train":
        return every[every % VAL_EVERY != VAL_EVERY - 1]
    if split == "val":
        return every[every % VAL_EVERY == VAL_EVERY - 1]
    return every  # test: the whole t10k file (n_train_file is then its length)


def allowed_colours(label: int, split: str) -> list[int]:
    """Colours an image of class ``label`` may take in ``split`` (held-out pairs only in test)."""
    if split == "test":
        return list(range(len(COLOURS)))
    return [c for c in range(len(COLOURS)) if (label, c) not in HELD_OUT_PAIRS]


def background_images() -> list[tuple[str, np.ndarray]]:
    """The bundled photos and textures, as (name, uint8 RGB array), sorted by name."""
    found: list[tuple[str, np.ndarray]] = []
    assets = resources.files("semhitok") / "assets"
    for folder in ("photos", "backgrounds"):
        base = assets / folder
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir(), key=lambda e: e.name):
            if entry.name.lower().endswith(BACKGROUND_SUFFIXES):
                with entry.open("rb") as f, Image.open(f) as im:
                    found.append((f"{folder}/{entry.name}", np.asarray(im.convert("RGB"))))
    if not found:
        raise FileNotFoundError("no background images bundled with semhitok (semhitok/assets/photos, semhitok/assets/backgrounds)")
    return found


def render_item(
    garment: np.ndarray,
    label: int,
    *,
    split: str,
    index: int,
    source_index: int,
    seed: int,
    size: int,
    backgrounds: Sequence[tuple[str, np.ndarray]],
) -> ColourFashionItem:
    """Render example ``index`` of ``split`` from its 28 x 28 ``garment``; deterministic in
    (seed, split, index)."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    colours = allowed_colours(label, split)
    colour = colours[int(rng.integers(len(colours)))]
    template = int(rng.integers(len(TEMPLATES)))
    bg_name, bg_photo = backgrounds[int(rng.integers(len(backgrounds)))]
    canvas = _background_crop(bg_photo, size, rng).astype(np.float32) / 255.0

    # The garment: 60-85 % of the image side, anywhere it fits whole.
    side = int(round(size * rng.uniform(0.6, 0.85)))
    grey = np.asarray(Image.fromarray(garment).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
    top, left = int(rng.integers(size - side + 1)), int(rng.integers(size - side + 1))
    # Fashion-MNIST is a white-on-black silhouette: the grey level gives both the coverage (alpha,
    # saturating fast so dark fabric stays opaque) and the shading of the tint.
    alpha = np.clip(grey * 4.0, 0.0, 1.0)[..., None]
    shade = (0.55 + 0.45 * grey)[..., None]
    tint = np.asarray(COLOURS[colour][1], dtype=np.float32) / 255.0
    region = canvas[top : top + side, left : left + side]
    canvas[top : top + side, left : left + side] = region * (1.0 - alpha) + alpha * shade * tint
    image = np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)
    return ColourFashionItem(
        key=f"{split}_{index:05d}", image=image, caption=caption_for(label, colour, template), label=int(label),
        colour=colour, held_out=(int(label), colour) in HELD_OUT_PAIRS, source_index=int(source_index), background=bg_name,
    )


def _background_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (between 1/4 and all of the shorter side), resized to ``size``."""
    h, w = photo.shape[:2]
    short = min(h, w)
    crop = int(rng.integers(max(size, short // 4), short + 1)) if short > size else short
    top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    patch = Image.fromarray(photo[top : top + crop, left : left + crop])
    if rng.random() < 0.5:
        patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(patch.resize((size, size), Image.BICUBIC, reducing_gap=None))


def iter_split(
    split: str,
    *,
    idx_dir: str | Path | None,
    seed: int,
    size: int,
    limit: int | None = None,
    backgrounds: Sequence[tuple[str, np.ndarray]] | None = None,
) -> Iterator[ColourFashionItem]:
    """Render the examples of one split in order (the first ``limit`` when given)."""
    file_split = "test" if split == "test" else "train"
    images_path, labels_path = find_fashion_mnist(idx_dir, file_split)
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.ndim != 3 or len(labels) != len(images):
        raise ValueError(f"{images_path}: expected (N, 28, 28) images with N labels, got {images.shape} and {labels.shape}")
    backgrounds = list(backgrounds) if backgrounds is not None else background_images()
    sources = split_sources(split, len(images))
    if limit is not None:
        sources = sources[:limit]
    for index, source in enumerate(sources):
        yield render_item(
            images[source], int(labels[source]), split=split, index=index, source_index=int(source),
            seed=seed, size=size, backgrounds=backgrounds,
        )


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: identical bytes per build
    tar.addfile(info, io.BytesIO(data))


def build_colour_fashion_mnist(
    out_dir: str | Path,
    *,
    idx_dir: str | Path | None = None,
    seed: int = 0,
    size: int = 64,
    splits: Sequence[str] = SPLITS,
    limit: int | None = None,
    shard_size: int = 5000,
    formats: Sequence[str] = ("folder", "shards"),
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, object]:
    """Write the data set under ``out_dir`` (which must not hold a previous build) and return its manifest.

    Layout::

        out_dir/manifest.json            seed, size, counts, colours, classes, held-out pairs, sources
        out_dir/labels/{split}.jsonl     one record per image (key, caption, class, colour, held_out, ...)
        out_dir/images/{split}/KEY.png   + KEY.txt (caption): an image folder ``semhitok train`` reads
        out_dir/shards/{split}-NNNNNN.tar  KEY.png, KEY.txt, KEY.json: webdataset shards

    Args:
        idx_dir: folder with the Fashion-MNIST IDX files (default: where Debian's
            ``dataset-fashion-mnist`` puts them).
        limit: at most this many images per split (the first ones of the full build).
        progress: called as ``progress(split, n_done)`` after each image.
    """
    if size < 32 or size % 8:
        raise ValueError(f"size must be a multiple of 8 and at least 32, got {size}")
    unknown = [s for s in splits if s not in SPLITS] + [f for f in formats if f not in ("folder", "shards")]
    if unknown or not splits or not formats:
        raise ValueError(f"unknown or empty splits/formats: {unknown or 'none given'}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    out = Path(out_dir)
    backgrounds = background_images()
    counts: dict[str, int] = {}
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for split in splits:
        image_dir = out / "images" / split
        if "folder" in formats:
            image_dir.mkdir(parents=True, exist_ok=True)
        if "shards" in formats:
            (out / "shards").mkdir(parents=True, exist_ok=True)
        tar: tarfile.TarFile | None = None
        n = 0
        with open(out / "labels" / f"{split}.jsonl", "w", encoding="utf-8") as labels_file:
            for item in iter_split(split, idx_dir=idx_dir, seed=seed, size=size, limit=limit, backgrounds=backgrounds):
                png = _png_bytes(item.image)
                meta = item.metadata()
                labels_file.write(json.dumps(meta) + "\n")
                if "folder" in formats:
                    (image_dir / f"{item.key}.png").write_bytes(png)
                    (image_dir / f"{item.key}.txt").write_text(item.caption + "\n", encoding="utf-8")
                if "shards" in formats:
                    if n % shard_size == 0:
                        if tar is not None:
                            tar.close()
                        tar = tarfile.open(out / "shards" / f"{split}-{n // shard_size:06d}.tar", "w", format=tarfile.USTAR_FORMAT)
                    _add_member(tar, f"{item.key}.png", png)
                    _add_member(tar, f"{item.key}.txt", item.caption.encode("utf-8"))
                    _add_member(tar, f"{item.key}.json", json.dumps(meta).encode("utf-8"))
                n += 1
                if progress is not None:
                    progress(split, n)
        if tar is not None:
            tar.close()
        counts[split] = n
    manifest: dict[str, object] = {
        "dataset": "colour-fashion-mnist", "seed": seed, "size": size, "limit": limit, "counts": counts,
        "classes": list(CLASS_NAMES), "colours": {name: list(rgb) for name, rgb in COLOURS},
        "held_out_pairs": [[CLASS_NAMES[c], COLOUR_NAMES[k]] for c, k in HELD_OUT_PAIRS],
        "templates": list(TEMPLATES), "backgrounds": [name for name, _ in backgrounds],
        "sources": {
            "garments": "Fashion-MNIST (Zalando Research, MIT licence), Debian package dataset-fashion-mnist",
            "backgrounds": "photos and textures bundled with semhitok (public domain / CC0; see semhitok/assets/*/LICENSES.md)",
        },
        "splits": {"train": "Fashion-MNIST train, all but every 12th", "val": "Fashion-MNIST train, every 12th", "test": "Fashion-MNIST t10k"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


@dataclass(frozen=True)
class LabelledSplit:
    """A split of a build, in memory: images uint8 (N, 3, S, S), captions, class and colour ids (N,)."""

    images: Tensor
    captions: list[str]
    labels: Tensor
    colours: Tensor

    def float_images(self) -> Tensor:
        """The images as float (N, 3, S, S) in [0, 1], what the models take."""
        return self.images.float() / 255.0


def load_split(root: str | Path, split: str, limit: int | None = None) -> LabelledSplit:
    """Read ``images/{split}/KEY.png`` of a build with its ``labels/{split}.jsonl`` (the first
    ``limit`` images when given)."""
    root = Path(root)
    labels_file = root / "labels" / f"{split}.jsonl"
    if not labels_file.is_file():
        raise FileNotFoundError(f"{labels_file} not found: is {root} a colour Fashion-MNIST build (semhitok data colour-fashion-mnist)?")
    records = [json.loads(line) for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = records[:limit] if limit else records
    images = []
    for r in tqdm(records, desc=f"read {split}", unit="img", leave=False, disable=None):
        with Image.open(root / "images" / split / f"{r['key']}.png") as im:
            images.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
    return LabelledSplit(
        torch.stack(images), [r["caption"] for r in records],
        torch.tensor([r["label"] for r in records]), torch.tensor([r["colour"] for r in records]),
    )


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in 0..255 (..., 3) -> CIELAB (D65), for the colour-distance check."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_distance_matrix() -> np.ndarray:
    """ΔE*76 (Euclidean CIELAB distance) between every pair of :data:`COLOURS`."""
    lab = srgb_to_lab(np.array([rgb for _, rgb in COLOURS]))
    return np.linalg.norm(lab[:, None] - lab[None], axis=-1)
