"""Token shards (semhitok.data.token_shards) and tokenize's work units (semhitok.data.work_units):
the shard format round trip, byte-stable writing, webdataset interop, the manifest's fingerprint
check, damaged shards refused; deterministic units, keys, decoded batches with bad images listed."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semhitok.data.token_shards import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    RECORD_MEMBER,
    TokenSample,
    load_manifest,
    read_shard_record,
    read_token_shard,
    read_token_shards,
    shard_index,
    shard_name,
    write_token_shard,
)
from semhitok.data.work_units import FOLDER, TAR, UnitBatches, plan_work_units, sample_key
from semhitok.image_io import decode_image
from semhitok.modeling import fit_to_size

FP = "0123456789abcdef"


def _record(index: int = 0, fingerprint: str = FP) -> dict:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "shard": index, "fingerprint": fingerprint,
            "unit": {"kind": "folder", "source": "/x", "digest": "d", "planned": 3}, "images": 3, "bad_images": 0, "bad_files": []}


def _samples() -> list[TokenSample]:
    rng = np.random.default_rng(0)
    return [
        TokenSample("a", rng.integers(0, 1024, (4, 4)).astype(np.int32), "a red dress", {"source": "/x", "member": "a.png", "original_size": [64, 64]}),
        TokenSample("dir/b", rng.integers(0, 1024, (4, 4)), None, {"source": "/x", "member": "dir/b.jpg", "original_size": [80, 100]}),
        TokenSample("c", rng.integers(0, 1024, (4, 4)).astype(np.int32), "ünïcode", {}),
    ]


def _write(path: Path, samples: list[TokenSample], record: dict | None = None) -> None:
    with open(path, "wb") as f:
        write_token_shard(f, record or _record(), samples)


def _manifest(folder: Path, files: list[str], fingerprint: str = FP) -> None:
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "fingerprint": fingerprint, "grid": [4, 4], "codebook_size": 256,
                "subcodebook_size": 4, "vocab_size": 1024, "image_size": 64, "shards": [{"file": f} for f in files]}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(h: int, w: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---- the shard format ----------------------------------------------------------------------------
def test_shard_round_trip_is_exact_and_byte_stable(tmp_path):
    samples = _samples()
    _write(tmp_path / "a.tar", samples)
    _write(tmp_path / "b.tar", samples)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()  # fixed headers: no mtimes, owners
    back = list(read_token_shard(tmp_path / "a.tar", expect_fingerprint=FP, grid=(4, 4)))
    assert [s.key for s in back] == ["a", "dir/b", "c"]
    for got, want in zip(back, samples):
        assert got.ids.dtype == np.int32 and np.array_equal(got.ids, want.ids)
        assert got.caption == want.caption and got.meta == want.meta
    assert read_shard_record(tmp_path / "a.tar") == _record()
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = tar.getnames()
    assert names[0] == RECORD_MEMBER and "a.ids.npy" in names and "dir/b.txt" not in names  # no caption, no .txt


def test_shard_is_a_valid_webdataset(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    _write(tmp_path / "tokens-000000.tar", _samples())
    read = list(webdataset.WebDataset(str(tmp_path / "tokens-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in read] == ["a", "dir/b", "c"]  # the __meta__ record is skipped
    assert np.array_equal(np.load(io.BytesIO(read[0]["ids.npy"])), _samples()[0].ids)


def test_shard_names():
    assert shard_name(7) == "tokens-000007.tar" and shard_index("tokens-000007.tar") == 7
    assert shard_index("tokens-1234567.tar") == 1234567
    assert shard_index("tokens-7.tar") is None and shard_index(".tokens-000007.tar.0a1b2c3d.tmp") is None


def test_writer_refuses_bad_keys_and_ids(tmp_path):
    ids = np.zeros((4, 4), np.int32)
    for key in ("a.b", "__meta__", ""):
        with pytest.raises(ValueError, match="key"):
            _write(tmp_path / "x.tar", [TokenSample(key, ids, None, {})])
    with pytest.raises(ValueError, match="key"):
        _write(tmp_path / "x.tar", [TokenSample("a", ids, None, {}), TokenSample("a", ids, None, {})])
    with pytest.raises(ValueError, match="int32"):
        _write(tmp_path / "x.tar", [TokenSample("a", np.full((4, 4), 2**40), None, {})])
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        _write(tmp_path / "x.tar", [TokenSample("a", np.zeros(16, np.int32), None, {})])


def test_manifest_fingerprint_is_checked(tmp_path):
    _write(tmp_path / "tokens-000000.tar", _samples())
    _manifest(tmp_path, ["tokens-000000.tar"])
    assert load_manifest(tmp_path, expect_fingerprint=FP)["grid"] == [4, 4]
    assert [s.key for s in read_token_shards(tmp_path, expect_fingerprint=FP)] == ["a", "dir/b", "c"]
    with pytest.raises(ValueError, match=f"holds tokens of model {FP}, not of model ffff"):
        load_manifest(tmp_path, expect_fingerprint="ffff")
    with pytest.raises(ValueError, match="holds tokens of model"):
        next(read_token_shards(tmp_path, expect_fingerprint="ffff"))
    # a shard of another model inside the folder: refused against the manifest's fingerprint
    _write(tmp_path / "tokens-000000.tar", _samples(), _record(fingerprint="eeee"))
    with pytest.raises(ValueError, match="tokens-000000.tar holds tokens of model eeee"):
        list(read_token_shards(tmp_path))


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such token folder"):
        load_manifest(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no manifest.json: not a finished token folder"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a semhitok token manifest"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="update semhitok"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION}))
    with pytest.raises(ValueError, match="lacks fingerprint"):
        load_manifest(tmp_path)


def test_damaged_shards_are_refused(tmp_path):
    def shard(name: str, members: list[tuple[str, bytes]]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w") as tar:
            for member, data in members:
                _add(tar, member, data)
        return path

    record = (RECORD_MEMBER, json.dumps(_record()).encode())
    with pytest.raises(ValueError, match="not a token shard"):
        read_shard_record(shard("norecord.tar", [("a.ids.npy", b"x")]))
    with pytest.raises(ValueError, match="not a token shard .*unreadable"):
        (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
        read_shard_record(tmp_path / "junk.tar")
    float_ids = io.BytesIO()
    np.save(float_ids, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="must hold int32"):
        list(read_token_shard(shard("float.tar", [record, ("a.ids.npy", float_ids.getvalue())])))
    # a header declaring 2**40 ids over 8 bytes: refused from the header, nothing allocated
    from numpy.lib import format as npy

    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<i4", "fortran_order": False, "shape": (2**40, 1)})
    with pytest.raises(ValueError, match="does not match its shape"):
        list(read_token_shard(shard("forged.tar", [record, ("a.ids.npy", header.getvalue() + b"\0" * 8)])))
    with pytest.raises(ValueError, match="no ids.npy"):
        list(read_token_shard(shard("noids.tar", [record, ("a.txt", b"caption")])))
    ids = io.BytesIO()
    np.save(ids, np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="2x2|4x4"):
        list(read_token_shard(shard("grid.tar", [record, ("a.ids.npy", ids.getvalue())]), grid=(4, 4)))


# ---- work units ----------------------------------------------------------------------------------
@pytest.fixture
def corpus(tmp_path) -> Path:
    """folder/: 0.png .. 3.png (64 px), sub/odd.name.png (80x100), bad.png (not an image), 1.txt caption;
    shard-0.tar, shard-1.tar: 2 samples each (txt / json captions), the second shard with a corrupt image."""
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        (folder / f"{i}.png").write_bytes(_png(64, 64, i))
    (folder / "sub" / "odd.name.png").write_bytes(_png(80, 100, 9))
    (folder / "bad.png").write_bytes(b"\x89PNG broken")
    (folder / "1.txt").write_text("  one  \n")
    for s in range(2):
        with tarfile.open(tmp_path / f"shard-{s}.tar", "w") as tar:
            for i in range(2):
                key = f"{s}{i:04d}"
                _add(tar, f"{key}.png", b"junk" if (s, i) == (1, 1) else _png(64, 64, 10 * s + i))
                _add(tar, f"{key}.json", json.dumps({"caption": f"json {key}"}).encode())
                if i == 0:
                    _add(tar, f"{key}.txt", f"txt {key}".encode())
    return tmp_path


def test_plan_is_deterministic_and_chunks_folders(corpus):
    units, sources = plan_work_units([corpus / "folder", str(corpus / "shard-{0..1}.tar")], shard_size=2)
    assert [(u.index, u.kind) for u in units] == [(0, FOLDER), (1, FOLDER), (2, FOLDER), (3, TAR), (4, TAR)]
    assert [u.members for u in units[:3]] == [("0.png", "1.png"), ("2.png", "3.png"), ("bad.png", "sub/odd.name.png")]
    assert units[3].source == str(corpus / "shard-0.tar") and units[3].members == ()
    assert sources == [str(corpus / "folder"), str(corpus / "shard-0.tar"), str(corpus / "shard-1.tar")]
    again, _ = plan_work_units([corpus / "folder", str(corpus / "shard-{0..1}.tar")], shard_size=2)
    assert [u.digest for u in again] == [u.digest for u in units] and len({u.digest for u in units}) == 5
    other, _ = plan_work_units([corpus / "folder"], shard_size=3)
    assert other[0].digest != units[0].digest


def test_plan_errors(corpus):
    (corpus / "empty").mkdir()
    (corpus / "notes.csv").write_text("x")
    for data, error, match in [
        ([corpus / "missing"], FileNotFoundError, "no such file or folder"),
        ([corpus / "notes.csv"], ValueError, "not a data source"),
        ([corpus / "empty"], ValueError, "no image files"),
        ([str(corpus / "shard-{0..2}.tar")], FileNotFoundError, "do not exist"),
        ([corpus / "folder", corpus / "folder"], ValueError, "given twice"),
    ]:
        with pytest.raises(error, match=match):
            plan_work_units(data, shard_size=2)
    with pytest.raises(ValueError, match="shard_size"):
        plan_work_units([corpus / "folder"], shard_size=0)


def test_sample_keys_are_webdataset_safe_and_unique():
    used: set[str] = set()
    assert sample_key("sub/odd.name", used) == "sub/odd_name"
    assert sample_key("sub/odd.name", used) == "sub/odd_name_2"
    assert sample_key("a b:c", used) == "a_b_c"
    assert sample_key("__meta__", used) == "k__meta__"
    assert sample_key("../x", used) == "x"
    assert sample_key("", used) == "sample"


def test_unit_batches_fit_images_and_list_bad_ones(corpus):
    units, _ = plan_work_units([corpus / "folder", str(corpus / "shard-{0..1}.tar")], shard_size=3)
    stream = UnitBatches(units, image_size=64, batch_size=2)
    batches = list(stream)
    # every unit ends with one flagged batch; the 3 images of unit 0 make a full batch and a last one
    assert [(b.unit, len(b.keys), b.last) for b in batches] == [(0, 2, False), (0, 1, True), (1, 2, True), (2, 2, True), (3, 1, True)]
    keys = [k for b in batches for k in b.keys]
    assert keys == ["0", "1", "2", "3", "sub/odd_name", "00000", "00001", "10000"]
    assert all(b.images.shape == (len(b.keys), 3, 64, 64) for b in batches)
    odd = batches[2]
    assert odd.metas[1] == {"source": str(corpus / "folder"), "member": "sub/odd.name.png", "original_size": [80, 100]}
    want = fit_to_size(decode_image(corpus / "folder" / "sub" / "odd.name.png").unsqueeze(0), 64, "crop")[0]
    assert torch.equal(odd.images[1], want)
    assert batches[0].captions == [None, "one"] and batches[3].captions == ["txt 00000", "json 00001"]
    bad = [(b.unit, name) for b in batches for name, _ in b.bad]
    assert bad == [(1, str(corpus / "folder" / "bad.png")), (3, "shard-1.tar:10001.png")]
    assert all(reason for b in batches for _, reason in b.bad)
