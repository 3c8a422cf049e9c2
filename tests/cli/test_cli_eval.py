"""`semhitok eval`: report files, honest labels (never rFID without the FID weights), cache reuse."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from semhitok.cli.main import main
from semhitok.evaluation.inception import FIDInceptionV3

PHOTOS = Path(__file__).resolve().parents[2] / "assets" / "photos"


def test_eval_report_without_real_weights(tmp_path, capsys):
    out, cache = tmp_path / "rep", tmp_path / "cache"
    assert main(["eval", "--preset", "tiny", "--data", str(PHOTOS), "-o", str(out), "--cache-dir", str(cache)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 5 and not report["frechet"]["is_rfid"]
    assert "NOT rFID" in report["frechet"]["label"] and "rFID" not in report["frechet"]["label"].replace("NOT rFID", "")
    assert math.isfinite(report["frechet"]["value"]) and report["frechet"]["value"] > 0
    assert math.isfinite(report["psnr"]) and 0 < report["ssim"] < 1
    assert report["bits_per_image"] == 16 * math.log2(1024)
    assert report["codebook"]["num_tokens"] == 5 * 16
    assert report["protocol"]["crop"] == "center" and report["protocol"]["image_size"] == 64
    md = (out / "report.md").read_text()
    assert "not rFID" in md and "| PSNR (dB) |" in md
    page = (out / "report.html").read_text()
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', page))
    # The reference statistics are cached per dataset, protocol and extractor, and reused.
    assert len(list(cache.glob("*.safetensors"))) == 1
    assert main(["eval", "--preset", "tiny", "--data", str(PHOTOS), "-o", str(tmp_path / "rep2"), "--cache-dir", str(cache)]) == 0
    again = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert again["frechet"]["reference_cached"] and again["frechet"]["value"] == report["frechet"]["value"]
    # A different protocol (fewer images) gets its own reference statistics.
    assert main(["eval", "--preset", "tiny", "--data", str(PHOTOS), "-o", str(tmp_path / "rep3"), "--cache-dir", str(cache), "--max-images", "3"]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_eval_calls_it_rfid_only_with_fid_weights(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "pt_inception.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)  # the real layout (random values here)
    out = tmp_path / "rep"
    assert main(["eval", "--preset", "tiny", "--data", str(PHOTOS), "-o", str(out), "--fid-weights", str(weights), "--cache-dir", str(tmp_path / "c"), "--max-images", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frechet"]["is_rfid"] and report["frechet"]["label"].startswith("rFID")


def test_eval_bad_inputs(tmp_path, capsys):
    assert main(["eval", "--preset", "tiny", "--data", str(PHOTOS), "-o", str(tmp_path / "r"), "--fid-weights", str(tmp_path / "nope.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["eval", "--preset", "tiny", "--data", str(tmp_path / "missing"), "-o", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_eval_under_torchrun_matches_one_process(tmp_path):
    """2 gloo processes split the images and merge the statistics: the same report as 1 process."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = ["-m", "semhitok", "eval", "--preset", "tiny", "--data", str(PHOTOS), "--batch-size", "2"]
    single = subprocess.run([sys.executable, *common, "-o", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "c1")], env=env, capture_output=True, text=True, timeout=180)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common, "-o", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2")], env=env, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert a["images"] == b["images"] == 5
    assert b["frechet"]["value"] == pytest.approx(a["frechet"]["value"], rel=1e-6)
    assert b["psnr"] == pytest.approx(a["psnr"], rel=1e-9) and b["ssim"] == pytest.approx(a["ssim"], rel=1e-9)
    assert a["codebook"] == b["codebook"]
