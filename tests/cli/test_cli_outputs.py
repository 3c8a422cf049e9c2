"""Outputs that cannot be written: exit 2 naming the path, nothing partial left; outputs follow the
umask; no output may overwrite an input.

"No space left" is tested two ways: on a real full file system (an 8 KiB tmpfs, when the tests run
as root) and, everywhere, by making the writer fail with ENOSPC after it wrote part of its file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semhitok import SemHiTok
from semhitok.atomic import AtomicDir, AtomicFile, OutputError

PHOTOS = Path(__file__).resolve().parents[2] / "src" / "semhitok" / "assets" / "photos"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
FOLDER_COMMANDS = ("decode", "reconstruct", "visualize", "eval", "export")
ALL_COMMANDS = ("encode", *FOLDER_COMMANDS)


def tree(folder: Path) -> list[str]:
    """Every path under ``folder``, hidden temporary files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, tiny_model) -> Path:
    from semhitok.cli.main import main

    path = tmp_path_factory.mktemp("tokens") / "t.npz"
    assert main(["encode", str(PHOTOS / "astronaut.jpg"), str(PHOTOS / "coffee.jpg"), "--model", str(tiny_model), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A one-step stage-1 run folder, for `export`."""
    from semhitok.cli.main import main

    run = tmp_path_factory.mktemp("run") / "s1"
    assert main(["train", str(CONFIGS / "stage1_semantic.yaml"), "--data", str(PHOTOS), "--out", str(run), "--max-steps", "1", "--quiet"]) == 0
    return run


def command_line(command: str, out: Path, model: Path, tokens: Path | None = None, run: Path | None = None, cache: Path | None = None) -> list[object]:
    """The command writing to ``out``, with inputs that are fine."""
    if command == "encode":
        return ["encode", PHOTOS / "astronaut.jpg", "--model", model, "-o", out]
    if command == "decode":
        return ["decode", tokens, "--model", model, "-o", out]
    if command == "reconstruct":
        return ["reconstruct", PHOTOS / "astronaut.jpg", "--model", model, "-o", out]
    if command == "visualize":
        return ["visualize", "--model", model, "--data", PHOTOS, "-o", out, "--max-images", "2"]
    if command == "eval":
        return ["eval", "--model", model, "--data", PHOTOS, "-o", out, "--max-images", "2", "--cache-dir", cache]
    return ["export", run, "-o", out]


@pytest.fixture
def args_for(request, tiny_model, tmp_path_factory):
    """(command, out) -> the argument list; builds the token file or the run folder only when needed.
    eval's reference cache lives elsewhere: these tests are about the report folder."""

    def make(command: str, out: Path) -> list[object]:
        tokens = request.getfixturevalue("tokens") if command == "decode" else None
        run = request.getfixturevalue("run_dir") if command == "export" else None
        return command_line(command, out, tiny_model, tokens, run, tmp_path_factory.mktemp("cache"))

    return make


# ---- unwritable destinations -------------------------------------------------------------------
@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_parent_is_a_file(cli, error_line, tmp_path, args_for, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "deeper" / ("t.npz" if command == "encode" else "out")
    code, stdout, err = cli(*args_for(command, out))
    assert code == 2
    error_line(err, str(out), "is a file, not a folder")
    assert stdout == "" and tree(tmp_path) == ["a_file"]


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_existing_file_where_a_folder_is_needed(cli, error_line, tmp_path, args_for, command):
    out = tmp_path / "out"
    out.write_text("mine")
    code, _, err = cli(*args_for(command, out))
    assert code == 2
    error_line(err, str(out), "exists and is a file")
    assert out.read_text() == "mine" and tree(tmp_path) == ["out"]


def test_existing_folder_where_a_file_is_needed(cli, error_line, tmp_path, args_for):
    (tmp_path / "out").mkdir()
    code, _, err = cli(*args_for("encode", tmp_path / "out"))
    assert code == 2
    error_line(err, "is a folder")
    assert tree(tmp_path) == ["out"]


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_read_only_destination(cli, error_line, readonly_fs, args_for, command):
    out = readonly_fs / ("t.npz" if command == "encode" else "out")
    code, stdout, err = cli(*args_for(command, out))
    assert code == 2
    line = error_line(err, str(out))
    assert "read-only file system" in line or "permission denied" in line
    assert stdout == "" and tree(readonly_fs) == []


# ---- no space left -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_full_disk_real(cli, error_line, full_fs, args_for, command):
    out = full_fs / ("t.npz" if command == "encode" else "out")
    code, stdout, err = cli(*args_for(command, out))
    assert code == 2, err
    error_line(err, str(out), "no space left on device")
    assert stdout == ""
    assert tree(full_fs) == []  # no partial file, no temporary file, no empty folder


def _fail_after_partial_write(path: Path) -> None:
    with open(path, "wb") as f:
        f.write(b"partial")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_full_disk_simulated(cli, error_line, tmp_path, args_for, monkeypatch, command):
    """Everywhere (no root needed): the writer of the command's main file fails with ENOSPC."""
    import safetensors.torch

    import semhitok.cli.tokenfile
    import semhitok.evaluation.html
    import semhitok.image_io

    argv = args_for(command, tmp_path / "out" / ("t.npz" if command == "encode" else "res"))
    if command == "encode":
        monkeypatch.setattr(semhitok.cli.tokenfile, "write_tokens", lambda f, tokens: (f.write(b"partial"), _fail_after_partial_write(Path(f.name))))
    elif command in ("decode", "reconstruct"):
        monkeypatch.setattr(semhitok.image_io, "save_image", lambda image, path: _fail_after_partial_write(Path(path)))
    elif command in ("visualize", "eval"):
        monkeypatch.setattr(semhitok.evaluation.html.HtmlPage, "write", lambda self, path: _fail_after_partial_write(Path(path)))
    else:
        def save_file(state, path, metadata=None):
            _fail_after_partial_write(Path(path))

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
        monkeypatch.setattr("semhitok.modeling.tokenizer.save_file", save_file)
    code, stdout, err = cli(*argv)
    assert code == 2, err
    error_line(err, "no space left on device", str(tmp_path / "out"))
    assert stdout == ""
    assert not (tmp_path / "out").exists()


def test_full_disk_into_existing_folder_keeps_its_files(cli, error_line, tmp_path, args_for, monkeypatch):
    import semhitok.image_io

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    monkeypatch.setattr(semhitok.image_io, "save_image", lambda image, path: _fail_after_partial_write(Path(path)))
    code, _, err = cli(*args_for("reconstruct", out))
    assert code == 2
    error_line(err, "no space left on device")
    assert tree(out) == ["keep.txt"]


def test_save_pretrained_on_full_disk_leaves_no_folder(full_fs, tiny_model):
    model = SemHiTok.from_pretrained(tiny_model)
    with pytest.raises(OutputError, match="no space left on device"):
        model.save_pretrained(full_fs / "model")
    assert tree(full_fs) == []


# ---- permissions follow the umask ------------------------------------------------------------------------
@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_pretrained_follows_umask(tmp_path, tiny_model, umask_027):
    """Before: model.safetensors 0600 and the folder 0700 whatever the umask."""
    SemHiTok.from_pretrained(tiny_model).save_pretrained(tmp_path / "a" / "model")
    assert _mode(tmp_path / "a") == 0o750 and _mode(tmp_path / "a" / "model") == 0o750
    assert _mode(tmp_path / "a" / "model" / "model.safetensors") == 0o640
    assert _mode(tmp_path / "a" / "model" / "config.json") == 0o640
    assert SemHiTok.from_pretrained(tmp_path / "a" / "model").fingerprint() == SemHiTok.from_pretrained(tiny_model).fingerprint()


@pytest.mark.parametrize("command", ["encode", "reconstruct", "export"])
def test_command_outputs_follow_umask(cli, tmp_path, args_for, umask_027, command):
    out = tmp_path / "out" / ("t.npz" if command == "encode" else "res")
    code, _, err = cli(*args_for(command, out))
    assert code == 0, err
    files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
    assert files and all(_mode(p) == 0o640 for p in files), {str(p): oct(_mode(p)) for p in files}
    folders = [out] if out.is_dir() else []
    assert all(_mode(d) == 0o750 for d in [tmp_path / "out", *folders])


# ---- an output that is an input --------------------------------------------------------------------------
def _photo_copy(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("how", ["same", "dotdot", "symlink", "hardlink"])
def test_encode_refuses_to_overwrite_its_input(cli, error_line, tmp_path, tiny_model, how):
    image = _photo_copy(tmp_path)
    before = image.read_bytes()
    out = {"same": image, "dotdot": tmp_path / "sub" / ".." / "x.png", "symlink": tmp_path / "link.png", "hardlink": tmp_path / "hard.png"}[how]
    if how == "symlink":
        out.symlink_to(image)
    elif how == "hardlink":
        os.link(image, out)
    listing = tree(tmp_path)
    code, stdout, err = cli("encode", image, "--model", tiny_model, "-o", out)
    assert code == 2
    error_line(err, "is also an input")
    assert image.read_bytes() == before and tree(tmp_path) == listing and stdout == ""


def test_decode_refuses_to_overwrite_an_original(cli, error_line, tmp_path, tiny_model):
    """Decoded images are named after the encoded files: decoding into the photos' folder must not
    replace the photos."""
    image = _photo_copy(tmp_path)
    before = image.read_bytes()
    tokens = tmp_path / "t.npz"
    code, _, err = cli("encode", image, "--model", tiny_model, "-o", tokens)
    assert code == 0, err
    code, _, err = cli("decode", tokens, "--model", tiny_model, "-o", tmp_path)
    assert code == 2
    error_line(err, "is also an input")
    assert image.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.npz", "x.png"]


# ---- the helpers themselves ----------------------------------------------------------------------------------
def test_atomic_file_and_dir(tmp_path):
    with AtomicFile(tmp_path / "a" / "f.txt") as out:
        with out.open("w") as f:
            f.write("hello")
        assert not (tmp_path / "a" / "f.txt").exists()  # invisible until committed
        out.commit()
    assert (tmp_path / "a" / "f.txt").read_text() == "hello"
    with AtomicDir(tmp_path / "d") as out:
        out.write_text("one.txt", "1")
    assert tree(tmp_path) == ["a", "a/f.txt"]  # not committed: nothing left
    with pytest.raises(KeyboardInterrupt), AtomicDir(tmp_path / "e") as out:
        out.write_text("one.txt", "1")
        raise KeyboardInterrupt
    assert tree(tmp_path) == ["a", "a/f.txt"]


def test_failed_write_removes_temporary_folder_and_parents(tmp_path):
    """A write error inside the block: the temporary folder and the parents made for it go."""
    with pytest.raises(OutputError, match=r"cannot write .*deep.*: no space left on device"), AtomicDir(tmp_path / "new" / "deep") as out:
        with out.writing("f.bin") as path:
            _fail_after_partial_write(path)
    assert tree(tmp_path) == []
