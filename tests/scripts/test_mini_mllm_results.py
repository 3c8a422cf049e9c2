"""scripts/mini_mllm_results.py end to end on the shipped data slice with a tiny random Llama in place
of SmolLM2 (--quick: 2 steps per run, 8 images per score)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SLICE = ROOT / "src" / "semhitok" / "assets" / "colour-fashion-mnist-mini"


@pytest.mark.slow
def test_quick_run_trains_measures_and_reports(tmp_path, llm_factory, text_tokenizer_factory):
    with torch.random.fork_rng(devices=[]):
        llm_factory("llama", tied=False).save_pretrained(tmp_path / "llm")
    text_tokenizer_factory().save_pretrained(tmp_path / "llm")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "mini_mllm_results.py"), "--data", str(SLICE), "--out", str(out), "--quick",
           "--llm", str(tmp_path / "llm"), "--only", "mllm-dual", "abl-semantic", "gen-single", "rec-noise", "--cfg-sweep", "1", "3"]
    docs_before = (ROOT / "docs" / "results.md").read_text()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    measured = {p.stem: json.loads(p.read_text()) for p in (out / "measured").glob("*.json")}  # training/ is a subfolder
    assert set(measured) == {"mllm-dual", "abl-semantic", "gen-single", "rec-noise"}
    dual = measured["mllm-dual"]
    assert dual["train"]["steps"] == 2 and dual["overrides"] == ["eval.every=400"]
    assert dual["train"]["caption_curve"][-1]["step"] == 2  # the probe measures the last step too
    assert measured["abl-semantic"]["overrides"] == ["data.mix.understanding=1.0", "data.mix.generation=0.0", "mllm.adapter=semantic"]
    assert set(dual["metrics"]["generation"]) >= {"1", "3"}  # the main run sweeps the CFG scale
    assert measured["abl-semantic"]["metrics"]["generation"] == {} and not measured["abl-semantic"]["draws"]  # understanding only
    assert measured["abl-semantic"]["metrics"]["image_nll"] is None
    drawer = measured["gen-single"]  # generation only: drawn and its NLL measured, never asked to read
    assert drawer["overrides"] == ["data.mix.understanding=0.0", "data.mix.generation=1.0", "mllm.adapter=single"]
    assert drawer["metrics"]["understanding"] is None and not drawer["reads"] and set(drawer["metrics"]["generation"]) >= {"3"}
    nll = drawer["metrics"]["image_nll"]
    assert nll["all"]["images"] == 8 and 0 < nll["all"]["nll"] and nll["all"]["se"] > 0
    u = dual["metrics"]["understanding"]["all"]
    assert u["answers"] == 8 and 0 <= u["class_accuracy"] <= 1
    g = dual["metrics"]["generation"]["3"]["all"]
    assert g["images"] == 8 and g["fd"] >= 0
    assert (out / "measured" / "figures" / "mllm-dual-generated.png").is_file()
    report = (out / "results.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| main run: Dual-MLP (shipped as mini-mllm) |") and "%" in line)
    assert f"{100 * u['class_accuracy']:.1f}%" in row
    assert "| plain embedding table | not run yet" in report
    assert "| plain embedding table, drawing only | not run yet" in report
    assert f"{nll['all']['nll']:.3f} ± {nll['all']['se']:.3f}" in report
    assert "(measured/figures/mllm-dual-generated.png)" in report
    recipe = measured["rec-noise"]  # a recipe experiment: scored by the caption-following it logged while training
    assert "data.image_noise=0.2" in recipe["overrides"] and not recipe["draws"] and not recipe["reads"]
    point = recipe["train"]["caption_curve"][-1]
    assert point["step"] == 2 and 0 <= point["gen_cls_colour"] <= 1 and 0 <= point["gen_cls_class"] <= 1
    row = next(line for line in report.splitlines() if line.startswith("| rec-noise |"))
    assert f"{point['caption_info']:.2f} ± {point['caption_info_se']:.2f}" in row
    assert "| rec-base |" in report and "not run yet" in next(line for line in report.splitlines() if line.startswith("| rec-base |"))
    assert docs_before == (ROOT / "docs" / "results.md").read_text()  # --quick never touches the docs
    again = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert "$ " not in again.stdout  # measured runs are not trained again
    # the training record outlives the run folder: measure a copy of the model elsewhere
    assert json.loads((out / "measured" / "training" / "mllm-dual.json").read_text())["steps"] == 2
    copy = tmp_path / "copy"
    (out / "mllm-dual" / "model").rename(copy)
    subprocess.run([*cmd, "--rerun", "mllm-dual", "--measure-from", f"mllm-dual={copy}"], check=True, capture_output=True, text=True)
    remeasured = json.loads((out / "measured" / "mllm-dual.json").read_text())
    assert remeasured["measured_from"] == str(copy) and remeasured["train"]["steps"] == 2
