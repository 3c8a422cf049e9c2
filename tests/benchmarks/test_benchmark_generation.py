"""Smoke test of benchmarks/generation.py at toy size: every method runs (our cached sampler, full
recomputation, HF generate with guidance_scale on the joint-logits wrapper, our loop with unbatched
CFG), with timings and peak memory from the child processes, the greedy ids check passes, the
recompute extrapolation path runs, and the JSON and markdown hold what BENCHMARKS.md will quote."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "generation.py"
METHODS = {"ours", "recompute", "hf_generate", "ours_unbatched_cfg"}


@pytest.mark.slow
def test_generation_benchmark_runs_at_toy_size(tmp_path):
    out, table = tmp_path / "results.json", tmp_path / "tables.md"
    env = {**os.environ, "SEMHITOK_BENCH_TOY": "1"}
    # toy grids: 16 (4x4) and 4 (2x2) image tokens; recompute is extrapolated from 8 and 4 tokens on
    # the 16-token image and measured in full on the 4-token one
    cmd = [sys.executable, str(SCRIPT), "--llms", "tiny", "--tokens", "16", "4", "--recompute-tokens", "8",
           "--json", str(out), "--markdown", str(table)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["toy"] and res["all_ids_checks_passed"]
    assert [(c["llm"], c["image_tokens"]) for c in res["configs"]] == [("tiny", 16), ("tiny", 4)]
    for c in res["configs"]:
        assert set(c["methods"]) == METHODS
        for name, m in c["methods"].items():
            assert m["images_per_s"] > 0 and m["image_tokens_per_s"] == pytest.approx(m["images_per_s"] * c["image_tokens"])
            assert m["peak_memory_bytes"] is not None and m["peak_memory_bytes"] >= 0, name
        check = c["ids_check"]
        assert check["tokens_checked"] == c["image_tokens"]
        # greedy ids, same seed: the cache, HF's unbatched CFG and our unbatched CFG all give ours
        assert check["recompute_equal_ours"] and check["hf_generate_equal_ours"] and check["ours_unbatched_cfg_equal_ours"]
        assert set(c["speedup_of_ours"]) == METHODS - {"ours"}
    big, small = res["configs"]
    assert big["methods"]["recompute"]["extrapolated"] and set(big["methods"]["recompute"]["measured"]) == {"8", "4"}
    assert big["methods"]["recompute"]["peak_memory_run_tokens"] == 8
    fit = big["methods"]["recompute"]["fit"]
    assert fit["A_s"] > 0 and fit["b_s"] >= 0  # noise never yields a negative time
    assert not small["methods"]["recompute"]["extrapolated"]
    text = table.read_text()
    assert "| tiny | 16 | 2 | recompute (extrapolated) |" in text and "| tiny | 4 | 2 | hf_generate |" in text
