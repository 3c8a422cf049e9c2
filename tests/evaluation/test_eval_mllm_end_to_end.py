"""A tiny end-to-end run of the mini-world MLLM pipeline: a tiny random Llama with the shipped mini
SemHiTok trains a few steps on the shipped slice, then answers about test images and draws from
test captions, and the shipped judge scores both, reproducibly."""

from __future__ import annotations

import pytest
import torch

from semhitok.data.colour_fashion import load_split
from semhitok.evaluation.judge import Judge
from semhitok.evaluation.mllm_eval import evaluate_generation, evaluate_image_nll, evaluate_understanding
from semhitok.evaluation.mllm_scores import held_out_mask
from semhitok.mllm import SemHiTokMLLM
from semhitok.pretrained import pretrained_path


def test_train_then_answer_draw_and_score(trained, mini_slice):
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    judge = Judge.from_pretrained(pretrained_path("mini-judge"))
    test = load_split(mini_slice, "test", limit=12)
    images = test.float_images()
    held = held_out_mask(test.labels, test.colours)

    u = evaluate_understanding(mm, images, test.labels, test.colours, batch_size=8, max_new_tokens=6, progress=False)
    assert len(u.answers) == 12 and all(isinstance(a, str) for a in u.answers)
    assert u.scores.answers == 12 and 0.0 <= u.scores.class_accuracy <= 1.0
    assert (u.held_out is None) == (not held.any())

    real = judge.judge(images).features
    g = evaluate_generation(mm, judge, test.captions, test.labels, test.colours, real, cfg_scale=3.0, seed=5, batch_size=8, progress=False)
    assert g.images.shape == (12, 3, mm.tokenizer.image_size, mm.tokenizer.image_size)
    assert 0.0 <= float(g.images.min()) and float(g.images.max()) <= 1.0
    assert g.scores.images == 12 and g.scores.fd is not None and g.scores.fd >= 0.0
    if held.any():
        assert g.held_out is not None and g.held_out.images == int(held.sum())
    # the same seed draws the same images, whatever else ran in between
    again = evaluate_generation(mm, judge, test.captions, test.labels, test.colours, real, cfg_scale=3.0, seed=5, batch_size=8, progress=False)
    assert torch.equal(again.images, g.images) and again.scores == g.scores


def test_image_nll_matches_a_sample_by_sample_log_softmax(trained, mini_slice, reference_image_nll):
    """The batched, padded teacher-forced NLL equals -log softmax over the joint vocabulary at each
    image id and <eoi> of each caption's own unpadded sequence, averaged over those ids."""
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    test = load_split(mini_slice, "test", limit=5)
    captions = [*test.captions[:4], "a very long caption that pads the others " * 2]
    images = test.float_images()
    got = evaluate_image_nll(mm, images, captions, batch_size=3, progress=False)

    nlls = []
    with torch.no_grad():
        for image, caption in zip(images, captions):
            ids = mm.tokenizer.encode(image[None]).ids[0].flatten()
            nll = reference_image_nll(mm, caption, ids)
            assert len(nll) == ids.numel() + 1  # the ids and <eoi>
            nlls.append(nll)
    assert got.mean == pytest.approx(float(torch.cat(nlls).mean()), rel=1e-5)
    torch.testing.assert_close(got.per_image, torch.stack([n.mean() for n in nlls]), rtol=1e-5, atol=0)
    assert got.standard_error == pytest.approx(float(got.per_image.std()) / 5**0.5)
