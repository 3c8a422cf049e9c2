"""Smoke test of benchmarks/mllm_train.py at toy sizes: every setting (compiled layers included)
is timed, FLOPs are counted, and the breakdown's parts are all there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mllm_train.py"


@pytest.mark.slow
def test_mllm_train_benchmark_runs_at_toy_size(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "SEMHITOK_BENCH_TOY": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(SCRIPT), "--rounds", "1", "--warmup", "1", "--compile", "--json", str(out), "--markdown", str(tmp_path / "r.md")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads(out.read_text())
    names = [r["setting"] for r in res["rows"]]
    assert names[0] == "shipped" and "batch 16, compiled" in names
    for row in res["rows"]:
        assert row["median_s"] > 0 and row["gflop_per_step"] > 0 and row["mfu"] > 0  # toy sizes: MFU means nothing
    assert set(res["breakdown"]) == {"data (collate)", "input embedding (adapter)", "LLM body", "joint head + loss", "optimizer", "(whole step)"}
    assert "| shipped |" in (tmp_path / "r.md").read_text()
