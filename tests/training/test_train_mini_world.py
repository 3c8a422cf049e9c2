"""The mini-world teacher: SigLIP loss, training on a tiny colour Fashion-MNIST build with a tiny
random causal LM as the locked text tower, and the saved folder loading as a SemHiTok teacher."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.cli.main import main
from semhitok.data.colour_fashion import CLASS_NAMES, COLOUR_NAMES, TEMPLATES, build_colour_fashion_mnist
from semhitok.data.fashion_mnist import write_idx
from semhitok.modeling import teacher_config_from_folder
from semhitok.training.teacher import TeacherModelConfig, TeacherTower, TeacherTrainConfig, train_teacher

TINY = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random 1-layer Llama with a word-level tokenizer over the caption words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_lm")
    words = {w for t in TEMPLATES for w in t.replace("{colour}", "").replace("{cls}", "").split()}
    words |= {w for name in CLASS_NAMES + COLOUR_NAMES for w in name.split()} | {"an"}
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *sorted(words)])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfm_teacher")
    rng = np.random.default_rng(0)
    for name, n in (("train", 96), ("t10k", 20)):
        write_idx(root / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{name}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    build_colour_fashion_mnist(root / "data", idx_dir=root, size=32, formats=("folder",))
    return root / "data"


def test_sigmoid_loss_matches_the_formula():
    torch.manual_seed(0)
    tower = TeacherTower(TeacherModelConfig(**TINY), text_dim=6)
    img, txt = F.normalize(torch.randn(4, 32), dim=-1), F.normalize(torch.randn(4, 32), dim=-1)
    positives = torch.eye(4, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True  # the same caption twice: a positive pair too
    t, b = math.exp(float(tower.logit_scale.detach())), float(tower.logit_bias.detach())
    expected = 0.0
    for i in range(4):
        for j in range(4):
            y = 1.0 if positives[i, j] else -1.0
            expected -= math.log(1 / (1 + math.exp(-y * (t * float(img[i] @ txt[j]) + b))))
    assert float(tower.sigmoid_loss(img, txt, positives).detach()) == pytest.approx(expected / 4, rel=1e-5)


def test_train_save_and_load_as_a_semhitok_teacher(data, tiny_lm, tmp_path):
    config = TeacherTrainConfig(model=dict(TINY), text_model=str(tiny_lm), batch_size=16, max_steps=4, eval_every=2, log_every=1, warmup_steps=1)
    result = train_teacher(config, tmp_path / "run", data_path=str(data), quiet=True)
    for split in ("val", "test"):
        metrics = result[split]
        assert 0.0 <= metrics[f"{'val_' if split == 'val' else ''}class_accuracy"] <= 1.0
    assert result["test"]["images"] == 20
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4] and "val_class_accuracy" in lines[1]

    folder = tmp_path / "run" / "model"
    teacher = teacher_config_from_folder(folder)
    assert teacher.kind == "siglip" and teacher.grid_size == 4 and teacher.hidden_size == 32
    tok = SemHiTok(SemHiTokConfig.from_preset("tiny", teacher=dataclasses.asdict(teacher), pixel_patch_size=8))
    # the tokenizer's frozen teacher holds exactly the trained tower's weights
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    name = next(k for k in saved if k.endswith("encoder.layers.0.mlp.fc1.weight"))
    assert torch.equal(dict(tok.teacher.model.named_parameters())[name], saved[name])
    enc = tok.encode(torch.rand(2, 3, 32, 32))
    assert enc.ids.shape == (2, 4, 4)


def test_random_shift_translates_each_image_by_its_own_offset():
    from semhitok.training.teacher import random_shift

    images = torch.rand(5, 3, 16, 16)
    assert torch.equal(random_shift(images, 0, torch.Generator().manual_seed(0)), images)
    shifted = random_shift(images, 3, torch.Generator().manual_seed(0))
    dy, dx = torch.randint(7, (2, 5), generator=torch.Generator().manual_seed(0))
    padded = F.pad(images, (3, 3, 3, 3), mode="reflect")
    for i in range(5):  # reference: crop of the padded image at the drawn offset
        assert torch.equal(shifted[i], padded[i, :, dy[i] : dy[i] + 16, dx[i] : dx[i] + 16])


def test_teacher_resume_equals_an_uninterrupted_run_and_init_loads_a_teacher(data, tiny_lm, tmp_path):
    from safetensors.torch import load_file

    common = dict(model=dict(TINY), text_model=str(tiny_lm), batch_size=8, eval_every=2, log_every=1, warmup_steps=1, shift=2)
    train_teacher(TeacherTrainConfig(max_steps=6, checkpoint_every=100, **common), tmp_path / "whole", data_path=str(data), quiet=True)
    # the "interrupted" run: the same schedule, stopped after its step-4 checkpoint, then resumed
    partial = TeacherTrainConfig(max_steps=6, checkpoint_every=4, **common)
    import semhitok.training.teacher as teacher_module

    calls = {"n": 0}
    real_save = teacher_module.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        raise KeyboardInterrupt

    teacher_module.save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train_teacher(partial, tmp_path / "cut", data_path=str(data), quiet=True)
    finally:
        teacher_module.save_checkpoint = real_save
    assert calls["n"] == 1 and not (tmp_path / "cut" / "model").exists()
    train_teacher(partial, tmp_path / "cut", data_path=str(data), quiet=True, resume=True)
    whole = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_teacher(partial, tmp_path / "fresh", data_path=str(data), quiet=True, resume=True)

    # init: a second run starts from the first one's weights (its text head included)
    from semhitok.training.teacher import load_teacher_tower

    tower = load_teacher_tower(tmp_path / "whole" / "model", TeacherModelConfig(**TINY), text_dim=32)
    assert torch.equal(dict(tower.vision.named_parameters())[next(iter(k for k in whole if k.endswith("fc1.weight")))], whole[next(k for k in whole if k.endswith("fc1.weight"))])
    head = load_file(str(tmp_path / "whole" / "model" / "text_head.safetensors"))
    assert torch.equal(tower.text_proj.weight, head["text_proj.weight"])
    with pytest.raises(ValueError, match="does not fit"):
        load_teacher_tower(tmp_path / "whole" / "model", TeacherModelConfig(**{**TINY, "width": 64, "num_heads": 2}), text_dim=32)


def test_cli_trains_a_teacher_and_refuses_bad_input(data, tiny_lm, tmp_path, capsys):
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text("stage: teacher\nmodel: {image_size: 32, patch_size: 8, width: 32, depth: 1, num_heads: 2}\nbatch_size: 8\nmax_steps: 2\neval_every: 2\nwarmup_steps: 1\n")
    out = tmp_path / "t"
    assert main(["train", str(cfg), "--data", str(data), "--out", str(out), "--quiet", f"text_model={tiny_lm}"]) == 0
    assert "zero-shot on val" in capsys.readouterr().out
    assert main(["train", str(cfg), "--data", str(data), "--out", str(out), f"text_model={tiny_lm}"]) == 2  # model/ exists
    assert main(["train", str(cfg), "--data", str(data), "--out", str(tmp_path / "u"), "batch_size=0"]) == 2
    assert main(["train", str(cfg), "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "v"), f"text_model={tiny_lm}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 3 and all(line.startswith("semhitok: error:") for line in err), err


def test_judge_trains_saves_and_loads(data, tmp_path, capsys):
    from semhitok.evaluation.judge import Judge, judge_accuracy

    cfg = tmp_path / "judge.yaml"
    cfg.write_text("stage: judge\nmodel: {image_size: 32, widths: [8, 16]}\nbatch_size: 8\nmax_steps: 3\neval_every: 3\n")
    assert main(["train", str(cfg), "--data", str(data), "--out", str(tmp_path / "j"), "--quiet"]) == 0
    assert "trained the judge 3 steps" in capsys.readouterr().out
    judge = Judge.from_pretrained(tmp_path / "j" / "model")
    images = torch.rand(5, 3, 32, 32)
    cls, col = judge.predict(images)
    assert cls.shape == col.shape == (5,) and judge.features(images).shape == (5, 16)
    # the accuracy is what the predictions say, counted by hand
    labels, colours = cls.clone(), col.clone()
    labels[0] = (labels[0] + 1) % 10
    acc = judge_accuracy(judge, images, labels, colours)
    assert acc == pytest.approx({"class_accuracy": 0.8, "colour_accuracy": 1.0, "pair_accuracy": 0.8, "images": 5})
