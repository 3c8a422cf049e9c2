"""Hostile token files given to `decode`: refused before allocating or blocking, one line, exit 2.

A few hundred bytes of .npz can declare an array of terabytes (numpy allocates the declared shape
before reading); a FIFO blocks a reader forever. Both are refused from the file's headers.
"""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy

from semhitok.cli.tokenfile import FORMAT_VERSION, MAX_ARRAY_BYTES


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _header_only(shape: tuple[int, ...], dtype: str = "<i8", payload: bytes = b"") -> bytes:
    """An .npy member declaring ``shape`` but holding only ``payload``."""
    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def _token_zip(path: Path, ids_member: bytes, grid: int = 4) -> Path:
    members = {
        "grid": np.array([grid, grid]), "codebook_size": np.array(256), "subcodebook_size": np.array(4),
        "fingerprint": np.array("0" * 16), "format_version": np.array(FORMAT_VERSION),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ids.npy", ids_member)
        for key, value in members.items():
            archive.writestr(f"{key}.npy", _npy(value))
    return path


def make(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.npz"
    if kind == "huge_shape":  # 19 GiB declared in about a kilobyte
        return _token_zip(path, _header_only((10_000_000, 16, 16)))
    if kind == "terabytes":
        return _token_zip(path, _header_only((2**40, 4, 4)))
    if kind == "short_data":  # a shape under the limit that the member does not hold
        return _token_zip(path, _header_only((1000, 4, 4), payload=b"\0" * 64))
    if kind == "object_array":
        return _token_zip(path, _header_only((2,), dtype="|O", payload=b"\x80\x04N."))
    if kind == "fifo":
        os.mkfifo(path)
        return path
    if kind == "device":
        return Path("/dev/zero")
    raise AssertionError(kind)


CASES = [
    ("huge_shape", ["declares shape (10000000, 16, 16)", "refused before reading"]),
    ("terabytes", ["declares shape", "GiB"]),
    ("short_data", ["damaged", "declares shape (1000, 4, 4)"]),
    ("object_array", ["damaged", "Python objects"]),
    ("fifo", ["not a regular file"]),
    ("device", ["not a regular file"]),
]


@pytest.mark.parametrize("kind, fragments", CASES, ids=[c[0] for c in CASES])
def test_decode_refuses_hostile_token_file(cli, error_line, tmp_path, tiny_model, kind, fragments):
    if kind == "device" and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    path = make(tmp_path, kind)
    out = tmp_path / "decoded"
    code, stdout, err = cli("decode", path, "--model", tiny_model, "-o", out)
    assert code == 2
    line = error_line(err, *fragments)
    assert str(path) in line
    assert stdout == "" and not out.exists()


def test_limit_admits_real_sizes():
    """The limit is far above a real token file: 100,000 images of 16x16 int64 ids is 205 MB."""
    assert 100_000 * 16 * 16 * 8 < MAX_ARRAY_BYTES


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and FIFOs as on Linux")
def test_console_script_huge_and_fifo_token_files(tmp_path, tiny_model):
    """As a user runs it: the console script, with its address space capped well below what the
    declared shape would need (so allocating it would fail loudly), and a FIFO nobody writes to
    (so blocking on it would time out)."""
    script = Path(sys.executable).parent / "semhitok"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "semhitok"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SEMHITOK_DEBUG", None)
    for kind in ("huge_shape", "fifo"):
        path = make(tmp_path, kind)
        limit = 8 * 2**30  # torch needs a few GB of address space to start; 19 GiB would not fit

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        done = subprocess.run([*command, "decode", str(path), "--model", str(tiny_model), "-o", str(tmp_path / "out")],
                              capture_output=True, text=True, env=env, timeout=120, preexec_fn=cap)
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("semhitok: error: ") and str(path) in lines[0], done.stderr
        assert not (tmp_path / "out").exists()
