"""Checkpoints: bit-exact round trip, weights_only state, atomic writes, keep-last-N."""

from pathlib import Path

import pytest
import torch

from semhitok.training import checkpoint as ckpt
from semhitok.training.errors import CheckpointError


def _model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    return m


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss = model(torch.randn(5, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {"optimizer": opt.state_dict(), "step": 2, "rng": ckpt.rng_state(), "data": {"epoch": 0, "index": 10}}
    path = ckpt.save_checkpoint(tmp_path, 2, model, state)
    expected_next = torch.rand(3)

    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    loaded = ckpt.load_checkpoint(path, other)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-2)
    opt2.load_state_dict(loaded["optimizer"])
    # The restored optimizer holds the same moments and step counts as the one that was saved.
    saved, restored = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert saved.keys() == restored.keys() and len(saved) == len(list(model.parameters()))
    for index, moments in saved.items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(moments[key], restored[index][key]), (index, key)
    assert restored[0]["exp_avg"].abs().sum() > 0  # two real steps were taken: not zeros compared with zeros
    assert loaded["step"] == 2 and loaded["data"] == {"epoch": 0, "index": 10}
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected_next)


def test_checkpoint_folders_follow_the_umask(tmp_path):
    """Not mkdtemp's 0700: colleagues in the group can read a run's checkpoints."""
    import os

    old = os.umask(0o022)
    try:
        path = ckpt.save_checkpoint(tmp_path, 1, _model(), {"step": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
    for name in ("model.safetensors", "state.pt", "meta.json"):
        assert (path / name).stat().st_mode & 0o777 == 0o644, name


def test_keep_last_and_listing(tmp_path):
    model = _model()
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(tmp_path, step, model, {"step": step}, keep_last=2)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [30, 40]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_failed_write_leaves_no_checkpoint(tmp_path, monkeypatch):
    model = _model()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*step_00000005: disk full"):
        ckpt.save_checkpoint(tmp_path, 5, model, {"step": 5})
    assert ckpt.list_checkpoints(tmp_path) == []
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_state_with_code_is_refused(tmp_path):
    """state.pt is read with weights_only=True: a pickled object that is not plain data is refused."""
    model = _model()
    path = ckpt.save_checkpoint(tmp_path, 1, model, {"step": 1})
    torch.save({"evil": ckpt.Checkpoint(path, 1)}, path / "state.pt")
    with pytest.raises(CheckpointError, match="state.pt is not a weights-only checkpoint; refusing to unpickle"):
        ckpt.load_checkpoint(path, _model())


@pytest.mark.parametrize("damage", ["truncated weights", "garbage state", "other model"])
def test_damaged_checkpoints_are_typed_errors(tmp_path, damage):
    path = ckpt.save_checkpoint(tmp_path, 1, _model(), {"step": 1})
    if damage == "truncated weights":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage state":
        (path / "state.pt").write_bytes(b"\x00garbage")
    model = torch.nn.Linear(3, 3) if damage == "other model" else _model()
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: "):
        ckpt.load_checkpoint(path, model)


def test_a_kill_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    """Pruning renames a checkpoint aside before deleting it: a kill in the middle of the delete
    leaves a hidden .trash.* folder (removed by the next run), never a step_* folder missing files."""
    model = _model()
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, model, {"step": step}, keep_last=2)
    real_rmtree = ckpt.shutil.rmtree

    def killed_midway(path, ignore_errors=False):
        victim = next(Path(path).rglob("model.safetensors"))
        victim.unlink()  # the delete got this far ...
        raise KeyboardInterrupt  # ... when the process died

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 3, model, {"step": 3}, keep_last=2)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [2, 3]
    for c in ckpt.list_checkpoints(tmp_path):
        assert {p.name for p in c.path.iterdir()} == {"model.safetensors", "state.pt", "meta.json"}
    leftovers = ckpt.remove_partial(tmp_path)
    assert [p.name.split(".")[1] for p in leftovers] == ["trash"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000002", "step_00000003"]


def test_weights_problem():
    trained = {"w"}
    assert ckpt.weights_problem([("w", torch.ones(3)), ("frozen", torch.full((2,), 1e6))], trained) is None
    assert "w holds NaN or Inf" == ckpt.weights_problem([("w", torch.tensor([1.0, float("nan")]))], trained)
    assert "frozen holds NaN or Inf" == ckpt.weights_problem([("frozen", torch.tensor([float("inf")]))], trained)
    problem = ckpt.weights_problem([("w", torch.tensor([0.5, -3e4]))], trained)
    assert problem is not None and "w reached |w| = 3e+04" in problem
    assert ckpt.weights_problem([("ids", torch.tensor([10**9]))], {"ids"}) is None  # integers are not weights


def test_last_good_checkpoint_skips_a_non_finite_loss(tmp_path):
    model = _model()
    ckpt.save_checkpoint(tmp_path, 1, model, {"step": 1}, meta={"loss": 0.5})
    ckpt.save_checkpoint(tmp_path, 2, model, {"step": 2}, meta={"loss": None})
    assert ckpt.last_good_checkpoint(tmp_path).step == 1
    assert ckpt.read_meta(tmp_path / "checkpoints" / "step_00000001") == {"step": 1, "loss": 0.5}


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        ckpt.load_checkpoint(tmp_path, _model())
