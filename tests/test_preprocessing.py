"""One decoder, one resize: training, encode and webdataset samples see the same pixels for the
same bytes; the resize is the bicubic antialiased one; decoding and resizing are bounded; shard
names never reach a URL opener."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from semhitok.data import ImageFolderDataset, ImageTransform, TransformConfig, WebDatasetReader, build_dataset, expand_shards
from semhitok.data import webdataset as wds_module
from semhitok.image_io import (
    MAX_ASPECT_RATIO,
    ImageSizeError,
    NotRegularFileError,
    decode_image,
    load_image,
)
from semhitok.modeling import SemHiTok, fit_to_size
from semhitok.modeling.tokenizer import SemHiTokConfig

SIZE = 64  # the tiny preset's image size


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: interpolation kernels give visibly different results."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([255 * y / h, 255 * x / w, 127 + 120 * np.sin(x / 3.0 + y / 5.0)], axis=-1)
    noise = np.random.default_rng(seed).integers(-40, 40, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _exif_rotated_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise (portrait)
    Image.fromarray(_photo(70, 110, seed=1)).save(path, format="JPEG", quality=92, exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(_photo(75, 131)).save(folder / "wide.png")  # non-square, odd margins
    _exif_rotated_jpeg(folder / "rotated.jpg")
    return folder


@pytest.fixture(scope="module")
def tiny_model() -> SemHiTok:
    return SemHiTok(SemHiTokConfig.from_preset("tiny"))


def _encode_input(model: SemHiTok, images: torch.Tensor) -> torch.Tensor:
    """The tensor SemHiTok.encode hands to its quantizers (captured, not recomputed)."""
    seen: list[torch.Tensor] = []
    quantize = model._quantize

    def spy(x: torch.Tensor):
        seen.append(x.detach().clone())
        return quantize(x)

    model._quantize = spy  # type: ignore[method-assign]
    try:
        model.encode(images)
    finally:
        del model._quantize
    return seen[0]


@pytest.mark.parametrize("name", ["wide.png", "rotated.jpg"])
def test_training_sample_is_bit_identical_to_encode_input(photos, tiny_model, name):
    ds = ImageFolderDataset(photos, TransformConfig(image_size=SIZE, crop="center", flip=False))
    sample = ds[ds.keys.index(name)].image
    fitted = fit_to_size(load_image(photos / name).unsqueeze(0), SIZE)  # what `semhitok encode` does
    assert torch.equal(_encode_input(tiny_model, fitted)[0], sample)
    # encode() fitting the raw image itself gives the same pixels too
    assert torch.equal(_encode_input(tiny_model, load_image(photos / name).unsqueeze(0))[0], sample)


def test_exif_rotation_reaches_training(photos):
    # 110 wide x 70 high as stored; displayed (and trained on) as 70 wide x 110 high.
    assert load_image(photos / "rotated.jpg").shape == (3, 110, 70)
    with Image.open(photos / "rotated.jpg") as im:
        stored = torch.from_numpy(np.asarray(im.convert("RGB")).astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(load_image(photos / "rotated.jpg"), torch.rot90(stored, k=-1, dims=(1, 2)))


def _tar_with(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("crop", ["center", "random"])
def test_webdataset_sample_equals_folder_sample_of_the_same_bytes(photos, tmp_path, crop):
    # The same bytes, the same key -> the same augmentation draw and the same pixels (EXIF included).
    cfg = TransformConfig(image_size=SIZE, crop=crop, flip=crop == "random")
    _tar_with(tmp_path / "s.tar", {"wide.png": (photos / "wide.png").read_bytes(), "rotated.jpg": (photos / "rotated.jpg").read_bytes()})
    from_tar = {s.key: s.image for s in WebDatasetReader(str(tmp_path / "s.tar"), cfg, seed=5)}
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("wide.png", "rotated.jpg"):
        (folder / name).write_bytes((photos / name).read_bytes())
    ds = ImageFolderDataset(folder, cfg, seed=5)
    # Folder samples draw their augmentation by index, tar samples by key: compare the decoded
    # images (the one decoder) and, for the deterministic center crop, the samples themselves.
    for key, name in (("wide", "wide.png"), ("rotated", "rotated.jpg")):
        assert torch.equal(decode_image((photos / name).read_bytes(), name=name), load_image(folder / name))
        if crop == "center":
            assert torch.equal(from_tar[key], ds[ds.keys.index(name)].image)
        else:
            assert from_tar[key].shape == (3, SIZE, SIZE)


def test_the_one_resize_is_bicubic_antialiased(photos):
    x = load_image(photos / "wide.png")  # 75 x 131
    th, tw = SIZE, round(131 * SIZE / 75)
    full = F.interpolate(x[None], size=(th, tw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)[0]
    left = (tw - SIZE) // 2
    out = ImageTransform(TransformConfig(image_size=SIZE, crop="center"))(x)
    assert torch.equal(out, full[:, :, left : left + SIZE])
    bilinear = F.interpolate(x[None], size=(th, tw), mode="bilinear", align_corners=False, antialias=True)[0]
    assert (out - bilinear[:, :, left : left + SIZE]).abs().max() > 0.01  # the old training path differs


def test_random_crops_are_windows_of_the_one_resize(photos):
    x = load_image(photos / "wide.png")
    tw = round(131 * SIZE / 75)
    full = F.interpolate(x[None], size=(SIZE, tw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)[0]
    windows = [full[:, :, left : left + SIZE] for left in range(tw - SIZE + 1)]
    t = ImageTransform(TransformConfig(image_size=SIZE, crop="random"))
    lefts = set()
    for seed in range(12):
        out = t(x, torch.Generator().manual_seed(seed))
        matches = [i for i, w in enumerate(windows) if torch.equal(out, w)]
        assert len(matches) >= 1
        lefts.add(matches[0])
    assert len(lefts) > 1


def test_fit_to_size_offsets_and_no_interpolation_at_size():
    x = torch.rand(1, 3, SIZE, 100)
    assert torch.equal(fit_to_size(x, SIZE, offset=(0, 7)), x[..., 7 : 7 + SIZE])  # cropped, not resampled
    with pytest.raises(ValueError, match="outside"):
        fit_to_size(x, SIZE, offset=(0, 37))
    with pytest.raises(ValueError, match="only applies"):
        fit_to_size(x, SIZE, "stretch", offset=(0, 0))


# ---- bounds ----------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (8-bit grey) and whose data is empty."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "match"),
    [(50000, 50000, "megapixels"), (40000, 1000, "a side"), (100000, 1, "a side"), (6500, 100, "aspect ratio of 65:1")],
)
def test_declared_size_is_refused_before_decoding(tmp_path, monkeypatch, width, height, match):
    def no_load(self):  # decoding a refused image would be the bug
        raise AssertionError("load() called")

    monkeypatch.setattr(Image.Image, "load", no_load)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))
    with pytest.raises(ImageSizeError, match=match) as info:
        load_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_aspect_ratio_bound_is_inclusive(tmp_path):
    Image.new("RGB", (MAX_ASPECT_RATIO, 1)).save(tmp_path / "ok.png")
    Image.new("RGB", (MAX_ASPECT_RATIO + 1, 1)).save(tmp_path / "thin.png")
    assert load_image(tmp_path / "ok.png").shape == (3, 1, MAX_ASPECT_RATIO)
    with pytest.raises(ImageSizeError, match="65:1"):
        load_image(tmp_path / "thin.png")
    # Tensors handed to encode() are held to the same bound (their resize is the costly part).
    with pytest.raises(ImageSizeError, match="aspect ratio"):
        fit_to_size(torch.rand(1, 3, 1, 1000), SIZE)
    assert fit_to_size(torch.rand(1, 3, 1, MAX_ASPECT_RATIO), SIZE).shape == (1, 3, SIZE, SIZE)


def _in_thread(fn, timeout: float = 10.0):
    result: dict[str, BaseException | None] = {"error": None}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked on a FIFO"
    return result["error"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "image.png")
    os.mkfifo(tmp_path / "shard.tar")
    error = _in_thread(lambda: load_image(tmp_path / "image.png"))
    assert isinstance(error, NotRegularFileError) and "FIFO" in str(error)
    error = _in_thread(lambda: expand_shards(str(tmp_path / "shard.tar")))
    assert isinstance(error, NotRegularFileError)
    # In a data folder a FIFO is not listed as an image at all.
    Image.new("RGB", (8, 8)).save(tmp_path / "real.png")
    assert ImageFolderDataset(tmp_path, TransformConfig(image_size=8)).keys == ["real.png"]


def test_peak_memory_of_a_thin_png_is_bounded(tmp_path):
    # A 370-byte 100000 x 1 PNG made `semhitok encode` peak at 5.3 GB (a 6.4M x 64 resize).
    Image.new("RGB", (100000, 1), (10, 20, 30)).save(tmp_path / "thin.png")
    script = (
        "import re\n"
        "from semhitok.cli.main import main\n"
        f"rc = main(['encode', {str(tmp_path / 'thin.png')!r}, '--preset', 'tiny', '-o', {str(tmp_path / 't.npz')!r}])\n"
        # VmHWM is this process's own peak: getrusage's ru_maxrss would carry over the peak of the
        # pytest process that forked it (Linux keeps it across exec), so it depends on test order.
        "print(rc, re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    rc, peak_kib = proc.stdout.split()
    assert rc == "2"
    assert int(peak_kib) < 1_500_000  # torch and the model alone take about 0.5 GB
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "UNTRAINED" not in line]  # the preset's warning
    assert len(lines) == 1 and lines[0].startswith("semhitok: error:") and "100000x1 pixels" in lines[0]
    assert not (tmp_path / "t.npz").exists()


# ---- shard names are file names --------------------------------------------------------------


def test_pipe_shard_name_is_read_as_a_file_and_runs_nothing(tmp_path, monkeypatch):
    png = io.BytesIO()
    Image.new("RGB", (9, 9), (1, 2, 3)).save(png, format="PNG")
    _tar_with(tmp_path / "a.tar", {"k.png": png.getvalue()})
    hostile = "pipe:touch X;cat a.tar;#.tar"
    (tmp_path / hostile).write_bytes((tmp_path / "a.tar").read_bytes())
    monkeypatch.chdir(tmp_path)
    for spec, keys in ((hostile, ["k"]), ([hostile], ["k"]), ([hostile, "a.tar"], ["k", "k"])):
        assert [s.key for s in build_dataset(spec, TransformConfig(image_size=8))] == keys
    assert not (tmp_path / "X").exists()
    # A pipe: name that is no file is a missing shard, not a command.
    with pytest.raises(FileNotFoundError):
        build_dataset("pipe:touch Y;#.tar", TransformConfig(image_size=8))
    assert not (tmp_path / "Y").exists()


def test_shard_name_with_braces_is_taken_literally_when_it_exists(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (9, 9)).save(png, format="PNG")
    literal = tmp_path / "data{0..1}.tar"
    _tar_with(literal, {"a.png": png.getvalue()})
    assert expand_shards(str(literal)) == [str(literal)]


def test_oversized_member_is_skipped_unread(tmp_path, monkeypatch):
    png = io.BytesIO()
    Image.new("RGB", (9, 9)).save(png, format="PNG")
    _tar_with(tmp_path / "s.tar", {"a.png": png.getvalue(), "b.png": png.getvalue()})
    monkeypatch.setattr(wds_module, "MAX_MEMBER_BYTES", len(png.getvalue()) - 1)
    log = tmp_path / "bad.log"
    ds = WebDatasetReader(str(tmp_path / "s.tar"), TransformConfig(image_size=8), max_bad_fraction=1.0, log_path=log)
    assert [s.key for s in ds] == []
    assert "more than the" in log.read_text() and log.read_text().count("\n") == 2


def test_gzip_compressed_shard_is_read(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (9, 9), (7, 7, 7)).save(png, format="PNG")
    with tarfile.open(tmp_path / "s.tar", "w:gz") as tar:
        info = tarfile.TarInfo("k.png")
        info.size = len(png.getvalue())
        tar.addfile(info, io.BytesIO(png.getvalue()))
    assert [s.key for s in WebDatasetReader(str(tmp_path / "s.tar"), TransformConfig(image_size=8))] == ["k"]


# ---- per-epoch shard order --------------------------------------------------------------------


def _empty_shards(folder: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        _tar_with(folder / f"s{i:02d}.tar", {})
        paths.append(str(folder / f"s{i:02d}.tar"))
    return paths


def test_shard_order_is_a_function_of_seed_and_epoch_only(tmp_path):
    paths = _empty_shards(tmp_path, 12)
    cfg = TransformConfig(image_size=8)

    def order(seed: int, epoch: int, rank: int = 0) -> list[str]:
        reader = WebDatasetReader(paths, cfg, seed=seed, shuffle_shards=True, rank=rank, world=2)
        reader.set_epoch(epoch)
        return reader.shard_order()

    assert order(3, 0) == order(3, 0, rank=1)  # every rank (and worker: no worker state) agrees
    assert sorted(order(3, 0)) == paths
    assert len({tuple(order(3, e)) for e in range(4)}) == 4  # a new order every epoch
    assert order(3, 1) != order(4, 1)  # and per seed
    assert WebDatasetReader(paths, cfg, shuffle_shards=False).shard_order() == paths


def test_workers_read_their_slice_of_the_epoch_order(tmp_path, monkeypatch):
    paths = _empty_shards(tmp_path, 9)
    reader = WebDatasetReader(paths, TransformConfig(image_size=8), seed=1, shuffle_shards=True)
    reader.set_epoch(2)
    read: dict[tuple[int, int], list[str]] = {}

    def fake_read_shard(path, on_error):
        read.setdefault(current, []).append(str(path))
        return iter(())

    monkeypatch.setattr(wds_module, "read_shard", fake_read_shard)
    for current in [(r, w) for r in range(2) for w in range(2)]:
        list(reader.iter_worker(current[0], 2, current[1], 2))
    order = reader.shard_order()
    assert read == {(r, w): order[r * 2 + w :: 4] for r in range(2) for w in range(2) if order[r * 2 + w :: 4]}
