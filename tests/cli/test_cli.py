"""The command line: encode -> decode round trip, reconstruct, and one clean line for every bad input.

Most cases call ``main([...])`` in-process (fast); a few real subprocesses prove ``python -m
semhitok`` and the console script, their exit codes and their stderr.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.cli import CLIError, main
from semhitok.cli.common import output_stems
from semhitok.cli.reconstruct import side_by_side
from semhitok.cli.tokenfile import FORMAT_VERSION, TokenFile, write_tokens
from semhitok.image_io import load_image
from semhitok.modeling import fit_to_size

PHOTOS = Path(__file__).parents[2] / "assets" / "photos"
SIZE = 64  # the tiny preset's image size
PLANNED_COMMANDS: tuple[str, ...] = ()  # commands not yet built: --help must not list them


# ---- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model saved once; seed 123 so its fingerprint differs from ``--preset tiny`` (seed 0)."""
    torch.manual_seed(123)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    SemHiTok(SemHiTokConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tok(model_dir) -> SemHiTok:
    return SemHiTok.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    files = sorted(PHOTOS.glob("*.jpg"))
    assert len(files) >= 2, f"bundled photos missing in {PHOTOS}"
    return files


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Small generated images of different sizes and modes."""
    rng = np.random.default_rng(0)
    out = []
    for name, (h, w), mode in (("square", (64, 64), "RGB"), ("wide", (30, 50), "RGB"), ("grey", (80, 70), "L"), ("alpha", (40, 40), "RGBA")):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze()
        path = tmp_path / "in" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(arr, mode).save(path)
        out.append(path)
    return out


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("semhitok: error: "), lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- help ----------------------------------------------------------------------------------------
def test_help_lists_exactly_the_working_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    section = out.split("commands:")[1].split("examples:")[0]
    # a command's line is indented 4 spaces; a wrapped help text continues further in
    listed = [line.split()[0] for line in section.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    from semhitok.cli.main import COMMANDS

    assert listed == [m.NAME for m in COMMANDS]  # every registered command is listed, once, in order
    assert listed[:8] == ["demo", "train", "export", "encode", "decode", "reconstruct", "eval", "visualize"]
    for name in PLANNED_COMMANDS:
        assert f"    {name} " not in out
        code, _, err = run_cli(capsys, name, "--help")
        assert code == 2
        assert_one_error_line(err, "invalid choice")


@pytest.mark.parametrize("command", ["demo", "train", "export", "encode", "decode", "reconstruct", "eval", "visualize"])
def test_subcommand_help(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert f"usage: semhitok {command}" in out
    assert f"  semhitok {command} " in out  # an example
    if command in ("encode", "decode", "reconstruct", "eval", "visualize"):
        assert "--model DIR" in out and "--preset NAME" in out


def test_no_command_and_usage_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys)
    assert code == 2
    assert_one_error_line(err, "no command given")
    for args, fragment in [
        (["encode", "x.png", "--preset", "tiny"], "-o/--output"),
        (["encode", "x.png", "-o", tmp_path / "t.npz"], "--model --preset"),
        (["encode", "x.png", "--preset", "tiny", "--model", tmp_path, "-o", tmp_path / "t.npz"], "not allowed with"),
        (["encode", "x.png", "--preset", "tiny", "-o", tmp_path / "t.npz", "--batch-size", "0"], "--batch-size"),
        (["reconstruct", "x.png", "--preset", "tiny", "-o", tmp_path / "r", "--resize", "squash"], "--resize"),
    ]:
        code, _, err = run_cli(capsys, *args)
        assert code == 2, args
        assert_one_error_line(err, fragment)
    assert listing(tmp_path) == []


# ---- happy paths -------------------------------------------------------------------------------------
def test_encode_decode_round_trip(capsys, tmp_path, model_dir, tok, photos, images):
    inputs = [*photos, *images]
    tokens = tmp_path / "out" / "tokens.npz"  # the missing folder is created
    code, out, err = run_cli(capsys, "encode", *inputs, "--model", model_dir, "-o", tokens, "--batch-size", "64")
    assert code == 0, err
    assert err == ""
    assert "encoded 9 images" in out and str(tokens) in out

    with np.load(tokens, allow_pickle=False) as data:
        npz = {k: data[k] for k in data.files}
    for key in ("ids", "semantic_ids", "pixel_ids", "grid", "codebook_size", "subcodebook_size", "fingerprint", "files", "format_version"):
        assert key in npz, key
    n, g, m = len(inputs), tok.grid_size, tok.subcodebook_size
    assert npz["ids"].dtype == np.int64 and npz["ids"].shape == (n, g, g)
    assert npz["grid"].tolist() == [g, g]
    assert int(npz["codebook_size"]) == tok.codebook_size and int(npz["subcodebook_size"]) == m
    assert str(npz["fingerprint"]) == tok.fingerprint()
    assert npz["files"].tolist() == [str(p) for p in inputs]
    assert int(npz["format_version"]) == FORMAT_VERSION
    assert np.array_equal(npz["ids"], npz["semantic_ids"] * m + npz["pixel_ids"])

    # the same ids as the Python API on the same images
    batch = torch.cat([fit_to_size(load_image(p)[None], SIZE, "crop") for p in inputs])
    assert np.array_equal(npz["ids"], tok.encode(batch).ids.numpy())

    outdir = tmp_path / "decoded"
    code, out, err = run_cli(capsys, "decode", tokens, "--model", model_dir, "-o", outdir, "--batch-size", "4")
    assert code == 0, err
    names = sorted(p.name for p in outdir.iterdir())
    assert names == sorted(f"{Path(p).stem}.png" for p in inputs)
    assert "astronaut.png" in names
    decoded = tok.decode(torch.from_numpy(npz["ids"]))
    for i, p in enumerate(inputs):
        with Image.open(outdir / f"{Path(p).stem}.png") as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
            arr = np.asarray(im).astype(np.int16)
        expected = (decoded[i].permute(1, 2, 0) * 255).round().numpy().astype(np.int16)
        assert np.abs(arr - expected).max() <= 1
    assert listing(tmp_path / "out") == ["tokens.npz"]  # no temporary files left


def test_decode_without_files_and_into_existing_folder(capsys, tmp_path, model_dir, tok):
    ids = torch.randint(0, tok.vocab_size, (2, tok.grid_size, tok.grid_size))
    path = tmp_path / "hand.npz"
    with open(path, "wb") as f:
        write_tokens(f, TokenFile(ids=ids.numpy(), grid=(tok.grid_size,) * 2, codebook_size=tok.codebook_size,
                                  subcodebook_size=tok.subcodebook_size, fingerprint=tok.fingerprint(), format_version=1))
    outdir = tmp_path / "existing"
    outdir.mkdir()
    (outdir / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "decode", path, "--model", model_dir, "-o", outdir)
    assert code == 0, err
    assert listing(outdir) == ["image_0000.png", "image_0001.png", "keep.txt"]


def test_preset_encode_decode_and_fingerprint_refusal(capsys, tmp_path, model_dir, photos):
    tokens = tmp_path / "t.npz"
    code, out, err = run_cli(capsys, "encode", photos[0], "--preset", "tiny", "-o", tokens)
    assert code == 0
    assert err.count("\n") == 1 and err.startswith("semhitok: warning:") and "UNTRAINED" in err
    assert "UNTRAINED" in out
    code, _, err = run_cli(capsys, "decode", tokens, "--preset", "tiny", "-o", tmp_path / "same")
    assert code == 0  # seed 0 every time: the same fingerprint
    assert len(list((tmp_path / "same").iterdir())) == 1

    # a model with other codebooks refuses, naming both fingerprints, unless --force
    fp_tokens = str(np.load(tokens)["fingerprint"])
    fp_model = SemHiTok.from_pretrained(model_dir).fingerprint()
    code, _, err = run_cli(capsys, "decode", tokens, "--model", model_dir, "-o", tmp_path / "other")
    assert code == 2
    assert_one_error_line(err, f"{tokens} was made by model {fp_tokens}, this model is {fp_model}", "--force")
    assert not (tmp_path / "other").exists()
    code, _, err = run_cli(capsys, "decode", tokens, "--model", model_dir, "-o", tmp_path / "other", "--force")
    assert code == 0 and "warning" in err
    assert (tmp_path / "other" / f"{photos[0].stem}.png").is_file()


def test_reconstruct(capsys, tmp_path, model_dir, photos, images):
    inputs = [*photos, *images]
    outdir = tmp_path / "recon"
    code, out, err = run_cli(capsys, "reconstruct", *inputs, "--model", model_dir, "-o", outdir, "--batch-size", "4")
    assert code == 0, err
    assert "UNTRAINED" not in out
    files = sorted(p.name for p in outdir.iterdir())
    assert files == sorted([f"{Path(p).stem}_reconstruction.png" for p in inputs] + ["metrics.json"])
    for p in inputs:
        with Image.open(outdir / f"{Path(p).stem}_reconstruction.png") as im:
            assert im.size == (2 * SIZE + 2, SIZE)
    metrics = json.loads((outdir / "metrics.json").read_text())
    values = [row["psnr_db"] for row in metrics["images"]]
    assert [row["file"] for row in metrics["images"]] == [str(p) for p in inputs]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert metrics["mean_psnr_db"] == pytest.approx(sum(values) / len(values), abs=1e-3)
    assert metrics["untrained"] is False
    # the table: a row per image and the mean
    assert "PSNR (dB)" in out and f"{values[0]:.2f}" in out
    assert any(line.startswith("mean") for line in out.splitlines())


def test_reconstruct_preset_says_untrained(capsys, tmp_path, photos):
    code, out, err = run_cli(capsys, "reconstruct", photos[0], "--preset", "tiny", "-o", tmp_path / "r", "--resize", "stretch")
    assert code == 0
    assert "UNTRAINED" in out.splitlines()[0]
    assert "UNTRAINED" in err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["untrained"] is True and metrics["resize"] == "stretch"


def test_resize_error_policy(capsys, tmp_path, model_dir, images):
    square, wide = images[0], images[1]
    code, _, err = run_cli(capsys, "encode", square, "--model", model_dir, "-o", tmp_path / "ok.npz", "--resize", "error")
    assert code == 0, err
    code, _, err = run_cli(capsys, "encode", square, wide, "--model", model_dir, "-o", tmp_path / "no.npz", "--resize", "error")
    assert code == 2
    assert_one_error_line(err, str(wide), "50x30", "--resize crop")
    assert not (tmp_path / "no.npz").exists()


def test_output_stems_are_unique():
    assert output_stems(["a/x.jpg", "b/x.png", "X.gif", "c/y.jpg"], 4) == ["x", "x_2", "X_3", "y"]
    assert output_stems(None, 2) == ["image_0000", "image_0001"]
    assert output_stems(["", ".hidden"], 2) == ["image_0000", "hidden"]


def test_side_by_side_layout():
    a, b = torch.zeros(3, SIZE, SIZE), torch.full((3, SIZE, SIZE), 0.5)
    out = side_by_side(a, b)
    assert out.shape == (3, SIZE, 2 * SIZE + 2)
    assert out[:, :, SIZE : SIZE + 2].eq(1.0).all()
    assert out[:, :, :SIZE].eq(0).all() and out[:, :, SIZE + 2 :].eq(0.5).all()


# ---- bad input: one line, exit 2, nothing left behind ------------------------------------------------
def _broken_model(tmp_path: Path, model_dir: Path, kind: str) -> Path:
    folder = tmp_path / f"model_{kind}"
    shutil.copytree(model_dir, folder)
    config = folder / "config.json"
    if kind == "no_config":
        config.unlink()
    elif kind == "no_weights":
        (folder / "model.safetensors").unlink()
    elif kind == "bad_json":
        config.write_text("{ not json")
    elif kind == "bad_value":
        raw = json.loads(config.read_text())
        raw["codebook_size"] = 0
        config.write_text(json.dumps(raw))
    elif kind == "bad_teacher":
        raw = json.loads(config.read_text())
        raw["teacher"] = 3
        config.write_text(json.dumps(raw))
    elif kind == "unknown_key":
        raw = json.loads(config.read_text())
        raw["colour"] = "blue"
        config.write_text(json.dumps(raw))
    elif kind == "wrong_weights":
        raw = json.loads(config.read_text())
        raw["codebook_size"] = 128  # weights hold 256 codes
        config.write_text(json.dumps(raw))
    elif kind == "bad_weights":
        (folder / "model.safetensors").write_bytes(b"\x00\x01garbage")
    return folder


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("missing", ["does not exist"]),
        ("no_config", ["has no config.json"]),
        ("no_weights", ["has no model.safetensors"]),
        ("bad_json", ["broken config.json", "not valid JSON"]),
        ("bad_value", ["broken config.json", "codebook_size"]),
        ("bad_teacher", ["broken config.json", "teacher"]),
        ("unknown_key", ["broken config.json", "colour"]),
        ("wrong_weights", ["cannot load the weights", "do not match config.json"]),
        ("bad_weights", ["cannot load the weights"]),
    ],
)
def test_bad_model_folder(capsys, tmp_path, model_dir, images, kind, fragments):
    folder = tmp_path / "nowhere" if kind == "missing" else _broken_model(tmp_path, model_dir, kind)
    for command, out in (("encode", tmp_path / "t.npz"), ("reconstruct", tmp_path / "r")):
        code, stdout, err = run_cli(capsys, command, images[0], "--model", folder, "-o", out)
        assert code == 2
        assert_one_error_line(err, *fragments)
        assert stdout == ""
        assert not out.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_unknown_preset(capsys, tmp_path, images):
    code, _, err = run_cli(capsys, "encode", images[0], "--preset", "huge", "-o", tmp_path / "t.npz")
    assert code == 2
    assert_one_error_line(err, "unknown preset 'huge'", "tiny")
    assert listing(tmp_path) == ["in", *[f"in/{p.name}" for p in sorted(images)]]


def _bad_image(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.png"
    if kind == "directory":
        d = tmp_path / "a_folder"
        d.mkdir()
        return d
    if kind == "garbage":
        p = tmp_path / "garbage.jpg"
        p.write_bytes(b"definitely not a jpeg")
        return p
    p = tmp_path / "truncated.jpg"  # a real photo, cut in half
    data = (PHOTOS / "astronaut.jpg").read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


@pytest.mark.parametrize("kind, fragment", [("missing", "no such file"), ("directory", "is a directory"), ("garbage", "garbage.jpg"), ("truncated", "truncated.jpg")])
@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_bad_image(capsys, tmp_path, model_dir, images, kind, fragment, command):
    bad = _bad_image(tmp_path, kind)
    out = tmp_path / ("t.npz" if command == "encode" else "recon")
    before = listing(tmp_path)
    # the bad image comes last, in its own batch, after good images were processed and written
    code, stdout, err = run_cli(capsys, command, *images[:2], bad, "--model", model_dir, "-o", out, "--batch-size", "1")
    assert code == 2
    line = assert_one_error_line(err, fragment)
    assert str(bad) in line
    assert stdout == ""
    assert listing(tmp_path) == before  # no output, no temporary files


def test_failed_run_leaves_existing_output_folder_alone(capsys, tmp_path, model_dir, images):
    outdir = tmp_path / "recon"
    outdir.mkdir()
    (outdir / "keep.txt").write_text("mine")
    bad = _bad_image(tmp_path, "garbage")
    code, _, err = run_cli(capsys, "reconstruct", *images, bad, "--model", model_dir, "-o", outdir, "--batch-size", "2")
    assert code == 2
    assert_one_error_line(err, "garbage.jpg")
    assert listing(outdir) == ["keep.txt"]


def _token_file(tmp_path: Path, tok: SemHiTok, kind: str) -> Path:
    g = tok.grid_size
    good = {
        "ids": np.zeros((2, g, g), np.int64), "grid": np.array([g, g]), "codebook_size": np.array(tok.codebook_size),
        "subcodebook_size": np.array(tok.subcodebook_size), "fingerprint": np.array(tok.fingerprint()),
        "format_version": np.array(FORMAT_VERSION), "files": np.array(["a.png", "b.png"]),
    }
    path = tmp_path / f"{kind}.npz"
    if kind == "text":
        path.write_text("ids = [1, 2, 3]\n")
        return path
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, good["ids"])
        return path
    if kind == "missing":
        return tmp_path / "nothing.npz"
    if kind == "no_keys":
        good = {"ids": good["ids"]}
    elif kind == "grid":
        good.update(ids=np.zeros((2, 2 * g, 2 * g), np.int64), grid=np.array([2 * g, 2 * g]))
    elif kind == "grid_mismatch":
        good.update(grid=np.array([g + 1, g]))
    elif kind == "range":
        good["ids"][1, 0, 0] = tok.vocab_size
    elif kind == "negative":
        good["ids"][0, 1, 1] = -1
    elif kind == "float":
        good["ids"] = good["ids"].astype(np.float32)
    elif kind == "fingerprint":
        good["fingerprint"] = np.array("0123456789abcdef")
    elif kind == "vocab":
        good["subcodebook_size"] = np.array(tok.subcodebook_size + 1)
    elif kind == "pickled":
        good["files"] = np.array([Path("a"), Path("b")], dtype=object)
    np.savez(path, **good, allow_pickle=True) if kind == "pickled" else np.savez(path, **good)
    return path


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("missing", ["no such file"]),
        ("text", ["not a semhitok token file"]),
        ("npy", ["not a semhitok token file", ".npy"]),
        ("no_keys", ["lacks", "grid", "fingerprint"]),
        ("grid", ["8x8 token grids", "4x4"]),
        ("grid_mismatch", ["grid [5, 4] does not match"]),
        ("range", ["ids must lie in [0, 1024)", "1024]"]),
        ("negative", ["ids must lie in [0, 1024)", "-1"]),
        ("float", ["ids must be integers"]),
        ("fingerprint", ["was made by model 0123456789abcdef, this model is"]),
        ("vocab", ["m=5", "m=4"]),
        ("pickled", ["damaged"]),
    ],
)
def test_bad_token_file(capsys, tmp_path, model_dir, tok, kind, fragments):
    path = _token_file(tmp_path, tok, kind)
    out = tmp_path / "decoded"
    code, stdout, err = run_cli(capsys, "decode", path, "--model", model_dir, "-o", out)
    assert code == 2
    line = assert_one_error_line(err, *fragments)
    assert str(path) in line
    assert stdout == ""
    assert not out.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_directory_as_token_file(capsys, tmp_path, model_dir):
    code, _, err = run_cli(capsys, "decode", tmp_path, "--model", model_dir, "-o", tmp_path / "d")
    assert code == 2
    assert_one_error_line(err, "is a directory")


def test_output_not_writable(capsys, tmp_path, model_dir, images):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [
        ("encode", blocker / "t.npz", "is a file, not a folder"),
        ("encode", blocker / "deeper" / "t.npz", "is a file, not a folder"),
        ("encode", tmp_path / "in", "is a folder"),  # -o names an existing folder
        ("reconstruct", blocker, "exists and is a file"),
        ("reconstruct", blocker / "r", "is a file, not a folder"),
    ]
    before = listing(tmp_path)
    for command, out, fragment in cases:
        code, _, err = run_cli(capsys, command, images[0], "--model", model_dir, "-o", out)
        assert code == 2, (command, out)
        assert_one_error_line(err, fragment)
    assert listing(tmp_path) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user for permissions")
def test_output_permission_denied(capsys, tmp_path, model_dir, images):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, "encode", images[0], "--model", model_dir, "-o", locked / "t.npz")
        assert code == 2
        assert_one_error_line(err, "permission denied")
        code, _, err = run_cli(capsys, "reconstruct", images[0], "--model", model_dir, "-o", locked / "r")
        assert code == 2
        assert_one_error_line(err, "permission denied")
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable(capsys, tmp_path, images):
    code, _, err = run_cli(capsys, "encode", images[0], "--preset", "tiny", "--device", "cuda", "-o", tmp_path / "t.npz")
    assert code == 2
    assert_one_error_line(err, "CUDA is not available")
    assert not (tmp_path / "t.npz").exists()


def test_internal_error_is_one_line_unless_debug(capsys, monkeypatch, tmp_path, images):
    import semhitok.cli.encode as encode_cmd

    def boom(args):
        raise RuntimeError("something broke\ninside")

    monkeypatch.setattr(encode_cmd, "run", boom)
    monkeypatch.delenv("SEMHITOK_DEBUG", raising=False)
    code = main(["encode", str(images[0]), "--preset", "tiny", "-o", str(tmp_path / "t.npz")])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "RuntimeError: something broke inside" in lines[0] and "SEMHITOK_DEBUG=1" in lines[0]
    monkeypatch.setenv("SEMHITOK_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["encode", str(images[0]), "--preset", "tiny", "-o", str(tmp_path / "t.npz")])


def test_cli_error_is_an_exception():
    assert str(CLIError("x")) == "x" and CLIError("x").exit_code == 2


# ---- real processes: python -m semhitok and the console script ------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def processes(tmp_path_factory):
    """Real-process checks, started when this module starts so that their start-up (each pays the
    import of torch and transformers) overlaps the in-process tests; the last tests collect them."""
    tmp = tmp_path_factory.mktemp("proc")
    photo = str(sorted(PHOTOS.glob("*.jpg"))[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SEMHITOK_DEBUG", None)
    script = Path(sys.executable).parent / "semhitok"
    commands = {
        # python -m semhitok: bad input -> exit 2, one line, nothing written
        "error": [sys.executable, "-m", "semhitok", "reconstruct", photo, str(tmp / "missing.png"), "--preset", "tiny", "-o", str(tmp / "recon")],
        # the console script from pyproject: a full run -> exit 0
        "script": ([str(script)] if script.exists() else [sys.executable, "-m", "semhitok"])
        + ["reconstruct", photo, "--preset", "tiny", "-o", str(tmp / "ok")],
    }
    running = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp) for k, c in commands.items()}
    results: dict[str, tuple[int, str, str]] = {}

    def result(key: str) -> tuple[int, str, str]:
        if key not in results:
            out, err = running[key].communicate(timeout=300)
            results[key] = (running[key].returncode, out, err)
        return results[key]

    yield tmp, result
    for proc in running.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_process_bad_input_exit_code(processes):
    tmp, result = processes
    code, out, err = result("error")
    assert code == 2
    assert_one_error_line(err, "missing.png", "no such file")
    assert out == ""
    assert not (tmp / "recon").exists()


def test_process_console_script_reconstruct(processes):
    tmp, result = processes
    code, out, err = result("script")
    assert code == 0, err
    assert "UNTRAINED" in out and "mean" in out
    assert (tmp / "ok" / "metrics.json").is_file()
    assert "Traceback" not in err


def test_preset_warning_only_when_the_command_succeeds(capsys, tmp_path, images):
    """A failed --preset run says one line, its error; the UNTRAINED warning comes with outputs only."""
    bad = _bad_image(tmp_path, "garbage")
    code, _, err = run_cli(capsys, "encode", images[0], bad, "--preset", "tiny", "-o", tmp_path / "t.npz", "--batch-size", "1")
    assert code == 2
    assert_one_error_line(err, "garbage.jpg")
    code, _, err = run_cli(capsys, "encode", images[0], "--preset", "tiny", "-o", tmp_path / "t.npz")
    assert code == 0
    assert err.startswith("semhitok: warning: --preset tiny builds an UNTRAINED model") and len(err.strip().splitlines()) == 1
