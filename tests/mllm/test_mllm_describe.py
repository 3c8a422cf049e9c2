"""Understanding: answers come from the LLM's own generate(inputs_embeds=...) and hold text ids only."""

from __future__ import annotations

import pytest
import torch

from semhitok.mllm import SemHiTokMLLM


def test_answers_hold_only_tokenizer_text_ids_even_on_a_padded_head(mllm_factory):
    mm = mllm_factory(kind="qwen", tied=False)
    text_len = len(mm.text_tokenizer)
    assert mm.ids.text_vocab > text_len  # a Qwen-like head with rows no token uses
    bonus = torch.zeros(mm.ids.text_vocab)
    bonus[text_len:] = 100.0  # those rows would win every step
    mm.llm.lm_head.register_forward_hook(lambda module, inputs, output: output + bonus)
    ids = torch.randint(0, mm.ids.num_image, (2, 4, 4))
    out = mm.answer_ids(ids, "what is it?", max_new_tokens=6)
    assert out.shape == (2, 6)
    assert int(out.max()) < text_len and int(out.min()) >= 0
    unsuppressed = mm.llm.generate(inputs_embeds=mm.embed(torch.tensor([mm.format.understanding(ids[0], "what is it?").input_ids])), max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert int(unsuppressed.max()) >= text_len  # the check above could have failed


def test_a_row_is_answered_the_same_alone_and_in_a_padded_batch(mllm_factory):
    mm = mllm_factory(kind="llama", tied=False, chat=False)
    ids = torch.randint(0, mm.ids.num_image, (3, 16))
    questions = ["what is it?", "q", "a longer question about the picture"]
    batched = mm.answer_ids(ids, questions, max_new_tokens=6)
    alone = mm.answer_ids(ids[2:], questions[2], max_new_tokens=6)
    assert torch.equal(batched[2], alone[0])
    texts = mm.answer(ids, questions, max_new_tokens=6)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_sampled_answers_follow_the_seed_and_leave_global_rng_alone(mllm_factory):
    mm = mllm_factory(kind="llama", tied=False, chat=False)
    ids = torch.randint(0, mm.ids.num_image, (2, 16))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = mm.answer_ids(ids, "q", max_new_tokens=8, do_sample=True, seed=5)
    after = torch.rand(1)
    b = mm.answer_ids(ids, "q", max_new_tokens=8, do_sample=True, seed=5)
    c = mm.answer_ids(ids, "q", max_new_tokens=8, do_sample=True, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(before, after)


def test_describe_encodes_images_first(mllm_factory, tiny_tokenizer):
    mm = mllm_factory(kind="llama", tied=False, chat=False)
    images = torch.rand(2, 3, 64, 64)
    assert mm.describe(images, max_new_tokens=4) == mm.answer(tiny_tokenizer.encode(images).ids, max_new_tokens=4)
    with pytest.raises(ValueError, match="questions for 2 images"):
        mm.answer(tiny_tokenizer.encode(images).ids, ["a", "b", "c"])


def test_from_llm_needs_a_text_tokenizer_for_a_module(llm_factory, tiny_tokenizer):
    with pytest.raises(ValueError, match="text_tokenizer is required"):
        SemHiTokMLLM.from_llm(llm_factory(), tiny_tokenizer)
