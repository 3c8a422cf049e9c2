"""SemHiTokConfig: presets, validation, YAML and JSON round trips."""

import dataclasses

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.config import MAX_MODEL_BYTES, PRESETS, TeacherConfig


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
    """Paper §4.1 / Tab. 3: K=16384, d_s=48, m=12, 3-layer semantic decoder, ViT-B pixel nets."""
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
    with pytest.raises(ValueError, match=r"^unknown key bogus \(known: teacher, pixel_patch_size, "):
        SemHiTokConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match=r"^a SemHiTok config must be a mapping, got \[1\] \(list\)$"):
        SemHiTokConfig.from_dict([1])


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
        ({"codebook_size": 0}, "codebook_size: must be >= 1, got 0"),
        ({"codebook_size": 8.5}, "codebook_size: expected an integer, got 8.5 (float)"),
        ({"kmeans_init": "yes"}, "kmeans_init: expected true or false, got 'yes' (str)"),
        ({"ema_decay": 1.0}, "ema_decay: must be in [0, 1), got 1.0"),
        ({"pixel_encoder": {"width": 10, "num_heads": 3}}, "pixel_encoder.width: 10 must be divisible by num_heads 3"),
        ({"pixel_encoder": {"mlp_ratio": "4"}}, "pixel_encoder.mlp_ratio: expected a number, got '4' (str)"),
        ({"dead_code_threshold": -1.0}, "dead_code_threshold: dead-code thresholds must be >= 0, got -1.0"),
        ({"teacher": {"kind": "dino"}}, "teacher.kind: expected one of 'siglip', 'clip', got 'dino' (str)"),
        ({"teacher": {"feature_layer": 0}}, "teacher.feature_layer: must be a hidden-state index in [-3, 2] other than 0, got 0"),
        ({"teacher": {"image_mean": [0.5, 0.5]}}, "teacher.image_mean: expected a list of 3 numbers or null, got [0.5, 0.5] (list)"),
        ({"teacher": {"image_std": [0.5, 0.0, 0.5]}}, "teacher.image_std: must be positive, got [0.5, 0.0, 0.5]"),
        ({"teacher": {"hf_config": {"patch_size": [16]}}}, "teacher.hf_config.patch_size: expected an integer, got [16] (list)"),
        ({"teacher": {"hf_config": {"num_hidden_layers": 0}}}, "teacher.hf_config.num_hidden_layers: must be >= 1, got 0"),
        ({"teacher": {"hf_config": {"patch_size": 128}}}, "teacher.hf_config: patch_size 128 and image_size 64 give no token grid"),
    ],
)
def test_invalid_values_are_rejected(override, message):
    with pytest.raises(ValueError) as info:
        SemHiTokConfig.from_preset("tiny", **override)
    assert str(info.value) == message


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


@pytest.mark.parametrize(
    "override, message",
    [
        ({"teacher": 3}, "teacher: expected a mapping (a config section), got 3 (int)"),
        ({"pixel_encoder": [1, 2]}, "pixel_encoder: expected a mapping (a config section), got [1, 2] (list)"),
        ({"pixel_decoder": {"widht": 64}}, "pixel_decoder: unknown key widht (known: width, depth, num_heads, mlp_ratio)"),
    ],
)
def test_malformed_sections_are_rejected(override, message):
    base = SemHiTokConfig.from_preset("tiny").to_dict()
    with pytest.raises(ValueError) as info:
        SemHiTokConfig.from_dict({**base, **override})
    assert str(info.value) == message


def _built_bytes(model: torch.nn.Module) -> int:
    return 4 * (sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()))


@pytest.mark.parametrize("name, overrides", [(n, {}) for n in sorted(PRESETS)] + [("tiny", {"teacher": {"kind": "clip"}, "decoder_uses_semantic": False}),
                                                                                ("tiny", {"decoder_concat": "length", "semantic_quantizer": "norm"})])
def test_size_estimate_matches_the_built_model(name, overrides):
    """The estimate counts what the modules build (on the meta device: nothing allocated)."""
    cfg = SemHiTokConfig.from_preset(name, **overrides)
    with torch.device("meta"):
        model = SemHiTok(cfg, load_teacher_weights=False)
    # HF's non-float bookkeeping buffers (position ids) are left out of the estimate: within 0.1%.
    assert cfg.estimated_bytes() == pytest.approx(_built_bytes(model), rel=1e-3)


def test_size_estimate_grows_as_the_codebooks_do():
    """Doubling K adds K x (2 d_s + 1) semantic codebook elements and K x m x (d_p + 1) sub-codes."""
    small = SemHiTokConfig.from_preset("tiny")
    big = SemHiTokConfig.from_preset("tiny", codebook_size=2 * small.codebook_size)
    K, d_s, m, d_p = small.codebook_size, small.semantic_dim, small.subcodebook_size, small.pixel_dim
    assert big.estimated_bytes() - small.estimated_bytes() == 4 * K * ((2 * d_s + 1) + m * (d_p + 1))


@pytest.mark.parametrize(
    "override, key, part",
    [
        ({"codebook_size": 2**40}, "codebook_size: 1099511627776 makes the model need about", "in the pixel sub-codebooks"),
        ({"pixel_decoder": {"width": 2**20, "num_heads": 1}}, "pixel_decoder.width: 1048576 makes", "in the pixel_decoder"),
        ({"semantic_decoder": {"depth": 10**7}}, "semantic_decoder.depth: 10000000 makes", "in the semantic_decoder"),
        ({"teacher": {"hf_config": {"image_size": 2**20}}}, "teacher.hf_config.image_size: 1048576 makes", "limit"),
        ({"semantic_head_hidden": 2**34}, "semantic_head_hidden: 17179869184 makes", "in the semantic head"),
    ],
)
def test_absurd_sizes_are_refused_before_allocation(override, key, part):
    with pytest.raises(ValueError) as info:
        SemHiTokConfig.from_preset("tiny", **override)
    message = str(info.value)
    assert message.startswith(key) and part in message and message.endswith("over the 64.0 GiB limit")


def test_size_limit_boundary():
    """A model just under the limit is accepted (only the config is built), just over refused."""
    base = SemHiTokConfig.from_preset("tiny")
    per_code = 4 * ((2 * base.semantic_dim + 1) + base.subcodebook_size * (base.pixel_dim + 1))
    fixed = base.estimated_bytes() - base.codebook_size * per_code
    fits = (MAX_MODEL_BYTES - fixed) // per_code
    assert SemHiTokConfig.from_preset("tiny", codebook_size=fits).estimated_bytes() <= MAX_MODEL_BYTES
    with pytest.raises(ValueError, match="^codebook_size: "):
        SemHiTokConfig.from_preset("tiny", codebook_size=fits + 1)
