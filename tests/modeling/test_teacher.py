"""The frozen teacher: preprocessing inside, never trainable, loads Hugging Face folders."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.config import TeacherConfig, siglip_large_patch16_256
from semhitok.modeling import SemanticTeacher, teacher_config_from_folder
from semhitok.modeling.teacher import _no_init_weights
from semhitok.pretrained import available, pretrained_path

TINY_VISION = SemHiTokConfig.from_preset("tiny").teacher.hf_config


def test_teacher_applies_its_own_preprocessing():
    """Output equals the HF model run on (resized, mean/std-normalised) pixels."""
    teacher = SemanticTeacher(TeacherConfig(kind="siglip", hf_config=TINY_VISION, image_mean=(0.1, 0.2, 0.3), image_std=(0.5, 0.6, 0.7)))
    images = torch.rand(2, 3, 80, 80)
    resized = F.interpolate(images, size=(64, 64), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = teacher.model(pixel_values=(resized - mean) / std).last_hidden_state
    torch.testing.assert_close(teacher(images), expected)


def test_teacher_is_frozen():
    """No parameter requires grad, .train() keeps it in eval mode, and no gradient flows into it."""
    tok = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    tok.train()
    assert not tok.teacher.training and not any(m.training for m in tok.teacher.modules())
    assert not any(p.requires_grad for p in tok.teacher.parameters())
    out = tok.semantic_forward(torch.rand(2, 3, 64, 64))
    assert not out.features.requires_grad
    (out.reconstruction.sum() + out.quantizer.loss).backward()
    assert all(p.grad is None for p in tok.teacher.parameters())
    assert tok.semantic_head.fc1.weight.grad is not None


def test_feature_layer_selects_hidden_state():
    cfg = TeacherConfig(kind="siglip", hf_config=TINY_VISION, feature_layer=-2)
    teacher = SemanticTeacher(cfg)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        hidden = teacher.model(pixel_values=(images - 0.5) / 0.5, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(teacher(images), hidden)


def test_clip_teacher_drops_class_token():
    hf = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    teacher = SemanticTeacher(TeacherConfig(kind="clip", hf_config=hf.to_dict()))
    assert teacher(torch.rand(2, 3, 32, 32)).shape == (2, 16, 32)


def _save_preprocessor(folder, mean, std):
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))


@pytest.mark.slow
def test_siglip_large_patch16_256_round_trips_through_a_hf_folder(tmp_path):
    """The real SigLIP-L/16-256 vision architecture loads from a Hugging Face folder, weights intact."""
    with _no_init_weights():  # HF's own init of 303M weights takes ~30 s on 2 cores; fill faster
        hf = SiglipVisionModel(SiglipVisionConfig(**siglip_large_patch16_256(), vision_use_head=False)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in hf.parameters():
            param.uniform_(-0.03, 0.03, generator=generator)
    hf.save_pretrained(tmp_path)
    _save_preprocessor(tmp_path, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    cfg = teacher_config_from_folder(tmp_path)
    assert cfg.kind == "siglip" and cfg.grid_size == 16 and cfg.hidden_size == 1024
    teacher = SemanticTeacher(cfg)
    ours = teacher.model.state_dict()
    for name, value in hf.state_dict().items():
        assert torch.equal(ours[name], value), name
    images = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        expected = hf(pixel_values=(images - 0.5) / 0.5).last_hidden_state
    torch.testing.assert_close(teacher(images), expected)


def test_full_two_tower_siglip_folder_uses_its_vision_tower(tmp_path):
    """A full SiglipModel folder (text + vision) yields the vision tower and the folder's mean/std."""
    torch.manual_seed(0)
    full = SiglipModel(SiglipConfig(
        vision_config={**TINY_VISION},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 100},
    )).eval()
    full.save_pretrained(tmp_path)
    _save_preprocessor(tmp_path, [0.4, 0.4, 0.4], [0.3, 0.3, 0.3])
    cfg = teacher_config_from_folder(tmp_path)
    assert cfg.image_mean == (0.4, 0.4, 0.4) and cfg.image_std == (0.3, 0.3, 0.3)
    teacher = SemanticTeacher(cfg)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.vision_model(pixel_values=(images - 0.4) / 0.3).last_hidden_state
    torch.testing.assert_close(teacher(images), expected)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        teacher_config_from_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="neither SigLIP nor CLIP"):
        teacher_config_from_folder(tmp_path)


@pytest.mark.skipif("mini-teacher" not in available(), reason="needs the shipped mini-teacher")
def test_a_shipped_teacher_is_found_by_name():
    """teacher.pretrained_path may name a shipped teacher; its weights are the ones loaded."""
    from safetensors.torch import load_file

    model = SemHiTok(SemHiTokConfig.from_preset("mini", teacher={"pretrained_path": "mini-teacher"}))
    saved = load_file(str(pretrained_path("mini-teacher") / "model.safetensors"))
    name = next(k for k in saved if k.endswith("encoder.layers.0.mlp.fc1.weight"))
    assert torch.equal(dict(model.teacher.model.named_parameters())[name], saved[name])


def test_the_unused_pooling_head_is_not_reported_but_other_stray_weights_are(tmp_path, capsys, caplog):
    """Every SigLIP checkpoint carries a pooling head the teacher never builds: loading one must not
    print a load report about it, while a weight that belongs nowhere still gets reported."""
    from safetensors.torch import load_file, save_file

    hf = SiglipVisionModel(SiglipVisionConfig(**TINY_VISION, vision_use_head=True))
    hf.save_pretrained(tmp_path)
    assert any(".head." in k or k.startswith("head.") for k in load_file(str(tmp_path / "model.safetensors")))
    SemanticTeacher(teacher_config_from_folder(tmp_path))
    heard = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "UNEXPECTED" not in heard

    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["vision_model.stray.weight"] = torch.zeros(2)
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    caplog.clear()
    SemanticTeacher(teacher_config_from_folder(tmp_path))
    heard = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "stray" in heard
