"""SemHiTokConfig: presets, validation, YAML and JSON round trips."""

import dataclasses

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.config import PRESETS, TeacherConfig, ViTConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_on_meta(name):
    """Each preset builds (paper presets on the meta device: no weights are allocated)."""
    cfg = SemHiTokConfig.from_preset(name)
    with torch.device("meta"):
        model = SemHiTok(cfg)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.vocab_size == cfg.codebook_size * cfg.subcodebook_size
    assert model.pixel_quantizer.codebook.shape == (cfg.codebook_size, cfg.subcodebook_size, cfg.pixel_dim)
    # The pixel grid equals the teacher grid.
    assert cfg.image_size // cfg.pixel_patch_size == cfg.teacher.grid_size


def test_paper_presets_match_the_paper():
    """DESIGN.md §1 defaults: K=16384, d_s=48, m=12, 3-layer semantic decoder, ViT-B pixel nets."""
    c256 = SemHiTokConfig.from_preset("paper-256")
    assert (c256.codebook_size, c256.semantic_dim, c256.subcodebook_size, c256.vocab_size) == (16384, 48, 12, 196608)
    assert c256.semantic_decoder.depth == 3
    assert (c256.pixel_encoder.width, c256.pixel_encoder.depth) == (768, 12)
    assert (c256.grid_size, c256.image_size) == (16, 256)
    c384 = SemHiTokConfig.from_preset("paper-384")
    assert c384.grid_size == 27 and c384.teacher.image_size == 384 and c384.image_size == 27 * 14
    with torch.device("meta"):
        teacher_params = sum(p.numel() for p in SemHiTok(c256).teacher.parameters())
    # SigLIP-L/16 vision tower without its pooling head: ~303M parameters.
    assert 300e6 < teacher_params < 306e6


def test_dict_round_trip_and_unknown_keys(tmp_path):
    cfg = SemHiTokConfig.from_preset("tiny", subcodebook_size=6)
    assert SemHiTokConfig.from_dict(cfg.to_dict()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert SemHiTokConfig.from_json(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="unknown SemHiTok config keys: bogus"):
        SemHiTokConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_yaml_overrides_preset(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  preset: tiny\n  subcodebook_size: 8\n  pixel_decoder:\n    depth: 3\n")
    cfg = SemHiTokConfig.from_yaml(path)
    tiny = SemHiTokConfig.from_preset("tiny")
    assert cfg.subcodebook_size == 8 and cfg.pixel_decoder.depth == 3
    assert cfg.pixel_decoder.width == tiny.pixel_decoder.width  # untouched keys keep the preset's value
    assert cfg.codebook_size == tiny.codebook_size


@pytest.mark.parametrize(
    "override, message",
    [
        ({"codebook_size": 0}, "codebook_size"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"pixel_encoder": {"width": 10, "num_heads": 3}}, "divisible"),
        ({"dead_code_threshold": -1.0}, "dead-code"),
        ({"teacher": {"kind": "dino"}}, "teacher.kind"),
        ({"teacher": {"feature_layer": 0}}, "feature_layer"),
    ],
)
def test_invalid_values_are_rejected(override, message):
    with pytest.raises(ValueError, match=message):
        SemHiTokConfig.from_preset("tiny", **override)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        SemHiTokConfig.from_preset("huge")


def test_teacher_config_requires_architecture():
    with pytest.raises(ValueError, match="image_size"):
        TeacherConfig(kind="siglip", hf_config={})


def test_clip_teacher_gets_clip_normalisation():
    hf = dataclasses.replace(SemHiTokConfig.from_preset("tiny").teacher).hf_config
    t = TeacherConfig(kind="clip", hf_config=hf)
    assert t.image_mean[0] == pytest.approx(0.48145466)
    assert ViTConfig(width=8, depth=1, num_heads=2).width == 8


@pytest.mark.parametrize(
    "override, message",
    [
        ({"teacher": 3}, "section 'teacher' must be a mapping"),
        ({"pixel_encoder": [1, 2]}, "section 'pixel_encoder' must be a mapping"),
        ({"pixel_decoder": {"widht": 64}}, "unknown keys in config section 'pixel_decoder': widht"),
    ],
)
def test_malformed_sections_are_rejected(override, message):
    base = SemHiTokConfig.from_preset("tiny").to_dict()
    with pytest.raises(ValueError, match=message):
        SemHiTokConfig.from_dict({**base, **override})
