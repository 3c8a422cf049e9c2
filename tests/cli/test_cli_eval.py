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


@pytest.mark.slow
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


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong_shapes", "nan"])
def test_corrupt_reference_cache_is_named_recomputed_and_replaced(tmp_path, capsys, tiny_model, damage):
    """Before: a damaged cache file failed every later eval of that data with exit 1, unnamed."""
    from safetensors.torch import load_file, save_file

    cache = tmp_path / "cache"
    argv = ["eval", "--model", str(tiny_model), "--data", str(PHOTOS), "--cache-dir", str(cache), "--max-images", "3"]
    assert main([*argv, "-o", str(tmp_path / "first")]) == 0
    first = json.loads((tmp_path / "first" / "report.json").read_text())
    (cached,) = cache.glob("*.safetensors")
    good = {k: v.clone() for k, v in load_file(str(cached)).items()}  # a copy: load_file maps the file
    if damage == "truncated":
        cached.write_bytes(cached.read_bytes()[:100])
    elif damage == "garbage":
        cached.write_bytes(b"not a cache file")
    elif damage == "wrong_shapes":
        save_file({"mu": good["mu"][:3], "sigma": good["sigma"]}, str(cached))
    else:
        save_file({"mu": good["mu"], "sigma": torch.full_like(good["sigma"], float("nan"))}, str(cached))
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path / "second")]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("semhitok: warning: ") and str(cached) in warnings[0] and "recomputing" in warnings[0], err
    second = json.loads((tmp_path / "second" / "report.json").read_text())
    assert not second["frechet"]["reference_cached"] and second["frechet"]["value"] == pytest.approx(first["frechet"]["value"], rel=1e-6)
    # The file was rewritten whole: the next run uses it again, silently.
    repaired = load_file(str(cached))
    assert torch.equal(repaired["mu"], good["mu"]) and torch.equal(repaired["sigma"], good["sigma"])
    assert main([*argv, "-o", str(tmp_path / "third")]) == 0
    assert capsys.readouterr().err == ""
    assert json.loads((tmp_path / "third" / "report.json").read_text())["frechet"]["reference_cached"]
    assert [p.name for p in cache.iterdir()] == [cached.name]  # no temporary files


@pytest.mark.parametrize("command", ["eval", "visualize"])
def test_folder_of_only_bad_files_is_one_line(tmp_path, capsys, tiny_model, command):
    """Before: a line per bad file, then the error. After: the error alone, naming the log."""
    data = tmp_path / "bad"
    data.mkdir()
    for i in range(6):
        (data / f"x{i}.jpg").write_bytes(b"not a jpeg")
    extra = ["--cache-dir", str(tmp_path / "cache")] if command == "eval" else []
    assert main([command, "--model", str(tiny_model), "--data", str(data), "-o", str(tmp_path / "out"), *extra]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    log = tmp_path / "out.bad_files.log"
    assert len(lines) == 1 and lines[0].startswith("semhitok: error: ") and str(data) in lines[0], lines
    assert str(log) in lines[0]
    assert all(f"x{i}.jpg" in log.read_text() for i in range(6))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["eval", "visualize"])
def test_some_bad_files_give_a_log_and_one_warning(tmp_path, capsys, tiny_model, command):
    import shutil

    data = tmp_path / "mixed"
    shutil.copytree(PHOTOS, data)
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    log = tmp_path / "out.bad_files.log"
    log.write_text("a stale line from an earlier run\n")
    extra = ["--cache-dir", str(tmp_path / "c")] if command == "eval" else []
    assert main([command, "--model", str(tiny_model), "--data", str(data), "-o", str(tmp_path / "out"), *extra]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("semhitok: warning: 1 undecodable file was skipped") and str(log) in err[0], err
    assert "broken.jpg" in log.read_text() and "stale" not in log.read_text()
