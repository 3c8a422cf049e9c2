"""Run a unified MLLM over a labelled split and score it with the judge (:mod:`.mllm_scores`).

Understanding: the model answers a question about each test image; the class and colour words of
its answers are scored. Generation: the model draws one image per test caption; the judge scores
the drawings, on all captions and on those naming a held-out colour x class pair (composition).
Generation likelihood: the mean negative log-likelihood the model gives the real test images'
tokens after their captions (teacher-forced), a measure of drawing that does not depend on sampling
and stays informative while the drawings are still at chance for the judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from ..mllm import SemHiTokMLLM
from ..mllm.model import DEFAULT_QUESTION
from .caption_following import image_token_nll
from .judge import Judge
from .mllm_scores import GenerationScores, UnderstandingScores, held_out_mask, score_answers, score_images

__all__ = ["GenerationEval", "ImageNLLEval", "UnderstandingEval", "evaluate_generation", "evaluate_image_nll", "evaluate_understanding"]


@dataclass
class UnderstandingEval:
    """Scores on every image and on the held-out pairs (None if the split has none), the answers."""

    scores: UnderstandingScores
    held_out: UnderstandingScores | None
    answers: list[str]


@dataclass
class GenerationEval:
    """Scores of the drawn images, on every caption and on the held-out pairs (None if none), and
    the images (N, 3, S, S) float in [0, 1]."""

    scores: GenerationScores
    held_out: GenerationScores | None
    images: Tensor


def evaluate_understanding(
    mm: SemHiTokMLLM, images: Tensor, labels: Tensor, colours: Tensor, question: str = DEFAULT_QUESTION,
    batch_size: int = 32, max_new_tokens: int = 16, progress: bool = True,
) -> UnderstandingEval:
    """Greedy answers to ``question`` for float images (N, 3, S, S) in [0, 1], scored against
    their class and colour ids (N,)."""
    answers: list[str] = []
    for start in tqdm(range(0, len(images), batch_size), desc="understanding", unit="batch", disable=not progress or None, leave=False):
        answers += mm.describe(images[start : start + batch_size], question, max_new_tokens=max_new_tokens)
    held = held_out_mask(labels, colours)
    held_scores = None
    if held.any():
        held_scores = score_answers([a for a, h in zip(answers, held.tolist()) if h], labels[held], colours[held])
    return UnderstandingEval(score_answers(answers, labels, colours), held_scores, answers)


def evaluate_generation(
    mm: SemHiTokMLLM, judge: Judge, captions: Sequence[str], labels: Tensor, colours: Tensor, real_features: Tensor,
    cfg_scale: float = 4.0, seed: int = 0, batch_size: int = 16, temperature: float = 1.0, top_k: int | None = None,
    progress: bool = True,
) -> GenerationEval:
    """One image per caption (batch ``i`` seeded with ``seed + i``, so a run is reproducible and
    does not depend on the other batches), judged against the captions' class and colour ids;
    ``real_features``: the judge's features of real images, the reference of the FD."""
    drawn = []
    for i, start in enumerate(tqdm(range(0, len(captions), batch_size), desc=f"generation cfg={cfg_scale:g}", unit="batch", disable=not progress or None, leave=False)):
        batch = list(captions[start : start + batch_size])
        drawn.append(mm.generate_images(batch, cfg_scale=cfg_scale, seed=seed + i, temperature=temperature, top_k=top_k).cpu())
    images = torch.cat(drawn)
    held = held_out_mask(labels, colours)
    held_scores = score_images(judge, images[held], labels[held], colours[held], real_features) if held.any() else None
    return GenerationEval(score_images(judge, images, labels, colours, real_features), held_scores, images)


@dataclass
class ImageNLLEval:
    """Teacher-forced NLL of real images' ids after their captions, in nats per id.

    Attributes:
        mean: over every id of every image (each image has the same h*w + 1 ids).
        per_image: (N,) each image's mean; ``per_image.std() / sqrt(N)`` is the standard error of ``mean``.
    """

    mean: float
    per_image: Tensor

    @property
    def standard_error(self) -> float:
        n = len(self.per_image)
        return float(self.per_image.std() / n**0.5) if n > 1 else float("nan")


def evaluate_image_nll(mm: SemHiTokMLLM, images: Tensor, captions: Sequence[str], batch_size: int = 32, progress: bool = True) -> ImageNLLEval:
    """NLL per image id of real images given their captions: float images (N, 3, S, S) in [0, 1]
    are tokenized with the model's SemHiTok and scored teacher-forced as generation samples
    (caption -> ``<boi>`` ids ``<eoi>``; ``<eoi>`` counts as one more id) with no unconditional
    swap. ``exp(mean)`` is the perplexity over the ``K*m`` image ids."""
    if len(images) != len(captions) or len(images) == 0:
        raise ValueError(f"need as many captions as images (at least one), got {len(captions)} and {len(images)}")
    device = next(mm.adapter.parameters()).device
    with torch.no_grad():
        ids = torch.cat([mm.tokenizer.encode(images[s : s + batch_size].to(device)).ids.cpu() for s in range(0, len(images), batch_size)])
    per = image_token_nll(mm, list(captions), ids, batch_size, progress).mean(dim=1)
    return ImageNLLEval(float(per.mean()), per)
