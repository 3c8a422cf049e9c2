"""Scoring an MLLM with the judge: answers parsed into class and colour, drawn images judged, the
held-out pairs found; fixed inputs with hand-counted expected values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from semhitok.data.colour_fashion import CLASS_NAMES, COLOUR_NAMES, load_split
from semhitok.evaluation.judge import Judge, judge_accuracy
from semhitok.evaluation.mllm_scores import held_out_mask, parse_answer, score_answers, score_images
from semhitok.pretrained import pretrained_path

SLICE = Path(__file__).resolve().parents[2] / "src" / "semhitok" / "assets" / "colour-fashion-mnist-mini"
CLS = {name: i for i, name in enumerate(CLASS_NAMES)}
COL = {name: i for i, name in enumerate(COLOUR_NAMES)}


@pytest.mark.parametrize(
    ("text", "cls", "colour"),
    [
        ("a red ankle boot", "ankle boot", "red"),
        ("A photo of a RED T-shirt.", "t-shirt", "red"),  # not a shirt: "shirt" inside "t-shirt"
        ("a shirt", "shirt", None),
        ("two blue sneakers", "sneaker", "blue"),  # plural
        ("white dresses on grass", "dress", "white"),
        ("a green bag next to a red coat", "bag", "green"),  # the first mention wins
        ("trousers, brownish", "trouser", None),  # "brownish" is not the word brown
        ("I cannot tell.", None, None),
        ("", None, None),
    ],
)
def test_parse_answer(text, cls, colour):
    parsed = parse_answer(text)
    assert parsed.class_id == (None if cls is None else CLS[cls])
    assert parsed.colour_id == (None if colour is None else COL[colour])


def test_held_out_mask_marks_exactly_the_held_out_pairs():
    labels = torch.tensor([CLS["ankle boot"], CLS["ankle boot"], CLS["t-shirt"], CLS["t-shirt"]])
    colours = torch.tensor([COL["black"], COL["red"], COL["yellow"], COL["black"]])
    assert held_out_mask(labels, colours).tolist() == [True, False, True, False]


def test_score_answers_counts_by_hand():
    answers = ["a red ankle boot", "a blue ankle boot", "a red coat", "no idea"]
    labels = torch.tensor([CLS["ankle boot"]] * 4)
    colours = torch.tensor([COL["red"]] * 4)
    s = score_answers(answers, labels, colours)
    # class right: 1, 2; colour right: 1, 3; both: 1; neither named: 4
    assert (s.answers, s.class_accuracy, s.colour_accuracy, s.pair_accuracy, s.unparsed) == (4, 0.5, 0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="3 answers, 4 class labels"):
        score_answers(answers[:3], labels, colours)


def test_score_images_agrees_with_the_judge_and_its_features():
    judge = Judge.from_pretrained(pretrained_path("mini-judge"))
    data = load_split(SLICE, "test", limit=64)
    images = data.float_images()
    s = score_images(judge, images, data.labels, data.colours, judge.judge(images).features)
    expected = judge_accuracy(judge, images, data.labels, data.colours)
    assert (s.class_accuracy, s.colour_accuracy, s.pair_accuracy) == (expected["class_accuracy"], expected["colour_accuracy"], expected["pair_accuracy"])
    assert s.images == 64 and s.fd == pytest.approx(0.0, abs=1e-6)  # a set against itself
    # grey images are far from real ones in the judge's space, and their colour is mostly wrong
    grey = score_images(judge, torch.full_like(images, 0.5), data.labels, data.colours, judge.judge(images).features)
    assert grey.fd > 1.0 and grey.colour_accuracy < 0.5
