"""Smoke test of benchmarks/throughput.py at toy size: every part runs (FLOP count, matmul peak,
encode/decode timing in fp32 and bf16, the tokenize pipeline against pure encode) and the JSON
holds what BENCHMARKS.md quotes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


@pytest.mark.slow
def test_throughput_benchmark_runs_at_toy_size(tmp_path):
    out, table = tmp_path / "results.json", tmp_path / "tables.md"
    env = {**os.environ, "SEMHITOK_BENCH_TOY": "1"}
    cmd = [sys.executable, str(SCRIPT), "--pipeline-workers", "0", "1", "--json", str(out), "--markdown", str(table)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["presets"]) == {"tiny"} and set(res["matmul_peak_flops"]) == {"fp32", "bf16"}
    rows = res["presets"]["tiny"]["rows"]
    assert {(r["batch"], r["precision"]) for r in rows} == {(1, "fp32"), (1, "bf16"), (4, "fp32"), (4, "bf16")}
    for r in rows:
        for part in ("encode", "decode"):
            m = r[part]
            assert m["flops_per_image"] > 0 and m["images_per_s"] > 0
            assert m["mfu"] == pytest.approx(m["flops_per_image"] * m["images_per_s"] / res["matmul_peak_flops"][r["precision"]])
    # FLOPs per image do not depend on the batch size or the precision
    flops = {r["encode"]["flops_per_image"] for r in rows}
    assert max(flops) / min(flops) < 1.01
    pipeline = res["pipeline"]["tiny"]
    assert [w["workers"] for w in pipeline["pipeline"]] == [0, 1] and pipeline["images"] == 16
    assert all(w["images_per_s"] > 0 for w in pipeline["pipeline"])
    assert "| tiny |" in table.read_text()
