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
