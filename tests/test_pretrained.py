"""The models shipped in the package load, claim what they are, and carry a model card."""

from __future__ import annotations

import json
import re

import pytest
import torch

from semhitok.pretrained import PRETRAINED, available, pretrained_path

SHIPPED = available()


def test_unknown_names_are_refused():
    with pytest.raises(KeyError, match="shipped: mini-semhitok"):
        pretrained_path("nope")


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_each_shipped_model_has_a_card(name):
    if name not in SHIPPED:
        pytest.skip(f"{name} is not shipped in this checkout")
    card = (pretrained_path(name) / "README.md").read_text()
    assert "min on" in card and "%" in card  # CPU time and measured numbers


def test_tokenizer_loads_with_the_fingerprint_it_claims():
    if "mini-semhitok" not in SHIPPED:
        pytest.skip("mini-semhitok is not shipped in this checkout")
    from semhitok import SemHiTok

    folder = pretrained_path("mini-semhitok")
    model = SemHiTok.from_pretrained(folder)  # refuses weights whose codebooks differ from config.json's fingerprint
    claimed = json.loads((folder / "config.json").read_text())["semhitok_fingerprint"]
    assert model.fingerprint() == claimed
    assert re.search(rf"fingerprint `{claimed}`", (folder / "README.md").read_text())
    assert (model.image_size, model.grid_size) == (64, 8)
    enc = model.encode(torch.rand(1, 3, 64, 64))
    assert enc.ids.shape == (1, 8, 8) and int(enc.ids.max()) < model.vocab_size


def test_teacher_is_a_siglip_vision_folder():
    if "mini-teacher" not in SHIPPED:
        pytest.skip("mini-teacher is not shipped in this checkout")
    from transformers import SiglipVisionModel

    from semhitok.modeling import teacher_config_from_folder

    folder = pretrained_path("mini-teacher")
    config = teacher_config_from_folder(folder)
    assert config.kind == "siglip" and config.grid_size == 8
    model = SiglipVisionModel.from_pretrained(folder, local_files_only=True)
    out = model(pixel_values=torch.zeros(1, 3, 64, 64))
    assert out.last_hidden_state.shape == (1, 64, config.hidden_size)


def test_judge_loads_and_predicts():
    if "mini-judge" not in SHIPPED:
        pytest.skip("mini-judge is not shipped in this checkout")
    from semhitok.evaluation.judge import Judge

    cls, col = Judge.from_pretrained(pretrained_path("mini-judge")).predict(torch.rand(2, 3, 64, 64))
    assert cls.shape == col.shape == (2,)


def test_mllm_loads_on_the_packaged_llm_and_reads_held_out_images():
    """mini-mllm: delta weights in bf16 on smollm2-135m and mini-semhitok by name; its answers
    about held-out images of the bundled slice name the right class and colour far above chance."""
    if "mini-mllm" not in SHIPPED or "mini-semhitok" not in SHIPPED:
        pytest.skip("mini-mllm is not shipped in this checkout")
    from safetensors import safe_open

    from semhitok.cli.demo import SLICE
    from semhitok.data.colour_fashion import load_split
    from semhitok.evaluation.mllm_scores import score_answers
    from semhitok.evaluation.mllm_showcase import QUESTION
    from semhitok.mllm import SemHiTokMLLM

    folder = pretrained_path("mini-mllm")
    record = json.loads((folder / "mllm_config.json").read_text())
    assert record["llm"]["weights"] == "delta" and record["llm"]["base"] == "smollm2-135m"
    assert record["tokenizer"]["base"] == "mini-semhitok" and record["text_tokenizer"]["from_base_llm"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "mllm.safetensors", "mllm_config.json"]
    with safe_open(str(folder / "mllm.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if k != "llm_probe"} == {torch.bfloat16}
    mm = SemHiTokMLLM.from_pretrained(folder)
    assert mm.tokenizer.fingerprint() == record["tokenizer_fingerprint"]
    data = load_split(SLICE, "test", limit=32)
    scores = score_answers(mm.describe(data.float_images(), QUESTION, max_new_tokens=16), data.labels, data.colours)
    # chance is 10% (classes) and about 1 in 8 (colours)
    assert scores.class_accuracy >= 0.4 and scores.colour_accuracy >= 0.6, scores


def test_generate_and_describe_use_the_shipped_mllm_by_default(tmp_path, capsys):
    if "mini-mllm" not in SHIPPED or "mini-semhitok" not in SHIPPED:
        pytest.skip("mini-mllm is not shipped in this checkout")
    from semhitok.cli.main import main

    assert main(["generate", "a red ankle boot", "-o", str(tmp_path / "gen"), "--n", "2", "--seed", "0"]) == 0
    record = json.loads((tmp_path / "gen" / "generate.json").read_text())
    assert record["model"].endswith("mini-mllm") and len(record["files"]) == 2
    capsys.readouterr()
    image = tmp_path / "gen" / record["files"][0]["file"]
    assert main(["describe", str(image)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and len(line) > len(f"{image}: ")
