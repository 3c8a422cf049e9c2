"""Training configs: every shipped YAML loads and validates; bad configs fail with clear errors."""

from pathlib import Path

import pytest

from semhitok import SemHiTokConfig
from semhitok.training.config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


def test_configs_are_shipped():
    names = {p.relative_to(p.parents[1]).as_posix() for p in CONFIGS}
    assert {"tiny/stage1_semantic.yaml", "tiny/stage2_pixel.yaml", "tiny/stage3_decoder.yaml"} <= names
    assert any(n.startswith("paper/") for n in names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_every_shipped_config_validates(path):
    overrides = [] if "stage1" in path.name else ["init=/some/model"]
    cfg = TrainConfig.from_yaml(path, overrides)
    init_config = None if cfg.init is None else SemHiTokConfig.from_preset("paper-256" if "paper" in str(path) else "tiny")
    model = cfg.model_config(init_config)
    assert model.vocab_size == model.codebook_size * model.subcodebook_size


def test_paper_recipe_matches_table_3():
    root = CONFIGS[0].parents[1]
    lrs = {p.name: TrainConfig.from_yaml(p, [] if "stage1" in p.name else ["init=/m"]).optim.lr for p in (root / "paper").glob("*.yaml")}
    assert lrs == {"stage1_semantic.yaml": 1e-4, "stage2_pixel_imagenet.yaml": 1e-4, "stage2_pixel_finetune.yaml": 4e-5, "stage3_decoder.yaml": 2e-5}
    stage3 = TrainConfig.from_yaml(root / "paper" / "stage3_decoder.yaml")
    model = stage3.model_config(SemHiTokConfig.from_preset("paper-256"))
    assert (model.pixel_decoder.width, model.pixel_decoder.depth) == (1024, 24)  # ViT-L enhance decoder
    assert model.pixel_encoder.width == 768  # everything else from the stage-2 model


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {preset: tiny}\n", "needs 'stage'"),
        ("stage: pixels\nmodel: {preset: tiny}\n", "stage must be one of"),
        ("stage: pixel\n", "set 'init'"),
        ("stage: semantic\n", "needs a 'model' section"),
        ("stage: semantic\nmodel: {preset: tiny}\noptim: {lr: -1}\n", "optim.lr"),
        ("stage: semantic\nmodel: {preset: tiny}\nrun: {maxsteps: 3}\n", "unknown keys in config section 'run': maxsteps"),
        ("stage: semantic\nmodel: {preset: tiny, codebook_size: 0}\n", "codebook_size"),
        ("stage: semantic\nmodel: {preset: tiny}\nextra: 1\n", "unknown keys extra"),
    ],
)
def test_bad_configs(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_yaml(path)


def test_overrides_apply_before_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage: semantic\nmodel: {preset: tiny}\n")
    cfg = TrainConfig.from_yaml(path, ["optim.lr=3e-4", "run.max_steps=7", "model.subcodebook_size=8"])
    assert cfg.optim.lr == 3e-4 and cfg.run.max_steps == 7 and cfg.model_config().subcodebook_size == 8
