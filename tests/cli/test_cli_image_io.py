"""load_image over every PIL mode the CLI promises, save_image, and psnr against hand computations."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semhitok.image_io import load_image, psnr, save_image


def _check(t: torch.Tensor, h: int, w: int) -> None:
    assert t.dtype == torch.float32
    assert tuple(t.shape) == (3, h, w)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_rgb_exact(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(tmp_path / "a.png")
    t = load_image(tmp_path / "a.png")
    _check(t, 5, 7)
    assert torch.allclose(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((2, 3, 4), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (255, 0, 0, 0)  # fully transparent -> white
    arr[0, 2] = (0, 0, 0, 128)  # half-transparent black -> grey
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    t = load_image(tmp_path / "a.png")
    _check(t, 2, 3)
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert t[:, 0, 1].tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(t[:, 0, 2], torch.full((3,), 1 - 128 / 255))


def test_greyscale_l_and_la(tmp_path):
    Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8), "L").save(tmp_path / "l.png")
    t = load_image(tmp_path / "l.png")
    _check(t, 1, 3)
    assert torch.allclose(t, torch.tensor([0.0, 0.2, 1.0]).expand(3, 1, 3))
    la = np.array([[[0, 255], [0, 0]]], dtype=np.uint8)  # opaque black, transparent black
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    t = load_image(tmp_path / "la.png")
    _check(t, 1, 2)
    assert t[:, 0, 0].tolist() == [0.0] * 3 and t[:, 0, 1].tolist() == [1.0] * 3


def test_palette_with_and_without_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 255, 10, 200, 30] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    t = load_image(tmp_path / "p.png")
    _check(t, 1, 2)
    assert t[:, 0, 0].tolist() == [0.0, 0.0, 1.0]
    im.save(tmp_path / "pt.png", transparency=0)  # index 0 transparent
    im.save(tmp_path / "pt.gif", transparency=0)
    for name in ("pt.png", "pt.gif"):
        t = load_image(tmp_path / name)
        _check(t, 1, 2)
        assert t[:, 0, 0].tolist() == [1.0, 1.0, 1.0], name
        assert torch.allclose(t[:, 0, 1], torch.tensor([10, 200, 30]) / 255.0), name


def test_cmyk(tmp_path):
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 1] = (0, 0, 0, 255)  # full black ink
    arr[1, 0] = (255, 0, 0, 0)  # full cyan
    Image.fromarray(arr, "CMYK").save(tmp_path / "c.tif")
    t = load_image(tmp_path / "c.tif")
    _check(t, 2, 2)
    assert t[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert t[:, 0, 1].tolist() == [0.0, 0.0, 0.0]
    assert t[:, 1, 0].tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_scaled_by_bit_depth(tmp_path, suffix):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / f"a{suffix}")
    with Image.open(tmp_path / f"a{suffix}") as im:
        assert im.mode in ("I;16", "I;16B", "I;16L", "I")
    t = load_image(tmp_path / f"a{suffix}")
    _check(t, 1, 4)
    assert torch.allclose(t[0, 0], torch.tensor(values[0] / 65535.0, dtype=torch.float32))
    # a dark 16-bit frame stays dark: values are not stretched to their own maximum
    dark = np.array([[0, 1000]], dtype=np.uint16)
    Image.fromarray(dark).save(tmp_path / f"dark{suffix}")
    assert float(load_image(tmp_path / f"dark{suffix}").max()) == pytest.approx(1000 / 65535)


def test_mode_i_32_bit_holding_16_bit_values(tmp_path):
    values = np.array([[0, 4096, 65535]], dtype=np.int32)
    Image.fromarray(values, "I").save(tmp_path / "a.tif")
    with Image.open(tmp_path / "a.tif") as im:
        assert im.mode == "I"
    t = load_image(tmp_path / "a.tif")
    _check(t, 1, 3)
    assert torch.allclose(t[1, 0], torch.tensor([0.0, 4096 / 65535, 1.0]))


def test_one_bit(tmp_path):
    im = Image.new("1", (3, 1), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "b.png")
    t = load_image(tmp_path / "b.png")
    _check(t, 1, 3)
    assert t[0, 0].tolist() == [0.0, 1.0, 0.0]


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((2, 4, 3), dtype=np.uint8)  # 4 wide, 2 high, red top-left
    arr[0, 0] = (255, 0, 0)
    im = Image.fromarray(arr, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "o.png", exif=exif)
    t = load_image(tmp_path / "o.png")
    _check(t, 4, 2)  # displayed upright: 2 wide, 4 high
    assert t[:, 0, 1].tolist() == [1.0, 0.0, 0.0]  # top-left went to top-right


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(IsADirectoryError):
        load_image(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(tmp_path / "cut.png")


def test_save_image_round_trip(tmp_path):
    x = torch.rand(3, 6, 5)
    save_image(x, tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        assert im.mode == "RGB" and im.size == (5, 6)
    assert (load_image(tmp_path / "x.png") - x).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(TypeError):
        save_image(torch.zeros(3, 2, 2, dtype=torch.uint8), tmp_path / "y.png")
    with pytest.raises(ValueError):
        save_image(torch.zeros(4, 2, 2), tmp_path / "y.png")


def test_psnr_hand_computation():
    a = torch.zeros(3, 4, 4)
    b = a.clone()
    b[0, 0, 0] = 0.5  # MSE = 0.25 / 48
    assert psnr(a, b) == pytest.approx(10 * math.log10(48 / 0.25))  # 22.833 dB
    assert psnr(a, b) == pytest.approx(22.8330, abs=1e-4)
    assert psnr(a, torch.full_like(a, 0.1)) == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    assert psnr(a * 255, torch.full_like(a, 25.5), data_range=255.0) == pytest.approx(20.0)
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError):
        psnr(a, torch.zeros(3, 4, 5))


# ---- hostile inputs through the command line (FIFOs, size bombs, bad-only folders, shard names) ----


def _thin_png(path, width: int, height: int = 1) -> None:
    Image.new("RGB", (width, height), (10, 20, 30)).save(path)


def test_encode_refuses_size_bombs_in_one_line(tmp_path, cli, error_line, tiny_model):
    _thin_png(tmp_path / "strip.png", 16000)  # aspect ratio 16000:1 (peaked at 1.2 GB before)
    _thin_png(tmp_path / "long.png", 100000)  # 370 bytes, 100000 px a side (peaked at 5.3 GB)
    for name, fragment in (("strip.png", "aspect ratio of 16000:1"), ("long.png", "100000x1 pixels")):
        code, out, err = cli("encode", tmp_path / name, "--model", tiny_model, "-o", tmp_path / "t.npz")
        assert code == 2 and out == ""
        error_line(err, name, fragment)
        assert not (tmp_path / "t.npz").exists()


def test_encode_refuses_a_fifo_at_once(tmp_path, tiny_model):
    # Through the console script: a blocked open() would hang here until the timeout.
    os.mkfifo(tmp_path / "photo.png")
    script = Path(sys.executable).with_name("semhitok")
    proc = subprocess.run([str(script), "encode", str(tmp_path / "photo.png"), "--model", str(tiny_model), "-o", str(tmp_path / "t.npz")],
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("semhitok: error:") and "not a regular file" in lines[0]
    assert not (tmp_path / "t.npz").exists()


def test_eval_on_a_folder_of_only_bad_files_is_one_line(tmp_path, cli, error_line, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(12):
        (data / f"bad{i:02d}.png").write_bytes(b"not a png at all")
    _thin_png(data / "strip.png", 16000)
    code, _, err = cli("eval", "--data", data, "--model", tiny_model, "-o", tmp_path / "report")
    assert code == 2
    line = error_line(err, "none of the 13 image files could be decoded", "first: bad00.png")
    assert "bad01.png" not in line
    assert not (tmp_path / "report").exists()


def test_pipe_shard_name_runs_no_command(tmp_path, tiny_model):
    members = {}
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(buf, format="PNG")
        members[f"k{i}.png"] = buf.getvalue()
    hostile = "pipe:touch X;cat a.tar;#.tar"
    with tarfile.open(tmp_path / hostile, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    script = Path(sys.executable).with_name("semhitok")
    proc = subprocess.run([str(script), "eval", "--data", hostile, "--model", str(tiny_model), "-o", "report"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert not (tmp_path / "X").exists()
    assert proc.returncode == 0, proc.stderr  # read as the file it is
    assert json.loads((tmp_path / "report" / "report.json").read_text())["images"] == 2
