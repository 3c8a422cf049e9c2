"""Checkpoints: bit-exact round trip, weights_only state, atomic writes, keep-last-N."""

import pytest
import torch

from semhitok.training import checkpoint as ckpt


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
    assert loaded["step"] == 2 and loaded["data"] == {"epoch": 0, "index": 10}
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected_next)


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
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, 5, model, {"step": 5})
    assert ckpt.list_checkpoints(tmp_path) == []
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_state_with_code_is_refused(tmp_path):
    """state.pt is read with weights_only=True: a pickled object that is not plain data is refused."""
    model = _model()
    path = ckpt.save_checkpoint(tmp_path, 1, model, {"step": 1})
    torch.save({"evil": ckpt.Checkpoint(path, 1)}, path / "state.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        ckpt.load_checkpoint(path, _model())


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        ckpt.load_checkpoint(tmp_path, _model())
