"""The unified MLLM's part of a showcase page: it reads held-out images (answers, with the truth)
and draws from captions (with the independent judge's verdict on each drawing)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..data.colour_fashion import CLASS_NAMES, COLOUR_NAMES, LabelledSplit
from ..mllm import SemHiTokMLLM
from .html import HtmlPage, png_bytes
from .judge import Judge
from .mllm_scores import held_out_mask, parse_answer, score_answers, score_verdict

__all__ = ["DEMO_TEMPERATURE", "DEMO_TOP_K", "QUESTION", "mllm_section"]

QUESTION = "What is in the image?"
# The drawings are sampled from the 20 likeliest ids at temperature 0.7: the shipped mini MLLM,
# trained briefly, spreads probability over many ids, and drawing from all of them at
# temperature 1 gives patchwork (its model card measures both settings).
DEMO_TEMPERATURE, DEMO_TOP_K = 0.7, 20


def _big(image: Tensor, scale: int = 2) -> bytes:
    return png_bytes(image.clamp(0, 1).repeat_interleave(scale, -1).repeat_interleave(scale, -2))


def drawing_captions(data: LabelledSplit, count: int) -> tuple[list[str], Tensor]:
    """Test captions to draw from: up to half of them naming held-out colour x class pairs
    (composition), the rest the first other ones; returns the captions and their indices."""
    held = held_out_mask(data.labels, data.colours)
    novel = held.nonzero().flatten()[: count // 2]
    plain = (~held).nonzero().flatten()[: count - len(novel)]
    index = torch.cat([plain, novel])
    return [data.captions[i] for i in index.tolist()], index


@torch.no_grad()
def mllm_section(
    mm: SemHiTokMLLM, judge: Judge, data: LabelledSplit, page: HtmlPage, *,
    describe: int = 12, draw: int = 12, cfg_scale: float = 3.0, seed: int = 0,
    temperature: float = DEMO_TEMPERATURE, top_k: int | None = DEMO_TOP_K,
) -> dict[str, Any]:
    """Append two sections to ``page`` and return what they measured.

    Reads: greedy answers to :data:`QUESTION` about the first ``describe`` images of ``data``,
    each shown with its true caption. Draws: one image for each of ``draw`` test captions (half of
    them naming a held-out pair), seeded, with the judge's class and colour verdict.
    """
    images = data.float_images()[:describe]
    labels, colours = data.labels[: len(images)], data.colours[: len(images)]
    answers = mm.describe(images, QUESTION, max_new_tokens=16)
    understood = score_answers(answers, labels, colours)
    page.heading("The mini MLLM reads: answers about held-out images")
    page.paragraph(
        f'Question: "{QUESTION}" (greedy answers). Right class in {round(understood.class_accuracy * len(images))} of {len(images)} '
        f"answers, right colour in {round(understood.colour_accuracy * len(images))}; a red line marks a wrong class or colour.", note=True,
    )
    wrong = []
    for answer, cls, col in zip(answers, labels.tolist(), colours.tolist()):
        parsed = parse_answer(answer)
        wrong.append(parsed.class_id != cls or parsed.colour_id != col)
    page.cards([(_big(img), [f"truth: {cap}", f"answer: {ans}"]) for img, cap, ans in zip(images, data.captions, answers)], wrong)

    captions, index = drawing_captions(data, draw)
    drawn = mm.generate_images(captions, cfg_scale=cfg_scale, seed=seed, temperature=temperature, top_k=top_k).cpu()
    verdict = judge.judge(drawn)
    held = held_out_mask(data.labels[index], data.colours[index])
    scores = score_verdict(verdict, data.labels[index], data.colours[index])
    page.heading("The mini MLLM draws: images from test captions")
    page.paragraph(
        f"CFG scale {cfg_scale:g}, temperature {temperature:g}, {'top-k ' + str(top_k) if top_k else 'all ids'}, seed {seed}; the last {int(held.sum())} captions name colour x class pairs "
        f"never seen in training. The judge (an independent classifier) names class and colour: right class in "
        f"{round(scores.class_accuracy * len(captions))} of {len(captions)}, right colour in {round(scores.colour_accuracy * len(captions))}.",
        note=True,
    )
    cards, bad = [], []
    for i, caption in enumerate(captions):
        said = f"judge: {COLOUR_NAMES[int(verdict.colours[i])]} {CLASS_NAMES[int(verdict.classes[i])]}"
        cards.append((_big(drawn[i]), [caption + (" (held-out pair)" if held[i] else ""), said]))
        bad.append(int(verdict.classes[i]) != int(data.labels[index[i]]) or int(verdict.colours[i]) != int(data.colours[index[i]]))
    page.cards(cards, bad)
    return {
        "question": QUESTION, "answers": answers, "understanding": understood.to_dict(),
        "captions": captions, "generation": scores.to_dict(), "cfg_scale": cfg_scale, "seed": seed,
    }
