"""scripts/mini_world_results.py end to end on the shipped data slice (5 steps per run, --quick)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from semhitok.pretrained import available

ROOT = Path(__file__).resolve().parents[2]
SLICE = ROOT / "src" / "semhitok" / "assets" / "colour-fashion-mnist-mini"


@pytest.mark.slow
@pytest.mark.skipif("mini-teacher" not in available() or "mini-judge" not in available(), reason="needs the shipped mini-teacher and mini-judge")
def test_quick_run_measures_trains_and_reports(tmp_path):
    docs_before = (ROOT / "docs" / "results.md").read_text() if (ROOT / "docs" / "results.md").is_file() else None
    cmd = [sys.executable, str(ROOT / "scripts" / "mini_world_results.py"), "--data", str(SLICE), "--out", str(tmp_path), "--quick", "--only", "s2-m4", "s1-norm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    measured = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "measured").glob("*.json")}
    assert set(measured) == {"s2-m4", "s1-norm"}  # the parent main-s1 was trained but not measured
    assert (tmp_path / "main-s1" / "model" / "config.json").is_file()
    m4 = measured["s2-m4"]
    assert m4["overrides"] == ["model.subcodebook_size=4"] and m4["train"]["steps"] == 5
    assert 0 < m4["metrics"]["psnr_db"] < 60 and 0 <= m4["metrics"]["subcode_usage"] <= 1
    assert set(measured["s1-norm"]["metrics"]["probe_z_q"]) == {"class_tokens", "colour_tokens", "class_mean", "colour_mean"}
    report = (tmp_path / "results.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| m = 4 |"))
    assert f"{m4['metrics']['psnr_db']:.2f}" in row
    assert next(line for line in report.splitlines() if line.startswith("| m = 12 |")).startswith("| m = 12 | not run yet")
    # a --quick run never touches the project's docs
    assert docs_before == ((ROOT / "docs" / "results.md").read_text() if (ROOT / "docs" / "results.md").is_file() else None)
    # a second call finds both measurements and trains nothing
    again = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert "$ " not in again.stdout
