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
