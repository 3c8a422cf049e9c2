"""Training configs: every shipped YAML loads and validates; bad configs fail with clear errors."""

from pathlib import Path

import pytest
import yaml

from semhitok import SemHiTokConfig
from semhitok.losses import LossConfig, SemanticLossConfig
from semhitok.training.config import TrainConfig
from semhitok.yaml_io import load_yaml

ROOT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# `stage: teacher` / `stage: judge` files configure the mini-world's auxiliary models (other config
# types, tested in test_train_mini_world.py and below); `stage: mllm` files the unified MLLM
# (MLLMTrainConfig, tested in test_mllm_train.py).
CONFIGS = sorted(p for p in ROOT_CONFIGS.rglob("*.yaml") if load_yaml(p).get("stage") not in ("teacher", "judge", "mllm"))
PAPER = ROOT_CONFIGS / "paper"
PAPER_TOKENIZER = [p for p in CONFIGS if p.parent == PAPER]
PAPER_PIXEL = sorted(p for p in PAPER_TOKENIZER if "stage1" not in p.name)
# The paper's pixel stages need the real VGG16 file; any path passes the config check.
VGG = "loss.vgg_weights=/path/to/vgg16.pth"


def _overrides(path: Path) -> list[str]:
    if "stage1" in path.name:
        # the mini config leaves the teacher folder to the command line (the teacher run's model/)
        return ["model.teacher.pretrained_path=/some/teacher"] if "mini" in str(path) else []
    return ["init=/some/model"] + ([VGG] if "paper" in str(path) else [])


def test_configs_are_shipped():
    names = {p.relative_to(p.parents[1]).as_posix() for p in CONFIGS}
    assert {"tiny/stage1_semantic.yaml", "tiny/stage2_pixel.yaml", "tiny/stage3_decoder.yaml"} <= names
    assert any(n.startswith("paper/") for n in names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_every_shipped_config_validates(path):
    cfg = TrainConfig.from_yaml(path, _overrides(path))
    init_config = None if cfg.init is None else SemHiTokConfig.from_preset({"paper": "paper-256", "mini": "mini", "tiny": "tiny"}[path.parent.name])
    model = cfg.model_config(init_config)
    assert model.vocab_size == model.codebook_size * model.subcodebook_size
    assert isinstance(cfg.loss, SemanticLossConfig if cfg.stage == "semantic" else LossConfig)


@pytest.mark.parametrize("path", PAPER_PIXEL, ids=lambda p: p.name)
def test_paper_pixel_configs_need_real_vgg_weights(path):
    """No silent random VGG16: without vgg_weights the paper's stage-2/3 configs are refused,
    with a message saying both ways out; turning the term off is one of them."""
    with pytest.raises(ValueError) as info:
        TrainConfig.from_yaml(path, ["init=/m"])
    message = str(info.value)
    assert message.startswith(f"{path}: loss.vgg_weights: perceptual_weight is 1 but no VGG16 weights")
    assert "loss.vgg_weights=/path/to/vgg16.pth" in message and "loss.perceptual_weight=0" in message
    assert "\n" not in message
    cfg = TrainConfig.from_yaml(path, ["init=/m", "loss.perceptual_weight=0"])
    assert cfg.loss.perceptual_weight == 0.0 and cfg.loss.vgg_weights is None
    cfg = TrainConfig.from_yaml(path, ["init=/m", VGG])
    assert (cfg.loss.perceptual_weight, cfg.loss.vgg_weights) == (1.0, "/path/to/vgg16.pth")


def test_paper_recipe_matches_table_3():
    lrs = {p.name: TrainConfig.from_yaml(p, _overrides(p)).optim.lr for p in PAPER_TOKENIZER}
    assert lrs == {"stage1_semantic.yaml": 1e-4, "stage2_pixel_imagenet.yaml": 1e-4, "stage2_pixel_finetune.yaml": 4e-5, "stage3_decoder.yaml": 2e-5}
    stage3 = TrainConfig.from_yaml(PAPER / "stage3_decoder.yaml", [VGG])
    model = stage3.model_config(SemHiTokConfig.from_preset("paper-256"))
    assert (model.pixel_decoder.width, model.pixel_decoder.depth) == (1024, 24)  # ViT-L enhance decoder
    assert model.pixel_encoder.width == 768  # everything else from the stage-2 model
    # Global batch 256 = 32 per rank x 8 GPUs x grad_accum 1.
    for path in PAPER_TOKENIZER:
        cfg = TrainConfig.from_yaml(path, _overrides(path))
        assert cfg.data.batch_size * 8 * cfg.optim.grad_accum == 256, path.name


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {preset: tiny}\n", "stage: missing: a training config needs 'stage'"),
        ("stage: pixels\nmodel: {preset: tiny}\n", "stage: must be one of semantic, pixel, decoder, got 'pixels' (str)"),
        ("stage: pixel\n", "init: stage 'pixel' starts from the previous stage's model"),
        ("stage: semantic\n", "model: a training config needs a 'model' section"),
        ("stage: semantic\nmodel: {preset: tiny}\noptim: {lr: -1}\n", "optim.lr: must be > 0, got -1.0"),
        ("stage: semantic\nmodel: {preset: tiny}\nrun: {maxsteps: 3}\n", "run: unknown key maxsteps (known: max_steps, "),
        ("stage: semantic\nmodel: {preset: tiny, codebook_size: 0}\n", "model.codebook_size: must be >= 1, got 0"),
        ("stage: semantic\nmodel: {preset: tiny}\nextra: 1\n", "unknown key extra (known: stage, model, init, "),
        ("stage: semantic\nmodel: {preset: huge}\n", "model.preset: unknown preset 'huge'"),
        ("stage: semantic\nmodel: [1]\n", "model: expected a mapping, got [1] (list)"),
        ("- 1\n", "a training config must be a mapping at the top level, got [1] (list)"),
        ("stage: semantic\nmodel: {preset: tiny}\nloss: {perceptual_weight: 0}\n", "loss: unknown key perceptual_weight (known: cosine_weight, l1_weight)"),
        ("stage: semantic\nmodel: {preset: tiny}\nloss: {l1_weight: -1}\n", "loss.l1_weight: must be >= 0, got -1.0"),
        ("stage: pixel\ninit: m\nloss: {perceptual_weight: 0, disc_strat: 3}\n", "loss: unknown key disc_strat"),
        ("stage: pixel\ninit: m\nloss: 3\n", "loss: stage 'pixel' takes a LossConfig mapping, got 3 (int)"),
        ("stage: semantic\nmodel: {preset: tiny}\ninit: ''\n", "init: is empty"),
    ],
)
def test_bad_configs(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        TrainConfig.from_yaml(path)
    assert str(info.value).startswith(f"{path}: {message}")


# The issue's cases (bad value types that crashed with a TypeError or were silently accepted), each
# with the message it must give now: the dotted key and the expected type.
ISSUE_CASES = [
    ("optim.lr=abc", "optim.lr: expected a number, got 'abc' (str)"),
    ("optim.lr=[1]", "optim.lr: expected a number, got [1] (list)"),
    ("optim.betas=0.9", "optim.betas: expected a list of 2 numbers, got 0.9 (float)"),
    ("data.batch_size='8'", "data.batch_size: expected an integer, got '8' (str)"),
    ("data.batch_size=8.5", "data.batch_size: expected an integer, got 8.5 (float)"),
    ("run.ema_decay=x", "run.ema_decay: expected a number or null, got 'x' (str)"),
    ("optim.grad_clip=x", "optim.grad_clip: expected a number or null, got 'x' (str)"),
    ("run.max_steps=.inf", "run.max_steps: expected an integer, got inf (float)"),
    ("run.max_steps='10'", "run.max_steps: expected an integer, got '10' (str)"),
    ("run.log_every=true", "run.log_every: expected an integer, got True (bool)"),
    ("run.checkpoint_every=2.5", "run.checkpoint_every: expected an integer, got 2.5 (float)"),
    ("optim.lr=.nan", "optim.lr: expected a finite number, got nan (float)"),
    ("data.flip=1", "data.flip: expected true or false, got 1 (int)"),
    ("data.crop=middle", "data.crop: expected one of 'center', 'random', got 'middle' (str)"),
    ("run.precision=fp16", "run.precision: expected one of 'fp32', 'bf16', 'auto', got 'fp16' (str)"),
    ("model.ema_decay=x", "model.ema_decay: expected a number, got 'x' (str)"),
    ("model.pixel_decoder.depth=2.0", "model.pixel_decoder.depth: expected an integer, got 2.0 (float)"),
    ("model.teacher.hf_config.hidden_size=big", "model.teacher.hf_config.hidden_size: expected an integer, got 'big' (str)"),
    ("data=3", "data: expected a mapping (a config section), got 3 (int)"),
]


@pytest.mark.parametrize("override, message", ISSUE_CASES, ids=[c[0] for c in ISSUE_CASES])
def test_value_types_are_checked(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("stage: semantic\nmodel: {preset: tiny}\n")
    with pytest.raises(ValueError) as info:
        TrainConfig.from_yaml(path, [override])
    assert str(info.value) == f"{path}: {message}"


def test_model_overrides_are_checked_at_load_also_with_init(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage: decoder\ninit: /some/model\nloss: {perceptual_weight: 0}\n")
    for override, message in [
        ("model.pixel_decoder.widht=3", "model.pixel_decoder: unknown key widht"),
        ("model.codebook_size=abc", "model.codebook_size: expected an integer, got 'abc' (str)"),
        ("model.bogus=1", "model: unknown key bogus"),
        ("model.preset=tiny", "model.preset: cannot be combined with 'init'"),
    ]:
        with pytest.raises(ValueError) as info:
            TrainConfig.from_yaml(path, [override])
        assert str(info.value).startswith(f"{path}: {message}"), override
    # Values of the right type are kept (ints as given, floats normalised) and merged onto the
    # init folder's config later; range checks happen then, naming the key.
    cfg = TrainConfig.from_yaml(path, ["model.pixel_decoder.depth=3", "model.commitment_weight=1"])
    assert cfg.model == {"pixel_decoder": {"depth": 3}, "commitment_weight": 1.0}
    merged = cfg.model_config(SemHiTokConfig.from_preset("tiny"))
    assert (merged.pixel_decoder.depth, merged.commitment_weight, merged.pixel_decoder.width) == (3, 1.0, 64)
    bad_range = TrainConfig.from_yaml(path, ["model.pixel_decoder.depth=0"])
    with pytest.raises(ValueError, match=r"^model\.pixel_decoder\.depth: must be >= 1, got 0$"):
        bad_range.model_config(SemHiTokConfig.from_preset("tiny"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_to_dict_is_yaml_and_loads_back(tmp_path, path):
    """The run folder's config.yaml is ``yaml.safe_dump(config.to_dict())``: it must load back equal."""
    cfg = TrainConfig.from_yaml(path, _overrides(path))
    written = tmp_path / "config.yaml"
    written.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    again = TrainConfig.from_yaml(written)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


def test_overrides_apply_before_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage: semantic\nmodel: {preset: tiny}\n")
    cfg = TrainConfig.from_yaml(path, ["optim.lr=3e-4", "run.max_steps=7", "model.subcodebook_size=8", "loss.l1_weight=1"])
    assert cfg.optim.lr == 3e-4 and cfg.run.max_steps == 7 and cfg.model_config().subcodebook_size == 8
    assert cfg.loss == SemanticLossConfig(cosine_weight=1.0, l1_weight=1.0)


def test_unreadable_and_broken_files_name_the_file(tmp_path):
    tabbed = tmp_path / "tab.yaml"
    tabbed.write_text("stage: semantic\nmodel:\n\tpreset: tiny\n")
    with pytest.raises(ValueError, match=rf"^{tabbed}: line 3, column 1: a tab character cannot indent YAML; use spaces$"):
        TrainConfig.from_yaml(tabbed)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"stage: \xff\xfe\n")
    with pytest.raises(ValueError, match=rf"^{binary}: not a UTF-8 text file"):
        TrainConfig.from_yaml(binary)
    with pytest.raises(ValueError, match=rf"^{tmp_path}: cannot read the config"):
        TrainConfig.from_yaml(tmp_path)  # a folder


def test_stage1_refuses_a_random_teacher(tmp_path):
    """Distilling random teacher weights gives codes that mean nothing: only the tiny preset may."""
    path = tmp_path / "c.yaml"
    path.write_text("stage: semantic\nmodel:\n  preset: mini\n")
    with pytest.raises(ValueError, match="model.teacher.pretrained_path: is not set: stage 1 needs the teacher's weights"):
        TrainConfig.from_yaml(path)
    assert TrainConfig.from_yaml(path, ["model.teacher.pretrained_path=/t"]).model_config().teacher.pretrained_path == "/t"


def test_shipped_teacher_and_judge_configs_validate():
    from semhitok.evaluation.judge import JudgeTrainConfig
    from semhitok.training.teacher import TeacherTrainConfig

    assert TeacherTrainConfig.from_dict(load_yaml(ROOT_CONFIGS / "mini" / "teacher.yaml")).model.patch_size == 8
    assert JudgeTrainConfig.from_dict(load_yaml(ROOT_CONFIGS / "mini" / "judge.yaml")).max_steps >= 1
