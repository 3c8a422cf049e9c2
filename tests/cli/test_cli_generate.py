"""``semhitok generate``: PNGs of the tokenizer's size, a contact sheet and generate.json; seeds
reproduce; bad input gives one error line, exit status 2 and no output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from semhitok import SemHiTok, SemHiTokConfig

def save_tiny_mllm(folder: Path, llm_factory, text_tokenizer_factory, seed: int = 0) -> SemHiTok:
    """A tiny random Llama + the tiny SemHiTok (64 px, 4x4 tokens), saved as an MLLM folder; the
    image head gets random weights (at its zero init every image id would be equally likely)."""
    from semhitok.mllm import SemHiTokMLLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = SemHiTok(SemHiTokConfig.from_preset("tiny")).eval()
        mm = SemHiTokMLLM.from_llm(llm_factory("llama", tied=False, seed=seed), tokenizer, text_tokenizer_factory())
        with torch.no_grad():
            mm.image_head.weight.normal_(std=0.5)
        mm.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="module")
def mllm_dir(tmp_path_factory, llm_factory, text_tokenizer_factory) -> Path:
    folder = tmp_path_factory.mktemp("mllm") / "mllm"
    save_tiny_mllm(folder, llm_factory, text_tokenizer_factory)
    return folder


@pytest.fixture(scope="module")
def image_size(mllm_dir) -> int:
    return SemHiTok.from_pretrained(mllm_dir / "tokenizer").image_size


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("p*_s*.png"))


def test_writes_pngs_contact_sheet_and_record(cli, mllm_dir, image_size, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("generate", "a red boot", "a white sneaker", "--model", mllm_dir, "-o", out, "--n", 3, "--seed", 7,
                            "--cfg", 2.5, "--top-k", 50, "--top-p", 0.9, "--temperature", 0.8, "--cfg-schedule", "linear", "--device", "cpu")
    assert code == 0, err
    assert "generated 6 images" in stdout and str(out) in stdout
    files = _pngs(out)
    assert [p.name for p in files] == [f"p{i:02d}_s{s}.png" for i in range(2) for s in range(3)]
    for p in files:
        with Image.open(p) as im:
            assert im.size == (image_size, image_size) and im.mode == "RGB"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width > 3 * image_size and sheet.height >= 2 * image_size
    record = json.loads((out / "generate.json").read_text())
    assert record["prompts"] == ["a red boot", "a white sneaker"]
    assert record["seed"] == 7 and record["seed_given"] is True
    assert record["settings"] == {"n": 3, "cfg_scale": 2.5, "cfg_schedule": "linear", "temperature": 0.8, "top_k": 50, "top_p": 0.9, "precision": "fp32"}
    assert record["model"] == str(mllm_dir) and record["image_size"] == image_size
    assert {(f["file"], f["prompt"]) for f in record["files"]} == {(f"p{i:02d}_s{s}.png", p) for i, p in enumerate(["a red boot", "a white sneaker"]) for s in range(3)}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def test_same_seed_same_bytes_other_seed_differs(cli, mllm_dir, tmp_path):
    def run(name: str, seed: int) -> list[bytes]:
        code, _, err = cli("generate", "a boot", "--model", mllm_dir, "-o", tmp_path / name, "--n", 2, "--seed", seed)
        assert code == 0, err
        return [p.read_bytes() for p in _pngs(tmp_path / name)]

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert len(a) == 2 and a == b
    assert a != c


def test_without_seed_the_drawn_seed_is_recorded_and_reproduces(cli, mllm_dir, tmp_path):
    code, _, err = cli("generate", "a boot", "--model", mllm_dir, "-o", tmp_path / "a", "--n", 1, "--cfg", 1)
    assert code == 0, err
    record = json.loads((tmp_path / "a" / "generate.json").read_text())
    assert record["seed_given"] is False
    code, _, err = cli("generate", "a boot", "--model", mllm_dir, "-o", tmp_path / "b", "--n", 1, "--cfg", 1, "--seed", record["seed"])
    assert code == 0, err
    assert (tmp_path / "a" / "p00_s0.png").read_bytes() == (tmp_path / "b" / "p00_s0.png").read_bytes()


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--cfg", "-1"], ["--cfg", "-1"]),
        (["--cfg", "nan"], ["--cfg", "nan"]),
        (["--top-p", "0"], ["--top-p", "(0, 1]"]),
        (["--top-p", "1.5"], ["--top-p", "1.5"]),
        (["--n", "0"], ["--n", "0"]),
        (["--top-k", "0"], ["--top-k"]),
        (["--temperature", "-0.5"], ["--temperature", "-0.5"]),
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--cfg-schedule", "cosine"], ["--cfg-schedule", "cosine"]),
    ],
)
def test_bad_numbers_are_one_line(cli, error_line, mllm_dir, tmp_path, options, fragments):
    out = tmp_path / "out"
    code, stdout, err = cli("generate", "a boot", "--model", mllm_dir, "-o", out, *options)
    assert code == 2
    error_line(err, *fragments)
    assert not out.exists() and not stdout


def test_bad_model_folders_are_one_line(cli, error_line, mllm_dir, tmp_path, tiny_model):
    out = tmp_path / "out"
    code, _, err = cli("generate", "a boot", "--model", tmp_path / "missing", "-o", out)
    assert code == 2
    error_line(err, "missing")
    # A SemHiTok tokenizer folder is not an MLLM folder.
    code, _, err = cli("generate", "a boot", "--model", tiny_model, "-o", out)
    assert code == 2
    error_line(err, str(tiny_model), "mllm_config.json")
    broken = tmp_path / "broken"
    shutil.copytree(mllm_dir, broken)
    (broken / "mllm_config.json").write_text("{not json")
    code, _, err = cli("generate", "a boot", "--model", broken, "-o", out)
    assert code == 2
    error_line(err, "mllm_config.json")
    assert not out.exists()


def test_tokenizer_with_other_codebooks_is_refused(cli, error_line, mllm_dir, tmp_path):
    other = tmp_path / "other"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        SemHiTok(SemHiTokConfig.from_preset("tiny")).save_pretrained(other)
    out = tmp_path / "out"
    code, _, err = cli("generate", "a boot", "--model", mllm_dir, "--tokenizer", other, "-o", out)
    assert code == 2
    error_line(err, "fingerprint")
    # The same with the MLLM folder's own tokenizer copy replaced.
    swapped = tmp_path / "swapped"
    shutil.copytree(mllm_dir, swapped)
    shutil.rmtree(swapped / "tokenizer")
    shutil.copytree(other, swapped / "tokenizer")
    code, _, err = cli("generate", "a boot", "--model", swapped, "-o", out)
    assert code == 2
    error_line(err, "fingerprint")
    assert not out.exists()


def test_empty_prompt_and_output_onto_the_model_are_refused(cli, error_line, mllm_dir, tmp_path):
    code, _, err = cli("generate", "a boot", " ", "--model", mllm_dir, "-o", tmp_path / "out")
    assert code == 2
    error_line(err, "prompt 2")
    code, _, err = cli("generate", "a boot", "--model", mllm_dir, "-o", mllm_dir)
    assert code == 2
    error_line(err, "input")
    assert not (tmp_path / "out").exists() and not list(mllm_dir.glob("*.png"))


def test_model_defaults_to_the_shipped_mini_mllm_and_help_lists_both_commands(cli, error_line, tmp_path):
    from semhitok.pretrained import available

    if "mini-mllm" not in available():  # a checkout without it: one line naming it, nothing written
        code, _, err = cli("generate", "a boot", "-o", tmp_path / "out")
        assert code == 2
        error_line(err, "mini-mllm")
        assert not (tmp_path / "out").exists()
    code, out, _ = cli("--help")
    assert code == 0 and "generate" in out and "describe" in out
    code, out, _ = cli("generate", "--help")
    assert code == 0 and "--cfg" in out and "contact_sheet.png" in out and "default: mini-mllm" in out


def test_output_that_is_a_file_and_unavailable_cuda_are_one_line(cli, error_line, mllm_dir, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    code, _, err = cli("generate", "a boot", "--model", mllm_dir, "-o", taken)
    assert code == 2
    error_line(err, str(taken))
    assert taken.read_text() == "keep me"
    if not torch.cuda.is_available():
        code, _, err = cli("generate", "a boot", "--model", mllm_dir, "-o", tmp_path / "out", "--device", "cuda")
        assert code == 2
        error_line(err, "--device cuda")
        assert not (tmp_path / "out").exists()


def test_precision_bf16_runs_and_is_recorded(cli, mllm_dir, tmp_path, monkeypatch):
    """--precision bf16 draws under bf16 autocast (native bf16 assumed: no slow-CPU warning line)."""
    from semhitok import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    out = tmp_path / "bf16"
    code, _, err = cli("generate", "a red boot", "--model", mllm_dir, "-o", out, "--n", 2, "--seed", 1, "--precision", "bf16")
    assert code == 0, err
    assert json.loads((out / "generate.json").read_text())["settings"]["precision"] == "bf16"
    assert len(_pngs(out)) == 2
