"""The training loop: exact resume, non-finite stop, bad data, all three stages end to end."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from semhitok import SemHiTok
from semhitok.data import BadDataError
from semhitok.training import TrainConfig, TrainingError, list_checkpoints, train
from semhitok.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "tiny"


def _config(name, *overrides):
    return TrainConfig.from_yaml(CONFIGS / name, ["data.batch_size=4", "run.log_every=1", *overrides])


def _states_equal(a: Path, b: Path):
    ma, mb = SemHiTok.from_pretrained(a), SemHiTok.from_pretrained(b)
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.fixture(scope="module")
def stage1_model(photos, tmp_path_factory):
    run = tmp_path_factory.mktemp("s1")
    result = train(_config("stage1_semantic.yaml", "run.max_steps=4"), run, data_path=str(photos), quiet=True)
    return result.model_dir


@pytest.mark.slow
def test_stage1_resume_is_bit_exact(photos, tmp_path):
    """4 steps straight == 2 steps, stop, --resume to 4 (weights, EMA codebook, optimizer, data order)."""
    straight = train(_config("stage1_semantic.yaml", "run.max_steps=4", "run.checkpoint_every=2"), tmp_path / "a", data_path=str(photos), quiet=True)
    train(_config("stage1_semantic.yaml", "run.max_steps=4", "run.checkpoint_every=2"), tmp_path / "b", data_path=str(photos), quiet=True, max_steps=2)
    resumed = train(_config("stage1_semantic.yaml", "run.max_steps=4", "run.checkpoint_every=2"), tmp_path / "b", data_path=str(photos), quiet=True, resume=True)
    assert straight.steps == resumed.steps == 4
    _states_equal(straight.model_dir, resumed.model_dir)
    lines_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [l["loss"] for l in lines_a] == [l["loss"] for l in lines_b]


def test_stage2_resume_with_discriminator_is_bit_exact(photos, stage1_model, tmp_path):
    """Same for stage 2 with the GAN switched on mid-run (discriminator and its optimizer resume)."""
    common = [f"init={stage1_model}", "run.max_steps=4", "run.checkpoint_every=2", "loss.disc_start=1", "loss.perceptual_weight=0"]
    straight = train(_config("stage2_pixel.yaml", *common), tmp_path / "a", data_path=str(photos), quiet=True)
    train(_config("stage2_pixel.yaml", *common), tmp_path / "b", data_path=str(photos), quiet=True, max_steps=2)
    resumed = train(_config("stage2_pixel.yaml", *common), tmp_path / "b", data_path=str(photos), quiet=True, resume=True)
    _states_equal(straight.model_dir, resumed.model_dir)
    sa = load_checkpoint(list_checkpoints(tmp_path / "a")[-1].path, SemHiTok.from_pretrained(straight.model_dir))
    sb = load_checkpoint(list_checkpoints(tmp_path / "b")[-1].path, SemHiTok.from_pretrained(resumed.model_dir))
    for k, v in sa["discriminator"].items():
        assert torch.equal(v, sb["discriminator"][k]), k
    assert straight.last_metrics["disc_loss"] == resumed.last_metrics["disc_loss"]


def test_stages_freeze_what_they_do_not_train(photos, stage1_model, tmp_path):
    """Stage 2 leaves the teacher and stage-1 weights bit-identical; stage 3 all but the decoder."""
    s2 = train(_config("stage2_pixel.yaml", f"init={stage1_model}", "run.max_steps=2", "loss.perceptual_weight=0", "loss.disc_start=0"), tmp_path / "s2", data_path=str(photos), quiet=True)
    before, after = SemHiTok.from_pretrained(stage1_model).state_dict(), SemHiTok.from_pretrained(s2.model_dir).state_dict()
    stage1_keys = [k for k in before if k.split(".")[0] in ("teacher", "semantic_head", "semantic_quantizer", "semantic_decoder")]
    assert stage1_keys and all(torch.equal(before[k], after[k]) for k in stage1_keys)
    assert not torch.equal(before["pixel_encoder.proj_out.weight"], after["pixel_encoder.proj_out.weight"])

    s3 = train(_config("stage3_decoder.yaml", f"init={s2.model_dir}", "run.max_steps=2", "loss.perceptual_weight=0", "loss.disc_start=0"), tmp_path / "s3", data_path=str(photos), quiet=True)
    model3 = SemHiTok.from_pretrained(s3.model_dir)
    assert model3.config.pixel_decoder.depth == 3  # stage 3's larger decoder
    final = model3.state_dict()
    frozen = [k for k in after if not k.startswith("pixel_decoder.")]
    assert all(torch.equal(after[k], final[k]) for k in frozen)
    assert SemHiTok.from_pretrained(s2.model_dir).fingerprint() == model3.fingerprint()  # same codebooks


def test_non_finite_loss_stops_with_the_last_good_checkpoint(photos, tmp_path, monkeypatch):
    from semhitok.losses import SemanticDistillationLoss

    original = SemanticDistillationLoss.forward
    calls = {"n": 0}

    def poisoned(self, out):
        calls["n"] += 1
        terms = original(self, out)
        if calls["n"] == 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(SemanticDistillationLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 .* last good checkpoint is .*step_00000002"):
        train(_config("stage1_semantic.yaml", "run.max_steps=6", "run.checkpoint_every=2"), tmp_path, data_path=str(photos), quiet=True)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2]
    state = load_checkpoint(list_checkpoints(tmp_path)[-1].path, SemHiTok(_config("stage1_semantic.yaml").model_config()))
    assert state["step"] == 2


def test_bad_files_are_skipped_until_the_threshold(photos, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(photos, data)
    (data / "broken.png").write_bytes(b"not an image")
    result = train(_config("stage1_semantic.yaml", "run.max_steps=2", "data.max_bad_fraction=0.5"), tmp_path / "ok", data_path=str(data), quiet=True)
    assert result.steps == 2
    assert "broken.png" in (tmp_path / "ok.bad_files.log").read_text()  # listed beside the run folder
    for i in range(8):
        (data / f"broken_{i}.png").write_bytes(b"junk")
    with pytest.raises(BadDataError, match="could not be decoded") as excinfo:
        train(_config("stage1_semantic.yaml", "run.max_steps=4", "data.max_bad_fraction=0.1", "data.min_seen=5"), tmp_path / "bad", data_path=str(data), quiet=True)
    assert "bad.bad_files.log" in str(excinfo.value) and not (tmp_path / "bad").exists()
    assert sum("broken" in line for line in (tmp_path / "bad.bad_files.log").read_text().splitlines()) >= 1


def test_run_folder_contents(photos, tmp_path):
    train(_config("stage1_semantic.yaml", "run.max_steps=2", "run.checkpoint_every=1", "run.keep_last=1"), tmp_path, data_path=str(photos), quiet=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "run.jsonl", "metrics.jsonl", "tensorboard", "checkpoints", "model", "model_config.json"} <= names
    assert [c.step for c in list_checkpoints(tmp_path)] == [2]
    assert json.loads((tmp_path / "run.jsonl").read_text().splitlines()[0])["git_revision"]
    assert any((tmp_path / "tensorboard").iterdir())
    with pytest.raises(TrainingError, match="already has checkpoints"):
        train(_config("stage1_semantic.yaml", "run.max_steps=2"), tmp_path, data_path=str(photos), quiet=True)


def test_loop_options_run_and_export_uses_ema(photos, tmp_path):
    """bf16 autocast, gradient accumulation, gradient checkpointing and an EMA of the weights run
    together; the exported model carries the EMA weights, not the raw ones."""
    options = ["run.max_steps=2", "run.precision=bf16", "optim.grad_accum=2", "run.gradient_checkpointing=true", "run.ema_decay=0.5", "data.batch_size=2"]
    result = train(_config("stage1_semantic.yaml", *options), tmp_path, data_path=str(photos), quiet=True)
    assert result.steps == 2 and math.isfinite(result.last_metrics["loss"])
    exported_model = SemHiTok.from_pretrained(result.model_dir)
    raw = SemHiTok(exported_model.config)
    state = load_checkpoint(list_checkpoints(tmp_path)[-1].path, raw)  # the raw (non-EMA) weights
    exported = dict(exported_model.named_parameters())
    assert state["ema"] and all(torch.equal(exported[k], v) for k, v in state["ema"].items())
    assert any(not torch.equal(dict(raw.named_parameters())[k], v) for k, v in state["ema"].items())


# ---- resume exactness, run-folder safety, divergence (issue 7) ---------------------------------
def _checkpoint_state(run: Path, step: int):
    """(weights, training state) of checkpoint ``step`` of ``run``."""
    from safetensors.torch import load_file

    folder = run / "checkpoints" / f"step_{step:08d}"
    return load_file(str(folder / "model.safetensors")), torch.load(folder / "state.pt", weights_only=True)


def _assert_nested_equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_nested_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_nested_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resume_with_dead_code_restarts_is_bit_exact(photos, tmp_path):
    """Dead-code restarts draw from the global RNG every step (fast EMA decay: unused codes die
    after two steps). Before each DataLoader had its own generator, the resumed run's extra loader
    iterator shifted that RNG and 50 of 152 tensors came out different."""
    options = ["run.max_steps=6", "run.checkpoint_every=2", "model.dead_code_threshold=0.5", "model.ema_decay=0.5"]
    train(_config("stage1_semantic.yaml", *options), tmp_path / "a", data_path=str(photos), quiet=True)
    train(_config("stage1_semantic.yaml", *options), tmp_path / "b", data_path=str(photos), quiet=True, max_steps=3)
    # A kill after step 3 was logged but before its checkpoint: resume from step 2, log 3 again.
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000003")
    train(_config("stage1_semantic.yaml", *options), tmp_path / "b", data_path=str(photos), quiet=True, resume=True)
    weights_a, state_a = _checkpoint_state(tmp_path / "a", 6)
    weights_b, state_b = _checkpoint_state(tmp_path / "b", 6)
    _assert_nested_equal(weights_a, weights_b, "weights")
    _assert_nested_equal(state_a["optimizer"], state_b["optimizer"], "optimizer")
    _assert_nested_equal(state_a["rng"], state_b["rng"], "rng")
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step twice after the resume


def test_webdataset_resume_is_bit_exact_with_shuffled_shards(photos, tmp_path, monkeypatch):
    """Webdataset shards are shuffled per epoch (seed + epoch), and a resumed run re-reads the same
    shard order: 2 steps + resume to 5 (crossing an epoch) == 5 steps straight."""
    import tarfile

    from semhitok.training import loop

    shards = tmp_path / "shards"
    shards.mkdir()
    images = sorted(photos.glob("*.png"))
    for s in range(3):
        with tarfile.open(shards / f"train-{s}.tar", "w") as tar:
            for image in images[s::3]:
                tar.add(image, arcname=f"{s}_{image.stem}.png")
    seen = {}
    original = loop.build_dataset

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "build_dataset", spy)
    data = str(shards / "train-{0..2}.tar")
    options = ["run.max_steps=5", "run.checkpoint_every=5"]
    straight = train(_config("stage1_semantic.yaml", *options), tmp_path / "a", data_path=data, quiet=True)
    train(_config("stage1_semantic.yaml", *options), tmp_path / "b", data_path=data, quiet=True, max_steps=2)
    resumed = train(_config("stage1_semantic.yaml", *options), tmp_path / "b", data_path=data, quiet=True, resume=True)
    assert seen["shuffle_shards"] is True
    assert straight.last_metrics["epoch"] >= 1  # the runs crossed an epoch boundary
    _states_equal(straight.model_dir, resumed.model_dir)


def test_resume_refuses_a_changed_config_unless_allowed(photos, tmp_path):
    train(_config("stage1_semantic.yaml", "run.max_steps=2"), tmp_path, data_path=str(photos), quiet=True)
    config_before = (tmp_path / "config.yaml").read_text()
    runs_before = (tmp_path / "run.jsonl").read_text()
    changed = _config("stage1_semantic.yaml", "run.max_steps=3", "optim.lr=3e-4", "data.batch_size=2")
    with pytest.raises(TrainingError, match=r"differs from .*config.yaml in data.batch_size, optim.lr, run.max_steps; pass --allow-config-change"):
        train(changed, tmp_path, data_path=str(photos), quiet=True, resume=True)
    with pytest.raises(TrainingError, match=r"in data.path;"):
        train(_config("stage1_semantic.yaml", "run.max_steps=2"), tmp_path, data_path=str(tmp_path), quiet=True, resume=True)
    assert (tmp_path / "config.yaml").read_text() == config_before and (tmp_path / "run.jsonl").read_text() == runs_before

    result = train(changed, tmp_path, data_path=str(photos), quiet=True, resume=True, allow_config_change=True)
    assert result.steps == 3
    last_start = json.loads((tmp_path / "run.jsonl").read_text().splitlines()[-1])
    assert last_start["config_changes"]["optim.lr"] == {"old": 1e-3, "new": 3e-4}
    assert last_start["config_changes"]["data.batch_size"] == {"old": 4, "new": 2}
    assert (tmp_path / "config.until_step_00000002.yaml").read_text() == config_before  # history kept
    assert "lr: 0.0003" in (tmp_path / "config.yaml").read_text()


def test_divergence_is_never_checkpointed(photos, tmp_path):
    """A far too large lr drives the weights towards 1e30 before the loss turns NaN: the run
    stops at the first checkpoint with such weights, writes nothing, and names the last good one."""
    train(_config("stage1_semantic.yaml", "run.max_steps=6", "run.checkpoint_every=1"), tmp_path, data_path=str(photos), quiet=True, max_steps=2)
    huge = _config("stage1_semantic.yaml", "run.max_steps=6", "run.checkpoint_every=1", "optim.lr=1e6")
    with pytest.raises(TrainingError, match=r"step 3: the weights diverged \(.*\|w\| = .*\); not saved; the last good checkpoint is .*step_00000002"):
        train(huge, tmp_path, data_path=str(photos), quiet=True, resume=True, allow_config_change=True)
    assert [c.step for c in list_checkpoints(tmp_path)] == [1, 2]
    for checkpoint in list_checkpoints(tmp_path):
        meta = json.loads((checkpoint.path / "meta.json").read_text())
        assert math.isfinite(meta["loss"]) and meta["max_abs_trained_weight"] < 10
        weights, _ = _checkpoint_state(tmp_path, checkpoint.step)
        assert all(bool(torch.isfinite(w).all()) for w in weights.values() if w.is_floating_point())


def test_leftovers_of_a_killed_run_are_removed(photos, tmp_path):
    """A kill during a checkpoint write leaves a .step_* folder, one during pruning a .trash.*
    folder; the next run (holding the lock) deletes both."""
    train(_config("stage1_semantic.yaml", "run.max_steps=2", "run.checkpoint_every=1", "run.keep_last=1"), tmp_path, data_path=str(photos), quiet=True)
    folder = tmp_path / "checkpoints"
    (folder / ".step_00000003.x1y2").mkdir()
    (folder / ".step_00000003.x1y2" / "model.safetensors").write_bytes(b"half")
    (folder / ".trash.step_00000001.abc" / "step_00000001").mkdir(parents=True)
    train(_config("stage1_semantic.yaml", "run.max_steps=3", "run.checkpoint_every=1", "run.keep_last=1"), tmp_path, data_path=str(photos), quiet=True, resume=True, allow_config_change=True)
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000003"]


def test_a_few_images_fill_a_batch_with_a_warning(photos, tmp_path, caplog):
    """Fewer images than one batch (the README's 5 photos, batch 8): images repeat to fill it."""
    data = tmp_path / "three"
    data.mkdir()
    for image in sorted(photos.glob("*.png"))[:3]:
        shutil.copy(image, data / image.name)
    result = train(_config("stage1_semantic.yaml", "run.max_steps=2", "data.batch_size=8"), tmp_path / "run", data_path=str(data), quiet=True)
    assert result.steps == 2 and result.last_metrics["epoch"] == 1  # one batch per epoch
    assert "3 image(s) per rank for a batch of 8" in caplog.text


@pytest.mark.parametrize("kind", ["missing", "junk"])
def test_bad_data_leaves_no_run_folder(photos, tmp_path, kind):
    data = tmp_path / "data"
    if kind == "junk":
        data.mkdir()
        for i in range(12):
            (data / f"{i}.png").write_bytes(b"not an image")
    with pytest.raises((FileNotFoundError, BadDataError, ValueError)):
        train(_config("stage1_semantic.yaml", "run.max_steps=2", "data.min_seen=5"), tmp_path / "run", data_path=str(data), quiet=True)
    assert not (tmp_path / "run").exists()


def test_training_records_what_precision_auto_resolved_to(monkeypatch, photos, tmp_path):
    """run.precision=auto becomes fp32 on a CPU without native bf16, and run.jsonl says so."""
    from semhitok import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    train(_config("stage1_semantic.yaml", "run.max_steps=1", "run.precision=auto"), tmp_path, data_path=str(photos), quiet=True)
    assert json.loads((tmp_path / "run.jsonl").read_text().splitlines()[0])["precision"] == "fp32"
