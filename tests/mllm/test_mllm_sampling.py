"""The image sampler: KV cache = full recomputation, CFG limits, only image ids, seeds, filters."""

from __future__ import annotations

import math

import pytest
import torch

from semhitok.mllm import SamplingConfig, sample_image_ids
from semhitok.mllm.sampling import draw, filter_top_k, filter_top_p, guide

CAPTIONS = ["a red ankle boot", "bag", "a pullover with long sleeves"]
SETTINGS = {
    "greedy": SamplingConfig(cfg_scale=3.0, temperature=0.0),
    "sampled": SamplingConfig(cfg_scale=3.0, temperature=1.0, top_k=200, top_p=0.95),
    "linear": SamplingConfig(cfg_scale=5.0, cfg_schedule="linear", temperature=0.7),
}


def _prompts(mm, captions=CAPTIONS):
    return [mm.format.generation_prompt(c) for c in captions], [mm.format.generation_prompt(None)] * len(captions)


def _run(mm, cond, uncond, config, seed=0, use_cache=True):
    return sample_image_ids(mm, cond, uncond, mm.image_tokens, config, torch.Generator().manual_seed(seed), pad_id=mm.pad_id, use_cache=use_cache)


@pytest.mark.parametrize(("kind", "tied", "chat"), [("llama", False, False), ("qwen", True, True)])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_kv_cache_gives_the_ids_of_full_recomputation(mllm_factory, kind, tied, chat, setting):
    mm = mllm_factory(kind=kind, tied=tied, chat=chat)
    cond, uncond = _prompts(mm)
    assert len({len(p) for p in cond + uncond}) > 1  # left padding is exercised
    fast = _run(mm, cond, uncond, SETTINGS[setting])
    slow = _run(mm, cond, uncond, SETTINGS[setting], use_cache=False)
    assert torch.equal(fast.ids, slow.ids)
    assert torch.equal(fast.sequences, slow.sequences)
    assert len(set(fast.ids.flatten().tolist())) > 4  # a context-dependent draw, not a constant


def test_cfg_scale_one_is_conditional_and_zero_is_unconditional(mllm_factory):
    mm = mllm_factory()
    cond, uncond = _prompts(mm)
    for temperature in (0.0, 1.0):
        base = SamplingConfig(temperature=temperature)
        only_cond = _run(mm, cond, None, base, seed=7).ids
        only_uncond = _run(mm, uncond, None, base, seed=7).ids
        s1 = _run(mm, cond, uncond, SamplingConfig(cfg_scale=1.0, temperature=temperature), seed=7).ids
        s0 = _run(mm, cond, uncond, SamplingConfig(cfg_scale=0.0, temperature=temperature), seed=7).ids
        assert torch.equal(s1, only_cond)
        assert torch.equal(s0, only_uncond)
        assert not torch.equal(only_cond, only_uncond)
        strong = _run(mm, cond, uncond, SamplingConfig(cfg_scale=4.0, temperature=temperature), seed=7).ids
        assert not torch.equal(strong, only_cond)


def test_images_hold_only_image_ids_even_when_text_and_specials_would_win(mllm_factory):
    mm = mllm_factory(kind="qwen")
    with torch.no_grad():  # make <eoi> and the other specials overwhelmingly likely in the joint softmax
        mm.image_head.bias[mm.ids.num_image :] = 100.0
        mm.llm.get_output_embeddings().weight.mul_(50.0)
    cond, uncond = _prompts(mm)
    sample = _run(mm, cond, uncond, SamplingConfig(cfg_scale=2.0, temperature=1.0))
    assert sample.ids.shape == (3, 16) and int(sample.ids.min()) >= 0 and int(sample.ids.max()) < mm.ids.num_image
    prompt_len = sample.sequences.shape[1] - 17
    body = sample.sequences[:, prompt_len:]
    assert mm.ids.is_image(body[:, :16]).all() and (body[:, 16] == mm.ids.eoi).all()
    assert (sample.sequences[:, prompt_len - 1] == mm.ids.boi).all()
    assert torch.equal(sample.attention_mask[:, prompt_len:], torch.ones(3, 17, dtype=torch.long))


def test_seeds_reproduce_and_differ(mllm_factory):
    mm = mllm_factory()
    config = SamplingConfig(cfg_scale=2.0, temperature=1.0)
    a = mm.generate_image_ids(CAPTIONS[:2], config, seed=11).ids
    b = mm.generate_image_ids(CAPTIONS[:2], config, seed=11).ids
    c = mm.generate_image_ids(CAPTIONS[:2], config, seed=12).ids
    assert torch.equal(a, b) and not torch.equal(a, c)
    # a row does not depend on what it is batched with (left padding, explicit positions)
    alone = mm.generate_image_ids(CAPTIONS[:1], SamplingConfig(cfg_scale=2.0, temperature=0.0), seed=0).ids
    batched = mm.generate_image_ids(CAPTIONS[:2], SamplingConfig(cfg_scale=2.0, temperature=0.0), seed=0).ids
    assert torch.equal(alone[0], batched[0])


def test_generate_images_decodes_with_the_tokenizer(mllm_factory, tiny_tokenizer):
    mm = mllm_factory()
    images = mm.generate_images(["boot", "bag"], cfg_scale=3.0, seed=0, top_k=10)
    ids = mm.generate_image_ids(["boot", "bag"], SamplingConfig(cfg_scale=3.0, top_k=10), seed=0).ids
    assert images.shape == (2, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(images, tiny_tokenizer.decode(ids), rtol=0, atol=0)
    mm.train()
    mm.generate_images("boot", seed=0)
    assert mm.training  # generation runs in eval mode and restores the mode


def test_guidance_and_filters():
    cond, uncond = torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    torch.testing.assert_close(guide(cond, uncond, 3.0), torch.tensor([[4.0, -2.0, 1.0]]))
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert torch.isinf(filter_top_k(logits, 2)).tolist() == [[False, True, False, True]]
    # softmax([3, 2, 1, 0]) = [.64, .24, .09, .03]: p=0.7 keeps the first two (0.64 < 0.7)
    assert torch.isinf(filter_top_p(logits, 0.7)).tolist() == [[False, True, False, True]]
    assert torch.isinf(filter_top_p(logits, 0.5)).tolist() == [[False, True, True, True]]  # the first always stays
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([draw(logits.expand(4000, 4), SamplingConfig(temperature=1.0), g)]).flatten()
    freq = torch.bincount(draws, minlength=4).float() / 4000
    torch.testing.assert_close(freq, logits.softmax(-1)[0], atol=0.03, rtol=0)
    assert set(draw(logits.expand(500, 4), SamplingConfig(temperature=1.0, top_k=2), g).tolist()) == {0, 2}
    assert draw(logits, SamplingConfig(temperature=0.0), None).item() == 0
    linear = SamplingConfig(cfg_scale=5.0, cfg_schedule="linear")
    assert [linear.scale_at(t, 5) for t in range(5)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert not SamplingConfig(cfg_scale=1.0).guided and math.isclose(SamplingConfig().cfg_scale, 4.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1.0)
