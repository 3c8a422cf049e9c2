"""Scores of a unified MLLM in the mini-world, given by the independent judge, never the teacher.

Understanding is scored from the words of the model's answers: the class and the colour an answer
names (:func:`parse_answer`) against the image's labels. Generation is scored from the images the
model draws for test captions: the judge's class and colour verdicts against the caption's, and the
Fréchet distance between the judge's features of the drawn images and of real test images. The
colour x class pairs held out of every training split (:func:`held_out_mask`) give the same scores
for composition.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.colour_fashion import CLASS_NAMES, COLOUR_NAMES, HELD_OUT_PAIRS
from .frechet import feature_statistics, frechet_distance
from .judge import Judge, JudgeVerdict

__all__ = [
    "GenerationScores",
    "ParsedAnswer",
    "UnderstandingScores",
    "held_out_mask",
    "parse_answer",
    "score_answers",
    "score_images",
    "score_verdict",
]


@dataclass(frozen=True)
class ParsedAnswer:
    """The class id and the colour id an answer names (``None`` where it names none)."""

    class_id: int | None
    colour_id: int | None


def _first_mention(text: str, names: Sequence[str]) -> int | None:
    """Index of the name mentioned first in ``text`` as a whole word (plural ``s``/``es`` allowed).

    A name preceded or followed by a letter, digit or hyphen is not a mention, so "shirt" inside
    "t-shirt" does not count as a shirt.
    """
    first: tuple[int, int] | None = None
    for index, name in enumerate(names):
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?:e?s)?(?![\w-])", text)
        if match is not None and (first is None or match.start() < first[0]):
            first = (match.start(), index)
    return None if first is None else first[1]


def parse_answer(text: str, classes: Sequence[str] = CLASS_NAMES, colours: Sequence[str] = COLOUR_NAMES) -> ParsedAnswer:
    """The first class name and the first colour name in ``text`` (case-insensitive)."""
    text = text.lower()
    return ParsedAnswer(_first_mention(text, [c.lower() for c in classes]), _first_mention(text, [c.lower() for c in colours]))


def held_out_mask(labels: Tensor, colours: Tensor) -> Tensor:
    """(N,) bool: which (class, colour) pairs are held out of every training split."""
    pairs = torch.tensor(HELD_OUT_PAIRS, device=labels.device)
    return ((labels[:, None] == pairs[:, 0]) & (colours[:, None] == pairs[:, 1])).any(dim=1)


def _check_lengths(n: int, labels: Tensor, colours: Tensor, what: str) -> None:
    if not (n == len(labels) == len(colours)):
        raise ValueError(f"{n} {what}, {len(labels)} class labels and {len(colours)} colour labels: one of each per {what[:-1]}")
    if n == 0:
        raise ValueError(f"no {what} to score")


@dataclass
class UnderstandingScores:
    """Accuracy of the answers' class and colour words; ``unparsed``: share naming neither."""

    answers: int
    class_accuracy: float
    colour_accuracy: float
    pair_accuracy: float
    unparsed: float

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def score_answers(answers: Sequence[str], labels: Tensor, colours: Tensor) -> UnderstandingScores:
    """Score answers to "what is in the image?" against the images' class and colour ids (N,)."""
    _check_lengths(len(answers), labels, colours, "answers")
    parsed = [parse_answer(a) for a in answers]
    said_class = torch.tensor([-1 if p.class_id is None else p.class_id for p in parsed])
    said_colour = torch.tensor([-1 if p.colour_id is None else p.colour_id for p in parsed])
    ok_class, ok_colour = said_class == labels.cpu(), said_colour == colours.cpu()
    return UnderstandingScores(
        answers=len(answers),
        class_accuracy=float(ok_class.float().mean()),
        colour_accuracy=float(ok_colour.float().mean()),
        pair_accuracy=float((ok_class & ok_colour).float().mean()),
        unparsed=float(((said_class < 0) & (said_colour < 0)).float().mean()),
    )


@dataclass
class GenerationScores:
    """The judge's verdict on drawn images: accuracy of class and colour against the captions', and
    the Fréchet distance of its features to real images' (``None`` for fewer than 2 images)."""

    images: int
    class_accuracy: float
    colour_accuracy: float
    pair_accuracy: float
    fd: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


def score_images(judge: Judge, images: Tensor, labels: Tensor, colours: Tensor, real_features: Tensor | None = None) -> GenerationScores:
    """Score drawn float images (N, 3, S, S) in [0, 1] against the class and colour ids (N,) of
    the captions they were drawn from; ``real_features`` (M, D): the judge's features of real
    images (:meth:`Judge.judge`), the reference of the Fréchet distance."""
    _check_lengths(len(images), labels, colours, "images")
    return score_verdict(judge.judge(images), labels, colours, real_features)


def score_verdict(verdict: JudgeVerdict, labels: Tensor, colours: Tensor, real_features: Tensor | None = None) -> GenerationScores:
    """:func:`score_images` from a verdict the judge already gave (no second pass)."""
    n = len(verdict.classes)
    _check_lengths(n, labels, colours, "images")
    ok_class, ok_colour = verdict.classes.cpu() == labels.cpu(), verdict.colours.cpu() == colours.cpu()
    fd = None
    if real_features is not None and n >= 2:
        mu, sigma = feature_statistics(verdict.features)
        mu_real, sigma_real = feature_statistics(real_features)
        fd = frechet_distance(mu, sigma, mu_real, sigma_real)
    return GenerationScores(
        images=n,
        class_accuracy=float(ok_class.float().mean()),
        colour_accuracy=float(ok_colour.float().mean()),
        pair_accuracy=float((ok_class & ok_colour).float().mean()),
        fd=fd,
    )
