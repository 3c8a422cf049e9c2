"""Token shards: the corpus ``semhitok tokenize`` writes, and the reader an LLM's training uses.

Layout of ``TOKENS_DIR``::

    TOKENS_DIR/
      tokens-000000.tar      one webdataset shard per work unit (see semhitok.data.work_units)
      tokens-000001.tar
      ...
      manifest.json          written last: the folder is finished when it exists

Each shard is a plain (uncompressed, PAX) tar in the webdataset layout:

* ``__meta__/shard.json`` (first member): the shard's record -- ``format``, ``format_version``,
  ``shard`` (its index), ``fingerprint`` (the model's :meth:`SemHiTok.fingerprint`), ``unit``
  (the work unit it holds: kind, source, digest, planned image count), ``images`` (samples
  written), ``bad_images`` and ``bad_files`` (``[{"name", "reason"}]``, the images skipped).
  webdataset readers skip ``__meta__/`` members, so the shard stays a valid webdataset;
* then per sample, under a key unique within the shard:

  - ``KEY.ids.npy``: int32 (h, w) flat ids ``semantic * m + pixel``, exactly
    ``SemHiTok.encode(images).ids`` (little-endian ``.npy``, no pickle);
  - ``KEY.txt``: the caption (UTF-8), only when the source has one;
  - ``KEY.json``: ``{"source": folder or shard path, "member": the image's path in the folder or
    its sample key in the shard, "original_size": [height, width]}``.

Every header is fixed (mtime 0, mode 0644, owner 0, no user names), so the same images and model
give byte-identical shards, however the run was split or interrupted.

``manifest.json`` holds ``format``, ``format_version``, ``fingerprint``, ``grid`` ([h, w]),
``codebook_size`` (K), ``subcodebook_size`` (m), ``vocab_size`` (K*m), ``image_size``,
``resize`` (the fit policy), ``shard_size``, ``images``, ``bad_images``, ``bad_files``
(``[{"shard", "source", "name", "reason"}]``), ``sources`` (the inputs, absolute paths),
``shards`` (``[{"file", "images", "bad_images", "unit"}]``, in order), ``model`` (where the model
came from), ``semhitok_version`` and ``torch_version``.

Reading::

    from semhitok.data.token_shards import load_manifest, read_token_shards

    manifest = load_manifest("tokens/", expect_fingerprint=tok.fingerprint())
    for key, ids, caption, meta in read_token_shards("tokens/", expect_fingerprint=tok.fingerprint()):
        ...  # ids: np.int32 (h, w); caption: str or None; meta: the KEY.json dict

A training job that splits the corpus over ranks and workers reads
``manifest["shards"][i]["file"]`` with :func:`read_token_shard`, e.g. after
:func:`semhitok.data.sharding.worker_shard` on that list.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from semhitok.data.webdataset import MAX_MEMBER_BYTES, read_shard
from semhitok.image_io import check_regular_file

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IDS_DTYPE",
    "MANIFEST_NAME",
    "RECORD_MEMBER",
    "TokenSample",
    "load_manifest",
    "read_shard_record",
    "read_token_shard",
    "read_token_shards",
    "shard_index",
    "shard_name",
    "write_token_shard",
]

FORMAT_NAME = "semhitok-tokens"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
RECORD_MEMBER = "__meta__/shard.json"
IDS_DTYPE = np.dtype("<i4")  # int32: the paper's 196,608 ids fit, at half the bytes of int64
_SHARD_RE = re.compile(r"tokens-(\d{6,})\.tar")
_MANIFEST_KEYS = ("fingerprint", "grid", "codebook_size", "subcodebook_size", "vocab_size", "image_size", "shards")


class TokenSample(NamedTuple):
    """One tokenized image: ``key``, ``ids`` int32 (h, w), ``caption`` (str or None), ``meta`` (KEY.json)."""

    key: str
    ids: np.ndarray
    caption: str | None
    meta: dict[str, Any]


def shard_name(index: int) -> str:
    """``tokens-000007.tar`` for work unit 7."""
    return f"tokens-{index:06d}.tar"


def shard_index(name: str) -> int | None:
    """The work-unit index of a shard file name, or None when the name is not a token shard's."""
    match = _SHARD_RE.fullmatch(name)
    return None if match is None else int(match.group(1))


# ---- writing -----------------------------------------------------------------------------------
def write_token_shard(f: IO[bytes], record: dict[str, Any], samples: Iterable[TokenSample]) -> None:
    """Write one token shard to an open binary file: ``record`` first, then the samples in order.

    Keys must be unique within the shard and valid webdataset keys (no ``.`` in their last path
    part); ``ids`` must be integer (h, w) arrays in the int32 range.
    """
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_member(tar, RECORD_MEMBER, _json_bytes(record))
        seen: set[str] = set()
        for sample in samples:
            key = sample.key
            if key in seen or "." in key.rsplit("/", 1)[-1] or not key or key.startswith("__"):
                raise ValueError(f"sample key {key!r} is repeated or not a valid webdataset key")
            seen.add(key)
            _add_member(tar, f"{key}.ids.npy", _npy_bytes(sample.ids))
            if sample.caption is not None:
                _add_member(tar, f"{key}.txt", sample.caption.encode("utf-8"))
            _add_member(tar, f"{key}.json", _json_bytes(sample.meta))


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed metadata: the bytes of a shard depend on its contents only, not on when or by whom.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _npy_bytes(ids: np.ndarray) -> bytes:
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be an integer (h, w) array, got {ids.dtype} {ids.shape}")
    if ids.size and (int(ids.min()) < np.iinfo(IDS_DTYPE).min or int(ids.max()) > np.iinfo(IDS_DTYPE).max):
        raise ValueError("ids do not fit int32")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(ids, dtype=IDS_DTYPE), allow_pickle=False)
    return buf.getvalue()


# ---- reading -----------------------------------------------------------------------------------
def load_manifest(tokens_dir: str | Path, expect_fingerprint: str | None = None) -> dict[str, Any]:
    """The checked ``manifest.json`` of a finished token folder (see the module doc for its keys).

    Args:
        expect_fingerprint: the fingerprint of the model the caller will use the tokens with
            (``SemHiTok.fingerprint()``); a manifest of another model is refused.

    Raises:
        FileNotFoundError: no such folder, or no manifest (the run did not finish).
        ValueError: a damaged or foreign manifest, a newer format, or another model's tokens.
    """
    folder = Path(tokens_dir)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such token folder")
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {MANIFEST_NAME}: not a finished token folder (run 'semhitok tokenize' to its end; "
            "the same command resumes an interrupted run)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is damaged: {' '.join(str(exc).split())}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a semhitok token manifest (written by 'semhitok tokenize')")
    _check_version(str(path), manifest)
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing)}")
    if expect_fingerprint is not None and manifest["fingerprint"] != expect_fingerprint:
        raise ValueError(
            f"{folder} holds tokens of model {manifest['fingerprint']}, not of model {expect_fingerprint}: "
            "ids of another codebook mean other things; tokenize the data with this model"
        )
    return manifest


def read_token_shards(tokens_dir: str | Path, expect_fingerprint: str | None = None) -> Iterator[TokenSample]:
    """Every sample of a finished token folder, shard by shard in manifest order.

    Each shard's record is checked against the manifest's fingerprint and each ``ids`` against its
    grid. Raises as :func:`load_manifest`, and ValueError for a damaged shard.
    """
    folder = Path(tokens_dir)
    manifest = load_manifest(folder, expect_fingerprint)
    grid = (int(manifest["grid"][0]), int(manifest["grid"][1]))
    for shard in manifest["shards"]:
        yield from read_token_shard(folder / shard["file"], expect_fingerprint=manifest["fingerprint"], grid=grid)


def read_token_shard(path: str | Path, expect_fingerprint: str | None = None, grid: tuple[int, int] | None = None) -> Iterator[TokenSample]:
    """The samples of one token shard, in order; ``ids`` int32 (h, w).

    Args:
        expect_fingerprint: refuse (ValueError) a shard whose record names another model.
        grid: refuse ids of another (h, w).
    """
    record = read_shard_record(path)
    if expect_fingerprint is not None and record["fingerprint"] != expect_fingerprint:
        raise ValueError(f"{path} holds tokens of model {record['fingerprint']}, not of model {expect_fingerprint}")

    def damaged(exc: Exception) -> None:
        raise ValueError(f"token shard {path} is damaged: {' '.join(str(exc).split()) or type(exc).__name__}") from exc

    for raw in read_shard(path, damaged):
        key = str(raw["__key__"])
        name = f"{path}:{key}"
        ids = _read_ids(name, raw.get("ids.npy"))
        if grid is not None and ids.shape != grid:
            raise ValueError(f"{name}: ids of shape {ids.shape}, but the tokens are on a {grid[0]}x{grid[1]} grid")
        caption = _member_bytes(name, raw["txt"]).decode("utf-8", errors="replace") if "txt" in raw else None
        meta = json.loads(_member_bytes(name, raw["json"]).decode("utf-8")) if "json" in raw else {}
        yield TokenSample(key, ids, caption, meta)


def read_shard_record(path: str | Path) -> dict[str, Any]:
    """The ``__meta__/shard.json`` record of a token shard (its first member), checked for format.

    Raises:
        FileNotFoundError: no such file. ValueError: not a token shard, damaged, or a newer format.
    """
    check_regular_file(path)
    try:
        with tarfile.open(path, mode="r:") as tar:
            first = tar.next()
            if first is None or first.name != RECORD_MEMBER or not first.isreg() or first.size > MAX_MEMBER_BYTES:
                raise ValueError(f"{path} is not a token shard written by 'semhitok tokenize' (no {RECORD_MEMBER} first)")
            handle = tar.extractfile(first)
            record = json.loads(handle.read().decode("utf-8")) if handle is not None else None
    except (tarfile.TarError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a token shard written by 'semhitok tokenize' (unreadable: {' '.join(str(exc).split())})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME or not isinstance(record.get("fingerprint"), str):
        raise ValueError(f"{path} is not a token shard written by 'semhitok tokenize' (its {RECORD_MEMBER} is foreign)")
    _check_version(str(path), record)
    return record


def _check_version(name: str, value: dict[str, Any]) -> None:
    version = value.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{name} has token format version {version!r}; this semhitok reads up to {FORMAT_VERSION} (update semhitok)")


def _member_bytes(name: str, data: object) -> bytes:
    if not isinstance(data, bytes):  # read_shard's stand-in for a member too large to read
        raise ValueError(f"{name}: a member larger than {MAX_MEMBER_BYTES} bytes; not read")
    return data


def _read_ids(name: str, data: object) -> np.ndarray:
    """An int32 (h, w) array from ``.npy`` bytes, its header checked before any allocation (numpy
    would allocate whatever shape a damaged header declares)."""
    from numpy.lib import format as npy

    if data is None:
        raise ValueError(f"{name} has no ids.npy member")
    raw = _member_bytes(name, data)
    stream = io.BytesIO(raw)
    try:
        version = npy.read_magic(stream)
        if version not in ((1, 0), (2, 0)):  # np.save writes 1.0 for these arrays
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = npy.read_array_header_1_0(stream) if version == (1, 0) else npy.read_array_header_2_0(stream)
    except ValueError as exc:
        raise ValueError(f"{name}: ids.npy is damaged ({' '.join(str(exc).split())})") from exc
    if dtype != IDS_DTYPE or len(shape) != 2 or fortran:
        raise ValueError(f"{name}: ids.npy must hold int32 (h, w) ids, got {dtype} {shape}")
    offset = stream.tell()
    if offset + int(np.prod(shape, dtype=object)) * dtype.itemsize != len(raw):
        raise ValueError(f"{name}: ids.npy is damaged (its size does not match its shape {shape})")
    return np.frombuffer(raw, dtype=IDS_DTYPE, offset=offset).reshape(shape).copy()
