"""Fixtures for driving the command line as a user would, and for hostile file systems.

``cli(*args)`` runs ``semhitok.cli.main.main`` in-process and returns (exit code, stdout, stderr);
``error_line(err, *fragments)`` asserts the bad-input contract (exactly one stderr line,
``semhitok: error: ...``) and returns it. ``full_fs`` and ``readonly_fs`` are real file systems: a
few-KiB tmpfs and a read-only tmpfs, mounted when the tests run as root (skipped otherwise).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.cli.main import main

PHOTOS = Path(__file__).resolve().parents[2] / "src" / "semhitok" / "assets" / "photos"


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()  # drop what fixtures printed before
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def error_line() -> Callable[..., str]:
    def check(err: str, *fragments: str) -> str:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
        assert lines[0].startswith("semhitok: error: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
        return lines[0]

    return check


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A saved tiny model (seed 7), shared by the bad-input tests."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        folder = tmp_path_factory.mktemp("tiny_model") / "model"
        SemHiTok(SemHiTokConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def photo() -> Path:
    return PHOTOS / "astronaut.jpg"


def _mount(target: Path, options: str) -> bool:
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True)


@pytest.fixture
def full_fs(tmp_path) -> Iterator[Path]:
    """A folder on a real, full file system: a 64 KiB tmpfs filled up by a file beside it, so the
    first byte any output writes runs into ENOSPC."""
    target = tmp_path / "fs"
    if not _mount(target, "size=64k"):
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    try:
        (target / "work").mkdir()
        try:
            with open(target / "filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        yield target / "work"
    finally:
        _umount(target)


@pytest.fixture
def readonly_fs(tmp_path) -> Iterator[Path]:
    """A read-only folder: a read-only tmpfs as root (chmod does not stop root), else mode 0500."""
    target = tmp_path / "readonly"
    if _mount(target, "ro,size=64k"):
        try:
            yield target
        finally:
            _umount(target)
        return
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("no way to make a read-only folder here")
    target.mkdir()
    target.chmod(0o500)
    try:
        yield target
    finally:
        target.chmod(0o700)
