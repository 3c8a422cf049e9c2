"""A tiny end-to-end run of the mini-world MLLM pipeline: a tiny random Llama with the shipped mini
SemHiTok trains a few steps on the shipped slice, then answers about test images and draws from
test captions, and the shipped judge scores both, reproducibly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from semhitok.data.colour_fashion import load_split
from semhitok.evaluation.judge import Judge
from semhitok.evaluation.mllm_eval import evaluate_generation, evaluate_image_nll, evaluate_understanding
from semhitok.evaluation.mllm_scores import held_out_mask
from semhitok.mllm import SemHiTokMLLM
from semhitok.pretrained import pretrained_path
from semhitok.training.mllm_config import MLLMTrainConfig
from semhitok.training.mllm_loop import train_mllm

SLICE = Path(__file__).resolve().parents[2] / "src" / "semhitok" / "assets" / "colour-fashion-mnist-mini"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, llm_factory, text_tokenizer_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    with torch.random.fork_rng(devices=[]):
        llm_factory("llama", tied=False).save_pretrained(root / "llm")
    text_tokenizer_factory().save_pretrained(root / "llm")
    config = MLLMTrainConfig.from_dict({
        "stage": "mllm", "llm": str(root / "llm"), "tokenizer": "mini-semhitok",
        "mllm": {"train": "full", "loss_chunk": 128},
        "data": {"images": [str(SLICE / "images" / "train")], "batch_size": 4, "mix": {"understanding": 0.5, "generation": 0.5, "text": 0.0}},
        "optim": {"lr": 3e-3, "warmup_steps": 0},
        "run": {"max_steps": 6, "checkpoint_every": 6, "log_every": 3, "seed": 0},
    })
    result = train_mllm(config, root / "run", quiet=True)
    return result.model_dir


def test_train_then_answer_draw_and_score(trained):
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    judge = Judge.from_pretrained(pretrained_path("mini-judge"))
    test = load_split(SLICE, "test", limit=12)
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


def test_image_nll_matches_a_sample_by_sample_log_softmax(trained):
    """The batched, padded teacher-forced NLL equals -log softmax over the joint vocabulary at each
    image id and <eoi> of each caption's own unpadded sequence, averaged over those ids."""
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    test = load_split(SLICE, "test", limit=5)
    captions = [*test.captions[:4], "a very long caption that pads the others " * 2]
    images = test.float_images()
    got = evaluate_image_nll(mm, images, captions, batch_size=3, progress=False)

    nlls = []
    with torch.no_grad():
        for image, caption in zip(images, captions):
            ids = mm.tokenizer.encode(image[None]).ids[0].flatten()
            seq = mm.format.generation(caption, ids)
            input_ids = torch.tensor([seq.input_ids])
            mask = torch.ones_like(input_ids)
            hidden = mm.hidden_states(mm.embed(input_ids), mask, torch.arange(input_ids.shape[1])[None])[0]
            logp = torch.log_softmax(mm.joint_logits(hidden).float(), dim=-1)
            labels = torch.tensor(seq.labels)
            at = (labels[1:] != -100).nonzero().flatten()  # position t predicts label t + 1
            assert len(at) == ids.numel() + 1  # the ids and <eoi>
            nlls.append(-logp[at, labels[1:][at]])
    assert got.mean == pytest.approx(float(torch.cat(nlls).mean()), rel=1e-5)
    torch.testing.assert_close(got.per_image, torch.stack([n.mean() for n in nlls]), rtol=1e-5, atol=0)
    assert got.standard_error == pytest.approx(float(got.per_image.std()) / 5**0.5)
