"""Smoke test of benchmarks/quantizers.py at toy sizes: the script runs end to end (every part,
the peer comparison and the memory children included) and writes the results it promises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quantizers.py"


@pytest.mark.slow
def test_quantizer_benchmark_runs_at_toy_size(tmp_path):
    pytest.importorskip("vector_quantize_pytorch")  # the peer (the `bench` extra)
    out = tmp_path / "results.json"
    env = {**os.environ, "SEMHITOK_BENCH_TOY": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--repeats", "1", "--repeats-flat", "1", "--warmup", "0", "--json", str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {"A", "B", "C", "machine"} <= res.keys()
    assert res["A"]["config"]["codebook_size"] == 64  # the toy size really was used
    assert res["B"]["config"]["flat_codes"] == 64 * 4


def test_quantizer_benchmark_refuses_another_peer_version_in_one_line(tmp_path):
    """The numbers in BENCHMARKS.md hold for the pinned peer only: any other installed version is
    refused before anything runs, with one line naming both versions, exit 2."""
    fake = tmp_path / "site"
    dist = fake / "vector_quantize_pytorch-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vector-quantize-pytorch\nVersion: 0.0.1\n")
    # A distribution found first on sys.path is the one importlib.metadata reports.
    env = {**os.environ, "PYTHONPATH": str(fake), "SEMHITOK_BENCH_TOY": "1"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--parts", "A", "--no-memory"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "0.0.1" in lines[0] and "1.32.0" in lines[0]
