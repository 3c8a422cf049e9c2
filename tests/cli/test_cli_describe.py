"""``semhitok describe``: one ``PATH: answer`` line per image, an optional JSON file; bad input gives
one error line, exit status 2 and no JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from semhitok import SemHiTok, SemHiTokConfig

@pytest.fixture(scope="module")
def mllm_dir(tmp_path_factory, llm_factory, text_tokenizer_factory) -> Path:
    """A tiny random Llama + the tiny SemHiTok (64 px, 4x4 tokens), saved as an MLLM folder."""
    from semhitok.mllm import SemHiTokMLLM

    folder = tmp_path_factory.mktemp("mllm") / "mllm"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = SemHiTok(SemHiTokConfig.from_preset("tiny")).eval()
        llm = llm_factory("llama", tied=False)
        SemHiTokMLLM.from_llm(llm, tokenizer, text_tokenizer_factory()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Two small images of other sizes than the model's (fit by --resize crop)."""
    folder = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    paths = []
    for i, (w, h) in enumerate([(80, 64), (50, 70)]):
        arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        path = folder / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def _answers(stdout: str, images: list[Path]) -> list[str]:
    lines = stdout.splitlines()
    assert len(lines) == len(images), stdout
    answers = []
    for line, path in zip(lines, images):
        assert line.startswith(f"{path}: "), line
        answers.append(line[len(f"{path}: "):])
    return answers


def test_one_line_per_image_and_json(cli, mllm_dir, images, tmp_path):
    out = tmp_path / "answers.json"
    code, stdout, err = cli("describe", *images, "--model", mllm_dir, "--question", "What is it?", "--max-new-tokens", 5, "--json", out, "--device", "cpu")
    assert code == 0, err
    assert "Traceback" not in err and "error" not in err
    answers = _answers(stdout, images)
    record = json.loads(out.read_text())
    assert record["question"] == "What is it?" and record["model"] == str(mllm_dir)
    assert record["settings"]["max_new_tokens"] == 5 and record["settings"]["sample"] is False
    assert [a["file"] for a in record["answers"]] == [str(p) for p in images]
    assert [" ".join(a["answer"].split()) for a in record["answers"]] == answers


def test_greedy_answers_repeat_and_batching_does_not_change_them(cli, mllm_dir, images):
    runs = [cli("describe", *images, "--model", mllm_dir, "--max-new-tokens", 4, "--batch-size", b) for b in (1, 2)]
    assert all(code == 0 for code, _, _ in runs), runs
    assert runs[0][1] == runs[1][1]


def test_sampled_answers_follow_the_seed(cli, mllm_dir, images):
    def run(seed: int) -> str:
        code, stdout, err = cli("describe", *images, "--model", mllm_dir, "--max-new-tokens", 12, "--sample", "--temperature", 1.5, "--top-p", 1, "--seed", seed)
        assert code == 0, err
        return stdout

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_default_question_in_help_is_the_librarys(cli):
    from semhitok.cli.describe import HELP_DEFAULT_QUESTION
    from semhitok.mllm.model import DEFAULT_QUESTION

    assert HELP_DEFAULT_QUESTION == DEFAULT_QUESTION
    code, out, _ = cli("describe", "--help")
    assert code == 0 and "--question" in out and "--resize" in out


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--max-new-tokens", "0"], ["--max-new-tokens", "0"]),
        (["--sample", "--top-p", "0"], ["--top-p", "(0, 1]"]),
        (["--sample", "--temperature", "-1"], ["--temperature", "-1"]),
        (["--seed", "3"], ["--seed", "--sample"]),
        (["--question", " "], ["--question"]),
        (["--resize", "squash"], ["--resize", "squash"]),
    ],
)
def test_bad_options_are_one_line(cli, error_line, mllm_dir, images, tmp_path, options, fragments):
    out = tmp_path / "answers.json"
    code, stdout, err = cli("describe", *images, "--model", mllm_dir, "--json", out, *options)
    assert code == 2
    error_line(err, *fragments)
    assert not out.exists() and not stdout


def test_bad_images_are_one_line_and_leave_no_json(cli, error_line, mllm_dir, images, tmp_path):
    out = tmp_path / "answers.json"
    code, stdout, err = cli("describe", images[0], tmp_path / "nope.png", "--model", mllm_dir, "--json", out)
    assert code == 2
    error_line(err, "nope.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    code, stdout, err = cli("describe", images[0], garbage, "--model", mllm_dir, "--json", out)
    assert code == 2
    error_line(err, "garbage.png")
    code, stdout, err = cli("describe", images[0], "--model", mllm_dir, "--resize", "error")
    assert code == 2
    error_line(err, "80x64", "--resize")
    assert not out.exists() and not stdout


def test_bad_model_folders_are_one_line(cli, error_line, mllm_dir, images, tmp_path, tiny_model):
    out = tmp_path / "answers.json"
    code, _, err = cli("describe", *images, "--model", tmp_path / "missing", "--json", out)
    assert code == 2
    error_line(err, "missing")
    code, _, err = cli("describe", *images, "--model", tiny_model, "--json", out)
    assert code == 2
    error_line(err, "mllm_config.json")
    other = tmp_path / "other"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        SemHiTok(SemHiTokConfig.from_preset("tiny")).save_pretrained(other)
    code, _, err = cli("describe", *images, "--model", mllm_dir, "--tokenizer", other, "--json", out)
    assert code == 2
    error_line(err, "fingerprint")
    code, _, err = cli("describe", *images, "--model", mllm_dir, "--json", images[0])
    assert code == 2
    error_line(err, "--json", "input")
    assert not out.exists()
