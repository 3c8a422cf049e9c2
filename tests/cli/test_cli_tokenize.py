"""``semhitok tokenize`` / ``detokenize``: tokens equal ``SemHiTok.encode`` bit for bit (folders and
tar shards, captions carried), a killed run resumes to byte-identical shards without redoing
finished ones, 2 torchrun processes write the same shards as 1, bad images are listed, other
models are refused, and bad input gives one line and exit status 2."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import semhitok.cli.tokenize as tokenize_cmd
from semhitok import SemHiTok, SemHiTokConfig, precision
from semhitok.data.token_shards import load_manifest, read_token_shards
from semhitok.image_io import decode_image, tensor_to_pil
from semhitok.modeling import fit_to_size

SIZE = 64  # the tiny preset's image size


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model (seed 11: another fingerprint than conftest's tiny_model, seed 7)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        folder = tmp_path_factory.mktemp("tokenize_model") / "model"
        SemHiTok(SemHiTokConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tok(model_dir) -> SemHiTok:
    return SemHiTok.from_pretrained(model_dir)


def _png(h: int, w: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """images/: 0..4.png (64 px), bad.png (not an image), wide.png (80x100: resized), captions for
    0 and 3; shards-0.tar, shards-1.tar: 2 samples each, captions in .txt, .json, both or none."""
    root = tmp_path_factory.mktemp("tokenize_corpus")
    images = root / "images"
    images.mkdir()
    for i in range(5):
        (images / f"{i}.png").write_bytes(_png(SIZE, SIZE, i))
    (images / "bad.png").write_bytes(b"\x89PNG\r\n not really")
    (images / "wide.png").write_bytes(_png(80, 100, 7))
    (images / "0.txt").write_text("a photo of zero\n")
    (images / "3.txt").write_text("three")
    for s in range(2):
        with tarfile.open(root / f"shards-{s}.tar", "w") as tar:
            for i in range(2):
                key = f"{s:03d}{i:03d}"
                members = {f"{key}.png": _png(SIZE, SIZE, 20 + 2 * s + i)}
                if (s, i) != (1, 1):
                    if i == 0:
                        members[f"{key}.txt"] = f"txt {key}".encode()
                    members[f"{key}.json"] = json.dumps({"caption": f"json {key}", "url": "http://x"}).encode()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def _data(corpus: Path) -> list[str]:
    return [str(corpus / "images"), str(corpus / "shards-{0..1}.tar")]


def _tokenize(cli, corpus: Path, out: Path, model: Path, *extra: object) -> tuple[int, str, str]:
    return cli("tokenize", *_data(corpus), "--model", model, "-o", out, "--shard-size", "4", "--batch-size", "4", "--workers", "0", *extra)


def _expected(tok: SemHiTok, corpus: Path) -> dict[str, tuple[np.ndarray, str | None]]:
    """key -> (ids, caption) by model.encode on the same images, in the same batches as the tool
    (--shard-size 4 = --batch-size 4: one batch per unit, bad.png left out of the second)."""
    folder = corpus / "images"

    def fitted(source: Path | bytes) -> torch.Tensor:
        return fit_to_size(decode_image(source).unsqueeze(0), SIZE, "crop")

    def tar_images(shard: Path) -> list[bytes]:
        with tarfile.open(shard) as tar:
            return [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")]

    units = [
        (["0", "1", "2", "3"], [fitted(folder / f"{i}.png") for i in range(4)]),
        (["4", "wide"], [fitted(folder / "4.png"), fitted(folder / "wide.png")]),
        (["000000", "000001"], [fitted(b) for b in tar_images(corpus / "shards-0.tar")]),
        (["001000", "001001"], [fitted(b) for b in tar_images(corpus / "shards-1.tar")]),
    ]
    captions = {"0": "a photo of zero", "3": "three", "000000": "txt 000000", "000001": "json 000001", "001000": "txt 001000"}
    expected = {}
    for keys, images in units:
        ids = tok.encode(torch.cat(images)).ids.numpy()
        expected.update({k: (ids[i], captions.get(k)) for i, k in enumerate(keys)})
    return expected


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("tokens-*.tar"))}


# ---- round trip ----------------------------------------------------------------------------------
def test_tokens_equal_encode_bit_for_bit(cli, tmp_path, corpus, model_dir, tok):
    """Folder and tar input, decoded in 2 DataLoader workers: ids, captions, metadata, manifest."""
    out = tmp_path / "tokens"
    code, stdout, err = _tokenize(cli, corpus, out, model_dir, "--workers", "2")
    assert code == 0, err
    assert "tokenized 10 images into 4 shards of 4x4 tokens" in stdout and tok.fingerprint() in stdout
    assert err.strip() == f"semhitok: warning: 1 undecodable file was skipped; the list is in {out}.bad_files.log"

    expected = _expected(tok, corpus)
    samples = list(read_token_shards(out, expect_fingerprint=tok.fingerprint()))
    assert [s.key for s in samples] == list(expected)
    for s in samples:
        ids, caption = expected[s.key]
        assert s.ids.dtype == np.int32 and s.ids.shape == (4, 4)
        assert np.array_equal(s.ids, ids), s.key
        assert s.caption == caption, s.key
    meta = {s.key: s.meta for s in samples}
    assert meta["wide"] == {"source": str(corpus / "images"), "member": "wide.png", "original_size": [80, 100]}
    assert meta["001001"] == {"source": str(corpus / "shards-1.tar"), "member": "001001", "original_size": [SIZE, SIZE]}

    m = load_manifest(out, expect_fingerprint=tok.fingerprint())
    assert (m["grid"], m["codebook_size"], m["subcodebook_size"], m["vocab_size"], m["image_size"]) == ([4, 4], 256, 4, 1024, SIZE)
    assert (m["images"], m["bad_images"], m["shard_size"]) == (10, 1, 4)
    assert [(s["file"], s["images"], s["bad_images"]) for s in m["shards"]] == [
        ("tokens-000000.tar", 4, 0), ("tokens-000001.tar", 2, 1), ("tokens-000002.tar", 2, 0), ("tokens-000003.tar", 2, 0)]
    assert m["sources"] == [str(corpus / "images"), str(corpus / "shards-0.tar"), str(corpus / "shards-1.tar")]
    assert [(b["shard"], b["name"]) for b in m["bad_files"]] == [(1, str(corpus / "images" / "bad.png"))]
    assert m["semhitok_version"] and m["torch_version"] == torch.__version__
    log = Path(f"{out}.bad_files.log").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith(f"skipped undecodable file {corpus / 'images' / 'bad.png'}: ")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *(f"tokens-00000{i}.tar" for i in range(4))]


# ---- resume --------------------------------------------------------------------------------------
def test_killed_run_resumes_to_identical_shards(cli, error_line, tmp_path, corpus, model_dir, tiny_model, monkeypatch):
    reference = tmp_path / "reference"
    assert _tokenize(cli, corpus, reference, model_dir)[0] == 0

    out = tmp_path / "tokens"
    write_shard = tokenize_cmd.write_shard
    written: list[int] = []

    def killed_after_first(out_dir, shard, fingerprint, precision):
        write_shard(out_dir, shard, fingerprint, precision)
        written.append(shard.unit.index)
        raise KeyboardInterrupt  # Ctrl-C (or a kill) right after shard 0 is in place

    monkeypatch.setattr(tokenize_cmd, "write_shard", killed_after_first)
    code, _, err = _tokenize(cli, corpus, out, model_dir)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in out.iterdir()) == ["tokens-000000.tar"]  # no manifest: unfinished
    with pytest.raises(FileNotFoundError, match="not a finished token folder"):
        load_manifest(out)
    stale = out / ".tokens-000001.tar.0123abcd.tmp"  # what a SIGKILL during shard 1 leaves behind
    stale.write_bytes(b"half a shard")
    first = os.stat(out / "tokens-000000.tar")

    # another model, or another split of the input, is refused before anything is written
    code, _, err = _tokenize(cli, corpus, out, tiny_model)
    assert code == 2
    error_line(err, f"{out} holds tokens of model", "tokens-000000.tar")
    code, _, err = cli("tokenize", *_data(corpus), "--model", model_dir, "-o", out, "--shard-size", "3", "--workers", "0")
    assert code == 2
    error_line(err, "holds other images than work unit 0", "--shard-size")
    # bf16 features may land on other codes: a folder never mixes precisions (native bf16 assumed,
    # so that no slow-bf16 warning line comes before the error on a CPU without it)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    code, _, err = cli("tokenize", *_data(corpus), "--model", model_dir, "-o", out, "--workers", "0", "--precision", "bf16")
    assert code == 2
    error_line(err, "tokens-000000.tar was tokenized in fp32, but this run is bf16", "--precision")

    written.clear()

    def counted(out_dir, shard, fingerprint, precision):
        write_shard(out_dir, shard, fingerprint, precision)
        written.append(shard.unit.index)

    monkeypatch.setattr(tokenize_cmd, "write_shard", counted)
    code, stdout, err = _tokenize(cli, corpus, out, model_dir)
    assert code == 0, err
    assert "1 of 4 shards were already done" in stdout
    assert written == [1, 2, 3]  # shard 0 was not redone ...
    again = os.stat(out / "tokens-000000.tar")
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # ... nor touched
    assert not stale.exists()
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()

    # a finished folder: the same command again writes no shard; another model is refused
    written.clear()
    assert _tokenize(cli, corpus, out, model_dir)[0] == 0 and written == []
    code, _, err = _tokenize(cli, corpus, out, tiny_model)
    assert code == 2
    error_line(err, f"{out} holds tokens of model {load_manifest(out)['fingerprint']}", "new folder")
    assert _shard_bytes(out) == _shard_bytes(reference)


# ---- torchrun ------------------------------------------------------------------------------------
def test_two_processes_write_the_shards_of_one(cli, tmp_path, corpus, model_dir):
    """torchrun, 2 CPU processes (gloo): unit i on rank i % 2; the same shards, byte for byte."""
    single = tmp_path / "single"
    assert _tokenize(cli, corpus, single, model_dir)[0] == 0
    ddp = tmp_path / "ddp"
    args = ["tokenize", *_data(corpus), "--model", str(model_dir), "-o", str(ddp), "--shard-size", "4", "--batch-size", "4", "--workers", "0", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "semhitok", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("tokenized 10 images") == 1  # rank 0 reports, once
    pairs = lambda folder: {(s.key, s.ids.tobytes()) for s in read_token_shards(folder)}  # noqa: E731
    assert pairs(ddp) == pairs(single)
    assert _shard_bytes(ddp) == _shard_bytes(single)
    assert load_manifest(ddp) == load_manifest(single)


# ---- detokenize ----------------------------------------------------------------------------------
def test_detokenize_writes_pngs_and_refuses_another_model(cli, error_line, tmp_path, corpus, model_dir, tok, tiny_model):
    tokens = tmp_path / "tokens"
    assert _tokenize(cli, corpus, tokens, model_dir)[0] == 0
    out = tmp_path / "check"
    code, stdout, err = cli("detokenize", tokens, "--model", model_dir, "-o", out, "--limit", "5")
    assert code == 0, err
    assert "decoded 5 images of 10" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png", "3.png", "4.png", "contact_sheet.png"]
    first = next(read_token_shards(tokens))
    want = tensor_to_pil(tok.decode(torch.from_numpy(first.ids[None]))[0])
    assert np.array_equal(np.asarray(Image.open(out / "0.png")), np.asarray(want))
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (3 * SIZE + 4 * 2, 2 * SIZE + 3 * 2)  # 5 images: 3 columns, 2 rows, 2 px gaps

    code, _, err = cli("detokenize", tokens, "--model", tiny_model, "-o", tmp_path / "wrong")
    assert code == 2
    error_line(err, "holds tokens of model", "this model is")
    assert not (tmp_path / "wrong").exists()


# ---- bad input -----------------------------------------------------------------------------------
def test_bad_input_gives_one_line(cli, error_line, tmp_path, corpus, model_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.csv").write_text("x")
    (tmp_path / "file").write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "tokens-000000.tar").write_bytes(b"something else")
    images = str(corpus / "images")
    model = ["--model", str(model_dir)]
    out = str(tmp_path / "out")
    cases = [
        (["tokenize", tmp_path / "missing", *model, "-o", out], "no such file or folder"),
        (["tokenize", tmp_path / "notes.csv", *model, "-o", out], "not a data source"),
        (["tokenize", tmp_path / "empty", *model, "-o", out], "no image files"),
        (["tokenize", str(corpus / "shards-{0..5}.tar"), *model, "-o", out], "do not exist"),
        (["tokenize", images, images, *model, "-o", out], "given twice"),
        (["tokenize", images, *model, "-o", out, "--shard-size", "0"], "--shard-size"),
        (["tokenize", images, *model, "-o", out, "--workers", "-1"], "--workers"),
        (["tokenize", images, *model], "-o/--output"),
        (["tokenize", images, *model, "-o", tmp_path / "file"], "is a file"),
        (["tokenize", images, *model, "-o", images], "also an input"),
        (["tokenize", images, "--model", tmp_path / "empty", "-o", out], "has no config.json"),
        (["tokenize", images, *model, "-o", foreign], "not a token shard"),
        (["detokenize", tmp_path / "missing", *model, "-o", out], "no such token folder"),
        (["detokenize", tmp_path / "empty", *model, "-o", out], "no manifest.json"),
    ]
    before = sorted(p.name for p in corpus.rglob("*"))
    for args, fragment in cases:
        code, _, err = cli(*args)
        assert code == 2, args
        error_line(err, fragment)
    assert not Path(out).exists()  # nothing written by any of them
    assert sorted(p.name for p in foreign.iterdir()) == ["tokens-000000.tar"]
    assert sorted(p.name for p in corpus.rglob("*")) == before


def test_help(cli):
    for command in ("tokenize", "detokenize"):
        code, out, _ = cli(command, "--help")
        assert code == 0 and f"usage: semhitok {command}" in out and f"  semhitok {command} " in out
