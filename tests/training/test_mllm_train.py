"""``semhitok train`` with ``stage: mllm``: a tiny random Llama (saved as a Hugging Face folder) and
the tiny SemHiTok learn from captioned images, token shards and text; the loss goes down; the mix
ratios hold; checkpoints hold only what trains; resume is bit-exact; bad data is skipped and
counted; bad configs are one line; torchrun DDP and FSDP2 on 2 CPU processes equal one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.cli.main import main as cli_main
from semhitok.data import BadDataError
from semhitok.mllm import SemHiTokMLLM
from semhitok.training import TrainingInterrupted, list_checkpoints
from semhitok.training.checkpoint import read_checkpoint_state, read_checkpoint_weights
from semhitok.training.mllm_config import KINDS, MLLMTrainConfig
from semhitok.training.mllm_data import MixPlan, MixPosition, kind_of
from semhitok.training.mllm_loop import build_mllm, train_mllm

ROOT = Path(__file__).resolve().parents[2]
SLICE = ROOT / "src" / "semhitok" / "assets" / "colour-fashion-mnist-mini"  # labelled: the caption probe's data
# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts(tmp_path_factory, llm_factory, text_tokenizer_factory) -> dict[str, Path]:
    """A tiny SemHiTok folder, a tiny Llama folder (byte-level tokenizer with a chat template), six
    captioned 64 px images (one more without a caption), and a JSON-lines text file."""
    root = tmp_path_factory.mktemp("mllm_train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        SemHiTok(SemHiTokConfig.from_preset("tiny")).save_pretrained(root / "tokenizer")
        text_tok = text_tokenizer_factory()
        llm = llm_factory("llama", tied=False)
        llm.save_pretrained(root / "llm")
        text_tok.save_pretrained(root / "llm")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue", "yellow", "white", "black"]
    for i, colour in enumerate(colours):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"a {colour} square\n")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / "no_caption.png")
    text = root / "text.jsonl"
    text.write_text("".join(json.dumps(r) + "\n" for r in [{"text": "the sky is blue"}, {"prompt": "hi", "response": "hello"}, {"text": "grass is green"}]))
    return {"root": root, "tokenizer": root / "tokenizer", "llm": root / "llm", "images": images, "text": text}


def _config(parts: dict[str, Path], *overrides: str, **sections) -> MLLMTrainConfig:
    raw = {
        "stage": "mllm", "llm": str(parts["llm"]), "tokenizer": str(parts["tokenizer"]),
        "mllm": {"train": "lora", "lora_rank": 4, "loss_chunk": 64},
        "data": {"images": [str(parts["images"])], "text": [str(parts["text"])], "batch_size": 4, "uncond_prob": 0.3,
                 "mix": {"understanding": 0.4, "generation": 0.4, "text": 0.2}},
        "optim": {"lr": 1e-2, "warmup_steps": 0},
        "run": {"max_steps": 4, "checkpoint_every": 2, "log_every": 1, "seed": 3},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return MLLMTrainConfig.from_dict(raw, list(overrides))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- a run ---------------------------------------------------------------------------------------
def test_a_run_trains_and_exports(parts, tmp_path):
    """A tiny overfit: the loss falls; the checkpoint holds only trained tensors (+ optimizer, RNG,
    data position); the exported folder loads; metrics and TensorBoard are written."""
    config = _config(parts, "run.max_steps=12", "run.checkpoint_every=6", "optim.lr=1e-2", "mllm.train=full")
    result = train_mllm(config, tmp_path / "run", quiet=True)
    lines = _metrics(tmp_path / "run")
    assert [m["step"] for m in lines] == list(range(1, 13))
    assert {"loss", "text_nll", "image_nll", "lr", "tokens_per_second", "grad_norm"} <= set(lines[0])
    for key in ("text_nll", "image_nll"):  # (the loss mixes the two in proportions that vary by batch)
        assert np.mean([m[key] for m in lines[-3:]]) < 0.85 * np.mean([m[key] for m in lines[:3]]), key
    assert (tmp_path / "run" / "tensorboard").is_dir() and (tmp_path / "run" / "config.yaml").is_file()
    checkpoint = list_checkpoints(tmp_path / "run")[-1]
    weights = read_checkpoint_weights(checkpoint.path)
    mm = SemHiTokMLLM.from_pretrained(result.model_dir)
    trained = dict(mm.trainable_parameters())
    assert set(weights) == set(trained)  # no frozen LLM or tokenizer weight in the checkpoint
    assert any(k.startswith("llm.") for k in weights) and not any(k.startswith("tokenizer.") for k in weights)
    for name, value in weights.items():
        assert torch.equal(trained[name].detach(), value), name
    state = read_checkpoint_state(checkpoint.path)
    assert state["step"] == 12 and state["data"]["sample"] == 12 * 4 and set(state["data"]["used"]) == set(KINDS)
    assert "rng" in state and state["optimizer"]["state"]


def test_token_shards_give_the_same_run_as_images(parts, tmp_path, capsys):
    """A token folder written by `semhitok tokenize` trains exactly like the images it came from
    (ids computed once instead of on the fly); another tokenizer's tokens are refused."""
    tokens = tmp_path / "tokens"
    assert cli_main(["tokenize", str(parts["images"]), "--model", str(parts["tokenizer"]), "-o", str(tokens), "--workers", "0", "--quiet"]) == 0
    from_images = train_mllm(_config(parts, "run.max_steps=2"), tmp_path / "a", quiet=True)
    from_tokens = train_mllm(_config(parts, "run.max_steps=2"), tmp_path / "b", data_paths=[str(tokens)], quiet=True)
    assert [m["loss"] for m in _metrics(from_images.run_dir)] == pytest.approx([m["loss"] for m in _metrics(from_tokens.run_dir)], rel=1e-5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        SemHiTok(SemHiTokConfig.from_preset("tiny")).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="holds tokens of model"):
        train_mllm(_config(parts, f"tokenizer={tmp_path / 'other'}"), tmp_path / "c", data_paths=[str(tokens)], quiet=True)
    assert not (tmp_path / "c").exists()  # nothing written


def test_dataloader_workers_give_the_same_run(parts, tmp_path):
    """Workers load micro-batches round-robin; the stream (and so the run) is the same as without."""
    plain = train_mllm(_config(parts, "run.max_steps=3"), tmp_path / "a", quiet=True)
    workers = train_mllm(_config(parts, "run.max_steps=3", "data.num_workers=2"), tmp_path / "b", quiet=True)
    assert [m["loss"] for m in _metrics(plain.run_dir)] == [m["loss"] for m in _metrics(workers.run_dir)]


def test_webdataset_shards_are_read(parts, tmp_path):
    import tarfile

    shard = tmp_path / "shard-0.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(3):
            tar.add(parts["images"] / f"{i}.png", arcname=f"s{i}.png")
            tar.add(parts["images"] / f"{i}.txt", arcname=f"s{i}.txt")
    result = train_mllm(_config(parts, "run.max_steps=1"), tmp_path / "run", data_paths=[str(shard)], quiet=True)
    assert result.steps == 1


def test_bad_images_are_skipped_and_counted(parts, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in parts["images"].iterdir():
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "broken.txt").write_text("a broken square")
    train_mllm(_config(parts, "run.max_steps=3", "data.max_bad_fraction=0.5", "data.min_seen=1"), tmp_path / "run", data_paths=[str(images)], quiet=True)
    log = (tmp_path / "run.bad_files.log").read_text()
    assert "broken.png" in log
    with pytest.raises(BadDataError, match="could not be decoded"):
        train_mllm(_config(parts, "run.max_steps=3", "data.max_bad_fraction=0.0", "data.min_seen=1"), tmp_path / "strict", data_paths=[str(images)], quiet=True)


# ---- the mix -------------------------------------------------------------------------------------
def test_mix_ratios_hold_in_every_window():
    ratios = {"understanding": 0.5, "generation": 0.35, "text": 0.15}
    kinds = [kind_of(s, ratios) for s in range(4000)]
    for start in range(0, 4000, 200):
        window = kinds[start : start + 200]
        for kind, share in ratios.items():
            assert abs(window.count(kind) - share * 200) <= 3, (start, kind)
    assert all(kind_of(s, {"understanding": 0.0, "generation": 1.0, "text": 0.0}) == "generation" for s in range(500))


def test_the_plan_resumes_and_covers_each_pool_once_per_epoch():
    ratios = {"understanding": 0.5, "generation": 0.5, "text": 0.0}
    plan = MixPlan(ratios, {"understanding": 7, "generation": 7, "text": 0}, num_questions=3, seed=1)
    stream = plan.micro_batches(MixPosition(), 4)
    batches = [next(stream) for _ in range(10)]
    entries = [e for _, b in batches for e in b]
    assert [e.sample for e in entries] == list(range(40))
    first_epoch = [e.item for e in entries if e.kind == "generation"][:7]
    assert sorted(first_epoch) == list(range(7))
    resumed = MixPlan(ratios, plan.sizes, 3, seed=1).micro_batches(batches[4][0], 4)
    assert [next(resumed)[1] for _ in range(5)] == [b for _, b in batches[5:]]


# ---- resume and interruption ---------------------------------------------------------------------
def test_resume_is_bit_exact(parts, tmp_path):
    """2 steps, stop, resume to 4 == 4 steps straight: every trained tensor, the optimizer and the
    logged losses (LoRA dropout draws from the RNG, grad_accum 2, 30% unconditional swaps). The
    pieces also measure caption-following every step, which must change nothing in training."""
    options = ("run.max_steps=4", "run.checkpoint_every=4", "optim.grad_accum=2", "mllm.lora_dropout=0.2")
    probe = ("eval.every=1", f"eval.data={SLICE}", "eval.split=test", "eval.images=2", "eval.batch_size=16")
    train_mllm(_config(parts, *options), tmp_path / "a", quiet=True)
    train_mllm(_config(parts, *options, *probe), tmp_path / "b", quiet=True, max_steps=2)
    train_mllm(_config(parts, *options, *probe), tmp_path / "b", quiet=True, resume=True)
    logged = _metrics(tmp_path / "b")
    assert [m["step"] for m in logged] == [1, 2, 3, 4]
    for m in logged:
        assert 0.0 <= m["gen_cls_colour"] <= 1.0 and 0.0 <= m["gen_cls_class"] <= 1.0 and m["caption_info"] is not None
    a, b = list_checkpoints(tmp_path / "a")[-1].path, list_checkpoints(tmp_path / "b")[-1].path
    wa, wb = read_checkpoint_weights(a), read_checkpoint_weights(b)
    assert set(wa) == set(wb)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    sa, sb = read_checkpoint_state(a), read_checkpoint_state(b)
    for index, values in sa["optimizer"]["state"].items():
        for key, value in values.items():
            assert torch.equal(value, sb["optimizer"]["state"][index][key]), (index, key)
    assert sa["data"] == sb["data"]
    assert [m["loss"] for m in _metrics(tmp_path / "a")] == [m["loss"] for m in _metrics(tmp_path / "b")]


@pytest.mark.slow
def test_compiled_layers_train_like_eager_ones(parts, tmp_path):
    """run.compile: the same run (sequences padded to a multiple of 8, which changes no loss) up to
    float noise; the checkpoint's tensor names are those of the eager model."""
    options = ("run.max_steps=2", "run.checkpoint_every=2", "mllm.train=full")
    train_mllm(_config(parts, *options), tmp_path / "eager", quiet=True)
    train_mllm(_config(parts, *options, "run.compile=true"), tmp_path / "compiled", quiet=True)
    _same_run(tmp_path / "compiled", tmp_path / "eager")


def test_adapter_lr_applies_to_the_new_parts_only(parts, tmp_path):
    """optim.adapter_lr with a constant schedule: the adapter, head and specials train at it to the
    end while the LoRA lr decays; the LLM's own frozen weights are in no group."""
    config = _config(parts, "run.max_steps=3", "run.checkpoint_every=3", "optim.lr=1e-3", "optim.adapter_lr=5e-3", "optim.adapter_schedule=constant")
    train_mllm(config, tmp_path / "run", quiet=True)
    logged = _metrics(tmp_path / "run")
    assert [m["adapter_lr"] for m in logged] == [5e-3, 5e-3, 5e-3]
    assert logged[0]["lr"] == 1e-3 and logged[-1]["lr"] < 1e-3
    state = read_checkpoint_state(list_checkpoints(tmp_path / "run")[-1].path)
    groups = state["optimizer"]["param_groups"]
    assert sorted({(g["new"], g["lr"]) for g in groups}) == [(False, pytest.approx(logged[-1]["lr"])), (True, 5e-3)]


def test_ctrl_c_saves_a_checkpoint(parts, tmp_path, monkeypatch):
    from semhitok.training import mllm_loop

    calls = []

    def stop_at_second(requested, ctx):
        calls.append(1)
        return signal.SIGINT if len(calls) == 2 else None

    monkeypatch.setattr(mllm_loop, "agreed_stop", stop_at_second)
    with pytest.raises(TrainingInterrupted) as info:
        train_mllm(_config(parts, "run.max_steps=10", "run.checkpoint_every=10"), tmp_path / "run", quiet=True)
    assert info.value.step == 2 and info.value.exit_code == 130
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == [2]


# ---- configs and the command line ----------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("mllm*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_mllm_configs_load(path):
    config = MLLMTrainConfig.from_yaml(path)
    assert config.stage == "mllm" and config.data.uncond_prob == 0.1
    assert abs(sum(config.data.mix.ratios().values()) - 1.0) < 1e-9


def test_shipped_configs_include_mini_and_paper():
    assert {p.parent.name for p in (ROOT / "configs").rglob("mllm.yaml")} == {"mini", "paper"}
    mini = MLLMTrainConfig.from_yaml(ROOT / "configs" / "mini" / "mllm.yaml")
    assert (mini.llm, mini.tokenizer, mini.mllm.train, mini.mllm.adapter) == ("smollm2-135m", "mini-semhitok", "lora", "dual")


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"colour": 1}, "unknown key colour (known: stage, llm, tokenizer, mllm, data, optim, run, eval)"),
        ({"data": {"mix": {"txt": 1}}}, "data.mix: unknown key txt (known: understanding, generation, text)"),
        ({"mllm": {"train": "everything"}}, "mllm.train: expected one of 'adapter', 'lora', 'full', got 'everything' (str)"),
        ({"run": {"parallel": "zero"}}, "run.parallel: expected one of 'ddp', 'fsdp', got 'zero' (str)"),
        ({"data": {"uncond_prob": 1.5}}, "data.uncond_prob: must be in [0, 1], got 1.5"),
        ({"eval": {"every": 5}}, "eval.data: is empty; name a colour Fashion-MNIST build (or set eval.every: 0)"),
    ],
)
def test_bad_config_is_one_line_exit_2(parts, tmp_path, capsys, extra, message):
    raw = {"stage": "mllm", "llm": str(parts["llm"]), "tokenizer": str(parts["tokenizer"]), **extra}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and str(path) in err
    assert not (tmp_path / "run").exists()


def test_cli_trains_and_refuses_missing_data(parts, tmp_path, capsys):
    config = tmp_path / "mllm.yaml"
    raw = _config(parts).to_dict()
    raw["data"]["images"] = []
    config.write_text(yaml.safe_dump(raw))
    assert cli_main(["train", str(config), "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "no image data: give --data PATH" in capsys.readouterr().err
    assert cli_main(["train", str(config), "--data", str(parts["images"]), "--out", str(tmp_path / "run"), "--max-steps", "1", "--quiet"]) == 0
    assert (tmp_path / "run" / "model" / "mllm_config.json").is_file()


# ---- torchrun ------------------------------------------------------------------------------------
def _torchrun(parts: dict[str, Path], out: Path, nproc: int, batch: int, *extra: str) -> None:
    config = out.parent / f"{out.name}.yaml"
    raw = _config(parts, f"data.batch_size={batch}", "run.max_steps=3", "run.checkpoint_every=3", *extra).to_dict()
    config.write_text(yaml.safe_dump(raw))
    args = ["-m", "semhitok", "train", str(config), "--out", str(out), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args] if nproc > 1 else [sys.executable, *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _same_run(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint_weights(list_checkpoints(a)[-1].path), read_checkpoint_weights(list_checkpoints(b)[-1].path)
    assert set(wa) == set(wb)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)
    assert [m["loss"] for m in _metrics(a)] == pytest.approx([m["loss"] for m in _metrics(b)], rel=1e-4)
    fresh = build_mllm(MLLMTrainConfig.from_dict(yaml.safe_load((a / "config.yaml").read_text())))
    moved = dict(fresh.trainable_parameters())
    assert any(not torch.equal(moved[n].detach(), wa[n]) for n in wa)  # training changed the weights


@pytest.mark.slow
@pytest.mark.parametrize("parallel, checkpointing", [("ddp", False), ("fsdp", False), ("fsdp", True)])
def test_two_processes_match_one(parts, tmp_path, parallel, checkpointing):
    """torchrun, 2 CPU processes (gloo), 2 samples each == 1 process with 4 (the same global batch,
    the same samples, the loss a mean over the global batch's labelled tokens); grad_accum 2;
    FSDP2 also with the decoder layers' activation checkpointing (the 1-process run without)."""
    options = (f"run.parallel={parallel}", "optim.grad_accum=2", "data.uncond_prob=0.5")
    _torchrun(parts, tmp_path / "two", 2, 2, *options, f"run.gradient_checkpointing={str(checkpointing).lower()}")
    _torchrun(parts, tmp_path / "one", 1, 4, *options)
    _same_run(tmp_path / "two", tmp_path / "one")
    SemHiTokMLLM.from_pretrained(tmp_path / "two" / "model")  # the export of the sharded run loads
