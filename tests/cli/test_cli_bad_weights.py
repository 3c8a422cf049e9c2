"""Weights files the user names (--fid-weights, --lpips-weights, loss.vgg_weights): a pickle payload is
refused and never run, and every bad file is one line with exit 2 and no report left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from semhitok.evaluation.inception import FIDInceptionV3
from semhitok.losses import VGG16Features
from semhitok.weights_file import WeightsFileError, read_weights_file

REFUSED = "not a weights-only checkpoint; refusing to unpickle"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
PHOTOS = Path(__file__).resolve().parents[2] / "src" / "semhitok" / "assets" / "photos"


class Payload:
    """Unpickling this would create a file: proof that pickle code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def make_weights(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    if kind == "payload":
        torch.save({"weight": torch.zeros(1), "evil": Payload(tmp_path / "PAYLOAD_RAN")}, path)
    elif kind == "module":  # a whole pickled nn.Module, not a state dict
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif kind == "truncated":
        torch.save({"weight": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "not_a_dict":
        torch.save([torch.zeros(1)], path)
    elif kind == "nan":
        path = tmp_path / "nan.safetensors"
        save_file({"weight": torch.tensor([1.0, float("nan")])}, str(path))
    elif kind == "bad_safetensors":
        path = tmp_path / "bad.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    elif kind == "wrong_layout":  # real tensors, another network's keys
        torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    else:
        raise AssertionError(kind)
    return path


CASES = [
    ("payload", REFUSED),
    ("module", REFUSED),
    ("garbage", "neither a .safetensors file nor a torch weights file"),
    ("truncated", "damaged torch file"),
    ("empty", "neither a .safetensors file nor a torch weights file"),
    ("folder", "is a folder"),
    ("fifo", "not a regular file"),
    ("not_a_dict", "does not hold a state dict of tensors"),
    ("nan", "NaN or Inf"),
    ("bad_safetensors", "not a readable .safetensors file"),
]


@pytest.mark.parametrize("kind, fragment", CASES, ids=[c[0] for c in CASES])
def test_read_weights_file(tmp_path, kind, fragment):
    path = make_weights(tmp_path, kind)
    with pytest.raises(WeightsFileError) as info:
        read_weights_file(path, what="--x")
    assert fragment in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_read_weights_file_reads_good_files(tmp_path):
    """The reference: what torch.save / save_file wrote comes back equal, from both formats."""
    state = {"a": torch.randn(3, 2), "b": torch.arange(4)}
    torch.save(state, tmp_path / "w.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    for name in ("w.pth", "w.safetensors", "wrapped.pt"):
        got = read_weights_file(tmp_path / name)
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state), name


@pytest.mark.parametrize("kind, fragment", [*CASES, ("wrong_layout", "not in the pt_inception-2015-12-05 layout")], ids=[*(c[0] for c in CASES), "wrong_layout"])
def test_eval_fid_weights(cli, error_line, tmp_path, tiny_model, kind, fragment):
    weights = make_weights(tmp_path, kind)
    out = tmp_path / "report"
    code, stdout, err = cli("eval", "--model", tiny_model, "--data", PHOTOS, "-o", out, "--fid-weights", weights, "--cache-dir", tmp_path / "cache")
    assert code == 2
    error_line(err, "--fid-weights", fragment, str(weights))
    assert stdout == "" and not out.exists() and not (tmp_path / "PAYLOAD_RAN").exists()


@pytest.mark.parametrize("kind, fragment", [("payload", REFUSED), ("garbage", "neither"), ("wrong_layout", "not a torchvision VGG16 state dict")])
def test_eval_lpips_weights(cli, error_line, tmp_path, tiny_model, kind, fragment):
    weights = make_weights(tmp_path, kind)
    out = tmp_path / "report"
    code, _, err = cli("eval", "--model", tiny_model, "--data", PHOTOS, "-o", out, "--lpips-weights", weights, "--cache-dir", tmp_path / "cache")
    assert code == 2
    error_line(err, "--lpips-weights", fragment)
    assert not out.exists() and not (tmp_path / "PAYLOAD_RAN").exists()


@pytest.mark.parametrize("kind, fragment", [("payload", REFUSED), ("truncated", "damaged torch file")])
def test_train_loss_vgg_weights(cli, error_line, tmp_path, tiny_model, kind, fragment):
    weights = make_weights(tmp_path, kind)
    code, _, err = cli("train", CONFIGS / "stage2_pixel.yaml", f"loss.vgg_weights={weights}", "loss.perceptual_weight=1.0",
                       "--init", tiny_model, "--data", PHOTOS, "--out", tmp_path / "run", "--max-steps", "1")
    assert code == 2, err
    error_line(err, fragment, str(weights))
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_real_layouts_still_load(tmp_path):
    """The refusals above do not refuse the real layouts (random values, the real keys)."""
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "pt_inception.pth")
    assert len(read_weights_file(tmp_path / "pt_inception.pth")) > 300
    save_file(VGG16Features().state_dict(), str(tmp_path / "vgg16.safetensors"))
    assert VGG16Features(tmp_path / "vgg16.safetensors").pretrained
