"""The token file ``semhitok encode`` writes and ``semhitok decode`` reads (an .npz, no pickle).

Keys: ``ids`` (int64 (N, h, w), flat ids ``k*m + j``), ``semantic_ids``, ``pixel_ids``, ``grid``
([h, w]), ``codebook_size`` (K), ``subcodebook_size`` (m), ``fingerprint`` (the model's
``SemHiTok.fingerprint()``: equal fingerprints mean interchangeable tokens), ``files`` (the input
paths as given) and ``format_version``.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from ..file_kind import FOLDER, MISSING, REGULAR, file_kind
from .errors import CLIError, one_line, os_reason

if TYPE_CHECKING:
    from ..modeling import SemHiTok

FORMAT_VERSION = 1
REQUIRED_KEYS = ("ids", "grid", "codebook_size", "subcodebook_size", "fingerprint", "format_version")
_KNOWN_KEYS = (*REQUIRED_KEYS, "files", "semantic_ids", "pixel_ids")
# Largest array a token file may hold: 2**31 bytes is 1M images of 16x16 int64 ids, with room.
MAX_ARRAY_BYTES = 2**31


@dataclass
class TokenFile:
    """The contents of a token file, checked for structure (not yet against a model)."""

    ids: np.ndarray  # int64 (N, h, w)
    grid: tuple[int, int]
    codebook_size: int
    subcodebook_size: int
    fingerprint: str
    format_version: int
    files: list[str] | None = None
    semantic_ids: np.ndarray | None = None
    pixel_ids: np.ndarray | None = None


def write_tokens(f: IO[bytes], tokens: TokenFile) -> None:
    """Write ``tokens`` as a compressed .npz to an open binary file."""
    arrays: dict[str, np.ndarray] = {
        "ids": np.asarray(tokens.ids, dtype=np.int64),
        "grid": np.asarray(tokens.grid, dtype=np.int64),
        "codebook_size": np.asarray(tokens.codebook_size, dtype=np.int64),
        "subcodebook_size": np.asarray(tokens.subcodebook_size, dtype=np.int64),
        "fingerprint": np.asarray(str(tokens.fingerprint)),
        "format_version": np.asarray(tokens.format_version, dtype=np.int64),
    }
    if tokens.semantic_ids is not None:
        arrays["semantic_ids"] = np.asarray(tokens.semantic_ids, dtype=np.int64)
    if tokens.pixel_ids is not None:
        arrays["pixel_ids"] = np.asarray(tokens.pixel_ids, dtype=np.int64)
    if tokens.files is not None:
        arrays["files"] = np.asarray([str(p) for p in tokens.files], dtype=np.str_)
    np.savez_compressed(f, **arrays)


def read_tokens(path: str | Path) -> TokenFile:
    """Read and structurally check a token file; any problem is a one-line CLIError naming it."""
    name = str(path)
    p = Path(path)
    try:
        kind = file_kind(p)
    except OSError as exc:
        raise CLIError(f"cannot read {name}: {os_reason(exc)}") from exc
    if kind == MISSING:
        raise CLIError(f"{name}: no such file")
    if kind == FOLDER:
        raise CLIError(f"{name} is a directory, not a token file (.npz from 'semhitok encode')")
    if kind != REGULAR:  # a FIFO or a device would block the read, or never end
        raise CLIError(f"{name} is not a regular file (a pipe or a device?); give a token file (.npz from 'semhitok encode')")
    not_tokens = f"{name} is not a semhitok token file (an .npz written by 'semhitok encode')"
    if zipfile.is_zipfile(p):
        _check_array_headers(name, p)
    try:
        data = np.load(p, allow_pickle=False)
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise CLIError(f"cannot read {name}: {os_reason(exc)}") from exc
        raise CLIError(f"{not_tokens}: {one_line(exc)}") from exc
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CLIError(f"{not_tokens}: {'it is not an .npz archive' if 'pickle' in str(exc) else one_line(exc)}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CLIError(f"{not_tokens}: it holds a single .npy array, not an .npz archive")
    with data:
        missing = [k for k in REQUIRED_KEYS if k not in data.files]
        if missing:
            raise CLIError(f"{name} lacks the key(s) {', '.join(missing)}: is it a token file written by 'semhitok encode'?")
        try:
            arrays = {k: data[k] for k in data.files if k in _KNOWN_KEYS}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise CLIError(f"{name} is damaged: {one_line(exc)}") from exc
    return _check_structure(name, arrays)


def _check_array_headers(name: str, p: Path) -> None:
    """Read each array's .npy header (shape and dtype) before any array: numpy allocates the
    declared shape up front, so a few hundred bytes declaring a huge shape would ask for terabytes.

    Refused: object (pickle) arrays, arrays over ``MAX_ARRAY_BYTES``, and arrays whose declared
    size does not fit the archive member that holds them (a damaged or forged header).
    """
    try:
        with zipfile.ZipFile(p) as archive:
            for info in archive.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key not in _KNOWN_KEYS:
                    continue  # never read
                with archive.open(info) as f:
                    shape, dtype, header_end = _npy_header(f)
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if dtype.hasobject:
                    raise CLIError(f"{name} is damaged: {key} holds Python objects (pickle), which are never loaded")
                if nbytes > MAX_ARRAY_BYTES:
                    raise CLIError(f"{name}: {key} declares shape {tuple(shape)} ({nbytes / 2**30:.3g} GiB), more than a token file may hold ({MAX_ARRAY_BYTES / 2**30:.0f} GiB); refused before reading")
                if header_end + nbytes > info.file_size:
                    raise CLIError(f"{name} is damaged: {key} declares shape {tuple(shape)} ({nbytes} bytes) but holds {max(0, info.file_size - header_end)} bytes")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise CLIError(f"{name} is damaged: {one_line(exc)}") from exc


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length in bytes) of one .npy stream, reading only its header."""
    from numpy.lib import format as npy

    version = npy.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(f)
    else:  # 3.0 (utf-8 field names) has no public reader; token files never need it
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(n) for n in shape), dtype, f.tell()


def _check_structure(name: str, a: dict[str, np.ndarray]) -> TokenFile:
    version = _int_scalar(name, a, "format_version")
    if version > FORMAT_VERSION:
        raise CLIError(f"{name} has token format {version}, newer than this semhitok reads ({FORMAT_VERSION}); update semhitok")
    ids = a["ids"]
    if not np.issubdtype(ids.dtype, np.integer):
        raise CLIError(f"{name}: ids must be integers, got {ids.dtype}")
    if ids.ndim != 3:
        raise CLIError(f"{name}: ids must have shape (N, h, w), got {ids.shape}")
    if ids.shape[0] == 0:
        raise CLIError(f"{name} holds no images (ids has shape {ids.shape})")
    grid = a["grid"]
    if grid.shape != (2,) or not np.issubdtype(grid.dtype, np.integer):
        raise CLIError(f"{name}: grid must be two integers [h, w], got {grid.tolist()!r}")
    grid_hw = (int(grid[0]), int(grid[1]))
    if grid_hw != tuple(ids.shape[1:]):
        raise CLIError(f"{name}: grid {list(grid_hw)} does not match ids of shape {ids.shape}")
    fingerprint = a["fingerprint"]
    if fingerprint.ndim != 0 or fingerprint.dtype.kind not in "US":
        raise CLIError(f"{name}: fingerprint must be a string")
    files = None
    if "files" in a:
        f = a["files"]
        if f.ndim != 1 or f.dtype.kind not in "US" or len(f) != ids.shape[0]:
            raise CLIError(f"{name}: files must list one path per image ({ids.shape[0]}), got shape {f.shape}")
        files = [str(x) for x in f.tolist()]
    extra = {}
    for key in ("semantic_ids", "pixel_ids"):
        if key in a:
            if a[key].shape != ids.shape or not np.issubdtype(a[key].dtype, np.integer):
                raise CLIError(f"{name}: {key} must be integers of the same shape as ids {ids.shape}, got {a[key].dtype} {a[key].shape}")
            extra[key] = a[key].astype(np.int64)
    return TokenFile(
        ids=ids.astype(np.int64),
        grid=grid_hw,
        codebook_size=_int_scalar(name, a, "codebook_size"),
        subcodebook_size=_int_scalar(name, a, "subcodebook_size"),
        fingerprint=str(fingerprint[()]),
        format_version=version,
        files=files,
        **extra,
    )


def _int_scalar(name: str, a: dict[str, np.ndarray], key: str) -> int:
    v = a[key]
    if v.ndim != 0 or not np.issubdtype(v.dtype, np.integer):
        raise CLIError(f"{name}: {key} must be one integer, got {v.dtype} of shape {v.shape}")
    return int(v)


def check_against_model(name: str, tokens: TokenFile, model: SemHiTok, force: bool = False) -> bool:
    """Raise CLIError unless ``model`` can decode ``tokens``; returns whether the fingerprints match.

    A different grid or vocabulary, or ids out of range, always refuse; a different fingerprint (a
    model with other codebooks) refuses unless ``force``.
    """
    import torch

    g = model.grid_size
    if tokens.grid != (g, g):
        raise CLIError(f"{name} holds {tokens.grid[0]}x{tokens.grid[1]} token grids, but this model uses {g}x{g} (it was made by model {tokens.fingerprint}, this model is {model.fingerprint()})")
    if (tokens.codebook_size, tokens.subcodebook_size) != (model.codebook_size, model.subcodebook_size):
        raise CLIError(
            f"{name} was made with K={tokens.codebook_size} semantic codes x m={tokens.subcodebook_size} sub-codes, "
            f"this model has K={model.codebook_size} x m={model.subcodebook_size}"
        )
    try:
        model.check_ids(torch.from_numpy(tokens.ids))
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{name}: {one_line(exc)}") from exc
    fp = model.fingerprint()
    if tokens.fingerprint != fp:
        if not force:
            raise CLIError(f"{name} was made by model {tokens.fingerprint}, this model is {fp} (pass --force to decode anyway)")
        return False
    return True
