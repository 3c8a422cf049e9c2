"""Broken model folders given as --model (and --init): one typed error, one line, exit 2, no output.

Each case damages a copy of a good folder the way a user's folder gets damaged (a copy cut short,
an edited config.json, weights of another model, a diverged run's NaN weights).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from semhitok import SemHiTok
from semhitok.modeling import ModelFolderError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"


def _edit_config(folder: Path, edit) -> None:
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(edit(raw)))


def _edit_weights(folder: Path, edit) -> None:
    state = load_file(str(folder / "model.safetensors"))
    save_file(edit(state), str(folder / "model.safetensors"))


def _poison(state: dict, value: float) -> dict:
    key = "pixel_decoder.head.weight" if "pixel_decoder.head.weight" in state else sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value
    return state


def _damage(folder: Path, kind: str) -> None:
    weights = folder / "model.safetensors"
    if kind == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        weights.write_bytes(b"")
    elif kind == "garbage":
        weights.write_bytes(b"\x00\x01 not safetensors at all")
    elif kind == "fifo":
        weights.unlink()
        os.mkfifo(weights)
    elif kind == "codebook_mismatch":
        _edit_config(folder, lambda c: {**c, "codebook_size": 128})
    elif kind == "width_mismatch":
        _edit_config(folder, lambda c: {**c, "pixel_dim": 12})
    elif kind == "unknown_activation":
        _edit_config(folder, lambda c: {**c, "teacher": {**c["teacher"], "hf_config": {**c["teacher"]["hf_config"], "hidden_act": "no_such_activation"}}})
    elif kind == "json_list":
        (folder / "config.json").write_text("[1, 2, 3]")
    elif kind == "not_utf8":
        (folder / "config.json").write_bytes(b"\xff\xfe{\x00")
    elif kind == "missing_tensor":
        _edit_weights(folder, lambda s: {k: v for k, v in s.items() if k != sorted(s)[0]})
    elif kind == "extra_tensor":
        _edit_weights(folder, lambda s: {**s, "surprise.weight": torch.zeros(2)})
    elif kind == "nan":
        _edit_weights(folder, lambda s: _poison(s, float("nan")))
    elif kind == "inf":
        _edit_weights(folder, lambda s: _poison(s, float("inf")))
    elif kind == "mixed":
        _edit_weights(folder, lambda s: {**s, "semantic_quantizer.embed": torch.randn_like(s["semantic_quantizer.embed"])} if "semantic_quantizer.embed" in s else s)
    else:
        raise AssertionError(kind)


CASES = [
    ("truncated", ["model.safetensors", "not a readable .safetensors file"]),
    ("empty", ["model.safetensors", "not a readable .safetensors file"]),
    ("garbage", ["model.safetensors", "not a readable .safetensors file"]),
    ("fifo", ["has no model.safetensors"]),
    ("codebook_mismatch", ["do not match config.json", "of another shape"]),
    ("width_mismatch", ["do not match config.json"]),
    ("unknown_activation", ["config.json", "no_such_activation"]),
    ("json_list", ["broken config.json", "expected a JSON object, got a JSON list"]),
    ("not_utf8", ["config.json"]),
    ("missing_tensor", ["do not match config.json", "1 missing tensors"]),
    ("extra_tensor", ["do not match config.json", "unexpected tensors (surprise.weight)"]),
    ("nan", ["NaN or Inf"]),
    ("inf", ["NaN or Inf"]),
]


@pytest.fixture
def broken(tmp_path, tiny_model):
    def make(kind: str) -> Path:
        folder = tmp_path / f"model_{kind}"
        shutil.copytree(tiny_model, folder)
        _damage(folder, kind)
        return folder

    return make


@pytest.mark.parametrize("kind, fragments", CASES, ids=[c[0] for c in CASES])
def test_from_pretrained_raises_one_typed_error(broken, kind, fragments):
    folder = broken(kind)
    with pytest.raises(ModelFolderError) as info:
        SemHiTok.from_pretrained(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("kind, fragments", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_cli_refuses_broken_model_folder(cli, error_line, broken, tmp_path, photo, kind, fragments, command):
    folder = broken(kind)
    out = tmp_path / "out" / ("t.npz" if command == "encode" else "recon")
    code, stdout, err = cli(command, photo, "--model", folder, "-o", out)
    assert code == 2
    line = error_line(err, *fragments)
    assert str(folder) in line
    assert stdout == ""
    assert not (tmp_path / "out").exists()  # no output, no temporary file, no created folder


def test_mixed_folder_is_refused(broken, cli, error_line, tmp_path, photo):
    folder = broken("mixed")
    code, _, err = cli("encode", photo, "--model", folder, "-o", tmp_path / "t.npz")
    assert code == 2
    error_line(err, "fingerprint", "mixes files of different models")


def test_nan_weights_never_reach_encode(broken, tmp_path, photo, cli):
    """Before: a NaN model encoded with exit 0 (meaningless ids) and decode failed as an internal error."""
    code, _, _ = cli("encode", photo, "--model", broken("nan"), "-o", tmp_path / "t.npz")
    assert code == 2 and not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("kind", ["truncated", "nan", "json_list"])
def test_train_init_with_broken_folder(cli, error_line, broken, tmp_path, kind):
    """--init goes through SemHiTok.from_pretrained: the same typed error reaches `train`."""
    folder = broken(kind)
    photos = Path(__file__).resolve().parents[2] / "src" / "semhitok" / "assets" / "photos"
    code, _, err = cli("train", CONFIGS / "stage2_pixel.yaml", "--init", folder, "--data", photos, "--out", tmp_path / "run", "--max-steps", "1")
    assert code == 2
    error_line(err, str(folder))
