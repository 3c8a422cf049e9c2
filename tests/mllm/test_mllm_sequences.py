"""Sequence formats (chat template and plain) and the collator's unconditional swap (paper §3.3:
captions replaced by the unconditional prompt with probability 0.1, as sampling prompts it)."""

from __future__ import annotations

import math

import pytest
import torch

from semhitok.mllm import IGNORE_INDEX, MLLMCollator, MLLMExample, SamplingConfig


def _ids(mm, text):
    return mm.text_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_chat_format_of_each_kind(mllm_factory):
    mm = mllm_factory(chat=True)
    fmt, ids = mm.format, mm.ids
    img = torch.arange(16) * 7
    user = _ids(mm, "<|im_start|>user\n")
    assistant = _ids(mm, "<|im_end|>\n<|im_start|>assistant\n")
    end = _ids(mm, "<|im_end|>\n")

    und = fmt.understanding(img, "what?", "a boot")
    block = [ids.boi, *(ids.text_vocab + img).tolist(), ids.eoi]
    prompt = user + block + _ids(mm, "\nwhat?") + assistant
    assert und.input_ids == prompt + _ids(mm, "a boot") + end
    assert und.labels == [IGNORE_INDEX] * len(prompt) + _ids(mm, "a boot") + end  # the answer and its end of turn only

    gen = fmt.generation("a red boot", img.view(4, 4))
    prompt = user + _ids(mm, "a red boot") + assistant + [ids.boi]
    assert gen.input_ids == prompt + (ids.text_vocab + img).tolist() + [ids.eoi]
    assert gen.labels == [IGNORE_INDEX] * len(prompt) + (ids.text_vocab + img).tolist() + [ids.eoi]
    assert fmt.generation_prompt("a red boot") == prompt
    assert fmt.generation_prompt(None) == user + [ids.uncond] + assistant + [ids.boi]

    txt = fmt.text("hi", "hello")
    assert txt.input_ids == user + _ids(mm, "hi") + assistant + _ids(mm, "hello") + end
    assert sum(label != IGNORE_INDEX for label in txt.labels) == len(_ids(mm, "hello") + end)


def test_plain_format_without_a_chat_template(mllm_factory):
    mm = mllm_factory(kind="llama", tied=False, chat=False)
    fmt, ids = mm.format, mm.ids
    bos, eos = mm.text_tokenizer.bos_token_id, mm.text_tokenizer.eos_token_id
    gen = fmt.generation("boot", torch.zeros(16, dtype=torch.long))
    assert gen.input_ids[:6] == [bos, *_ids(mm, "boot"), *_ids(mm, "\n")] and gen.input_ids[6] == ids.boi
    assert fmt.generation_prompt(None) == [bos, ids.uncond, *_ids(mm, "\n"), ids.boi]
    und = fmt.understanding(torch.zeros(16, dtype=torch.long), "q", "yes")
    assert und.input_ids[-4:] == [*_ids(mm, "yes"), eos] and und.labels[-4:] == und.input_ids[-4:]
    doc = fmt.text("plain text")
    assert doc.input_ids == [bos, *_ids(mm, "plain text"), eos] and doc.labels == doc.input_ids


def test_max_text_tokens_cuts_user_text_only(mllm_factory):
    mm = mllm_factory(max_text_tokens=3)
    full = mllm_factory().format.generation_prompt("a long caption")
    cut = mm.format.generation_prompt("a long caption")
    assert len(full) - len(cut) == len(_ids(mm, "a long caption")) - 3


def test_unconditional_swap_rate_and_seeding(mllm_factory):
    mm = mllm_factory()
    img = torch.zeros(16, dtype=torch.long)
    n = 4000
    examples = [MLLMExample("generation", "cap", img) for _ in range(n)]
    sigma = math.sqrt(0.1 * 0.9 / n)
    col = MLLMCollator(mm.format, uncond_prob=0.1, seed=0)
    swaps = torch.tensor([col.swap(e) for e in examples])
    assert abs(swaps.float().mean() - 0.1) < 4 * sigma
    again = MLLMCollator(mm.format, uncond_prob=0.1, seed=0)
    assert torch.equal(swaps, torch.tensor([again.swap(e) for e in examples]))  # seeded
    other = MLLMCollator(mm.format, uncond_prob=0.1, seed=1)
    assert not torch.equal(swaps, torch.tensor([other.swap(e) for e in examples]))
    # keyed decisions: a function of (seed, key) alone, whatever was drawn before
    keyed = [MLLMExample("generation", "cap", img, key=i) for i in range(n)]
    a = torch.tensor([col.swap(e) for e in keyed])
    b = torch.tensor([MLLMCollator(mm.format, uncond_prob=0.1, seed=0).swap(e) for e in keyed])
    assert torch.equal(a, b) and abs(a.float().mean() - 0.1) < 4 * sigma
    # only generation samples are ever swapped; rates 0 and 1 are exact
    assert not any(MLLMCollator(mm.format, uncond_prob=1.0).swap(MLLMExample("understanding", "q", img, "a")) for _ in range(10))
    assert all(MLLMCollator(mm.format, uncond_prob=1.0).swap(e) for e in examples[:50])
    assert not any(MLLMCollator(mm.format, uncond_prob=0.0).swap(e) for e in examples[:50])


def test_image_noise_replaces_generation_inputs_only_and_repeats_per_key(mllm_factory):
    """Noise touches only the image ids a generation row reads (never its labels, its prompt, its
    <eoi>, or an understanding row), at the asked rate, and is a function of (seed, key)."""
    mm = mllm_factory()
    g = torch.Generator().manual_seed(0)
    rows = [MLLMExample("generation", "a red coat", torch.randint(0, 1024, (16,), generator=g), key=i) for i in range(200)]
    rows.append(MLLMExample("understanding", "what?", torch.randint(0, 1024, (16,), generator=g), answer="a coat", key=999))
    clean = MLLMCollator(mm.format, uncond_prob=0.2, seed=3)(rows)
    noisy = MLLMCollator(mm.format, uncond_prob=0.2, seed=3, image_noise=0.3)(rows)
    assert torch.equal(noisy.labels, clean.labels) and torch.equal(noisy.attention_mask, clean.attention_mask)
    assert torch.equal(noisy.uncond, clean.uncond)
    changed = noisy.input_ids != clean.input_ids
    readable = (clean.labels != IGNORE_INDEX) & mm.ids.is_image(clean.input_ids)
    assert not (changed & ~readable).any()  # prompts, <eoi>, padding untouched
    assert not changed[-1].any()  # the understanding row
    assert mm.ids.is_image(noisy.input_ids[changed]).all()
    rate = changed[:-1].sum() / readable[:-1].sum()
    assert abs(float(rate) - 0.3 * (1 - 1 / 1024)) < 0.02  # a draw may hit the true id (1 in K*m)
    # per key: the same row gets the same noise in another batch and order
    alone = MLLMCollator(mm.format, uncond_prob=0.2, seed=3, image_noise=0.3)([rows[7]])
    assert torch.equal(alone.input_ids[0], noisy.input_ids[7, : alone.input_ids.shape[1]])
    with pytest.raises(ValueError, match="image_noise"):
        MLLMCollator(mm.format, image_noise=1.5)


def test_swapped_rows_use_exactly_the_sampling_template(mllm_factory, monkeypatch):
    mm = mllm_factory()
    img = torch.randint(0, 1024, (16,))
    batch = MLLMCollator(mm.format, uncond_prob=0.5, seed=3)([MLLMExample("generation", f"caption {i}", img) for i in range(12)])
    assert 0 < int(batch.uncond.sum()) < 12
    captured = {}

    def fake_sampler(model, prompts, uncond_prompts, *args, **kwargs):
        captured["cond"], captured["uncond"] = prompts, uncond_prompts
        raise RuntimeError("captured")

    monkeypatch.setattr("semhitok.mllm.model.sample_image_ids", fake_sampler)
    with pytest.raises(RuntimeError, match="captured"):
        mm.generate_image_ids(["caption 0"], SamplingConfig(cfg_scale=3.0), seed=0)
    uncond_prompt = captured["uncond"][0]
    for row in range(12):
        seq = batch.input_ids[row, batch.attention_mask[row] == 1].tolist()
        labels = batch.labels[row, batch.attention_mask[row] == 1].tolist()
        prompt = seq[: labels.index(mm.ids.image_start + int(img[0]))]
        if batch.uncond[row]:
            assert prompt == uncond_prompt and mm.ids.uncond in seq
        else:
            assert prompt == mm.format.generation_prompt(f"caption {row}") and mm.ids.uncond not in seq
    assert captured["cond"][0] == mm.format.generation_prompt("caption 0")


def test_collator_pads_both_sides_and_keeps_state(mllm_factory):
    mm = mllm_factory()
    img = torch.zeros(16, dtype=torch.long)
    ex = [MLLMExample("text", "a"), MLLMExample("generation", "cap", img)]
    right = MLLMCollator(mm.format, pad_to_multiple_of=8)(ex)
    left = MLLMCollator(mm.format, padding_side="left")(ex)
    assert right.input_ids.shape[1] % 8 == 0
    assert right.attention_mask[0, 0] == 1 and right.attention_mask[0, -1] == 0
    assert left.attention_mask[0, 0] == 0 and left.attention_mask[0, -1] == 1
    assert (right.labels[right.attention_mask == 0] == IGNORE_INDEX).all()
    col = MLLMCollator(mm.format, seed=5)
    state = col.state_dict()
    first = [col.swap(MLLMExample("generation", "c", img)) for _ in range(64)]
    col.load_state_dict(state)
    assert first == [col.swap(MLLMExample("generation", "c", img)) for _ in range(64)]
    with pytest.raises(ValueError, match="uncond_prob must lie in"):
        MLLMCollator(mm.format, uncond_prob=1.5)
    with pytest.raises(ValueError, match="answer must be given"):
        MLLMExample("understanding", "q", img)
    with pytest.raises(ValueError, match="image_ids must be given"):
        MLLMExample("generation", "q")


def test_text_chat_sequences_match_the_template_rendered_whole(mllm_factory):
    """Inserting content between the template's prefix and suffix gives the tokens of the whole
    rendered conversation: the LLM sees its chat format exactly as in its own training."""
    mm = mllm_factory(chat=True, system_prompt="Be brief.")
    tok = mm.text_tokenizer
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]
    rendered = tok.apply_chat_template(conversation, tokenize=False)
    assert mm.format.text("hi there", "hello").input_ids == tok(rendered, add_special_tokens=False)["input_ids"]
    prompt = tok.apply_chat_template(conversation[:2], tokenize=False, add_generation_prompt=True)
    assert mm.format.generation_prompt("hi there")[:-1] == tok(prompt, add_special_tokens=False)["input_ids"]
