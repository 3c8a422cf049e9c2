"""The shared head cat([lm_head(h), image_head(h)]), its step-0 init, and the chunked loss at
labelled positions only, on tiny Llama (untied, head = tokenizer length) and Qwen2 (tied, padded head)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from semhitok.mllm import IGNORE_INDEX, MLLMCollator, MLLMExample
from semhitok.mllm import loss as loss_module
from semhitok.mllm.loss import part_nll

CASES = [("llama", False, False), ("llama", True, True), ("qwen", True, True), ("qwen", False, False)]


def _text_batch(mm):
    examples = [MLLMExample("text", "a red ankle boot on a white floor"), MLLMExample("text", "bag", answer="a blue leather bag")]
    return MLLMCollator(mm.format).__call__(examples)


@pytest.mark.parametrize(("kind", "tied", "chat"), CASES)
def test_step0_text_loss_is_the_plain_llms_within_the_head_init_bound(mllm_factory, kind, tied, chat):
    mm = mllm_factory(kind=kind, tied=tied, chat=chat, randomize_head=False)
    batch = _text_batch(mm)
    with torch.no_grad():
        ours = mm(**batch.model_inputs()).loss
        plain = mm.llm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        text_logits = mm.llm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    # The image head adds (K*m + 3) * exp(bias) ~ 1 to every position's partition function.
    extra = mm.ids.head_size * math.exp(-math.log(mm.ids.num_image))
    z = text_logits.float().exp().sum(-1)[:, :-1][batch.labels[:, 1:] != IGNORE_INDEX]
    expected_gap = torch.log1p(extra / z).mean()
    torch.testing.assert_close(ours - plain, expected_gap, rtol=1e-3, atol=1e-6)
    assert 0 < float(ours - plain) < 0.01  # "barely moves"


def test_image_head_init_zero_weight_and_bias():
    from semhitok.mllm import ImageHead, ImageIdSpace

    head = ImageHead(16, ImageIdSpace(10, 256, 4))
    assert head.weight.shape == (1027, 16) and not head.weight.any()
    torch.testing.assert_close(head.bias, torch.full((1027,), -math.log(1024)))
    torch.testing.assert_close(head.image_logits(torch.randn(3, 16)), torch.full((3, 1024), -math.log(1024)))
    assert ImageHead(16, ImageIdSpace(10, 256, 4), bias_init=-3.0).bias[0] == -3.0


def _mixed_batch(mm, side="right"):
    img = torch.randint(0, mm.ids.num_image, (16,))
    examples = [
        MLLMExample("understanding", "what is it?", img, "a boot"),
        MLLMExample("generation", "a red boot", torch.randint(0, 1024, (4, 4))),
        MLLMExample("text", "hello", answer="hi there"),
    ]
    return MLLMCollator(mm.format, uncond_prob=0.0, padding_side=side)(examples)


def test_part_nll_equals_cross_entropy_over_the_concatenation():
    g = torch.Generator().manual_seed(0)
    text, image = torch.randn(9, 40, generator=g) * 5, torch.randn(9, 7, generator=g) * 5
    targets = torch.tensor([0, 39, 40, 46, 3, 41, 20, 45, 39])
    torch.testing.assert_close(part_nll([text, image], targets), F.cross_entropy(torch.cat([text, image], -1), targets, reduction="none"))


@pytest.mark.parametrize("keep_bytes", [0, 1 << 30], ids=["recomputed", "kept"])
def test_chunked_loss_equals_full_logits_cross_entropy(mllm_factory, monkeypatch, keep_bytes):
    """Chunked, on the logits' two parts, with the chunks' logits recomputed in backward or kept."""
    monkeypatch.setattr(loss_module, "KEEP_LOGITS_BYTES", keep_bytes)
    mm = mllm_factory(kind="qwen")
    batch = _mixed_batch(mm)
    mm.config.loss_chunk = 3
    out = mm(**batch.model_inputs())
    out.loss.backward()
    chunked_grad = mm.image_head.weight.grad.clone()
    mm.zero_grad()
    hidden = mm.hidden_states(mm.embed(batch.input_ids), batch.attention_mask, (batch.attention_mask.cumsum(-1) - 1).clamp(min=0))
    logits = mm.joint_logits(hidden)[:, :-1]
    assert logits.shape[-1] == mm.ids.total
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    ref.backward()
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked_grad, mm.image_head.weight.grad, rtol=1e-4, atol=1e-7)
    n_text = int(((batch.labels[:, 1:] >= 0) & (batch.labels[:, 1:] < mm.ids.text_vocab)).sum())
    assert out.num_labels == int((batch.labels[:, 1:] != IGNORE_INDEX).sum()) and out.num_text == n_text
    torch.testing.assert_close((out.text_nll + out.image_nll) / out.num_labels, out.loss.detach())


def test_logits_are_formed_only_at_labelled_positions(mllm_factory):
    mm = mllm_factory(kind="llama", tied=False, chat=False)
    batch = _mixed_batch(mm)
    rows = []
    handle = mm.llm.get_output_embeddings().register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    with torch.no_grad():
        out = mm(**batch.model_inputs())
    handle.remove()
    assert sum(rows) == out.num_labels < batch.input_ids.numel() // 2


def test_left_and_right_padding_give_the_same_loss(mllm_factory):
    mm = mllm_factory(kind="qwen")
    torch.manual_seed(3)
    right = _mixed_batch(mm, "right")
    torch.manual_seed(3)
    left = _mixed_batch(mm, "left")
    assert not torch.equal(right.input_ids, left.input_ids)
    with torch.no_grad():
        a, b = mm(**right.model_inputs()), mm(**left.model_inputs())
        alone = [mm(input_ids=right.input_ids[i : i + 1, right.attention_mask[i] == 1], labels=right.labels[i : i + 1, right.attention_mask[i] == 1]) for i in range(3)]
    assert torch.isfinite(b.loss)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.nll_sum, sum(x.nll_sum for x in alone), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["adapter", "lora", "full"])
def test_what_trains_in_each_mode(mllm_factory, mode):
    mm = mllm_factory(kind="llama", tied=True, chat=False, train=mode, lora_rank=2)
    mm.train()
    mm(**_mixed_batch(mm).model_inputs()).loss.backward()
    got = {n for n, p in mm.named_parameters() if p.grad is not None}
    trainable = {n for n, _ in mm.trainable_parameters()}
    assert {"image_head.weight", "image_head.bias", "adapter.special", "adapter.semantic_mlp.0.weight"} <= got
    assert not any(n.startswith("tokenizer.") for n in trainable | got)
    llm_grads = {n for n in got if n.startswith("llm.")}
    if mode == "adapter":
        assert not llm_grads
    elif mode == "lora":
        assert llm_grads and all("lora_" in n for n in llm_grads)
        assert {n for n in trainable if n.startswith("llm.")} == {n for n, _ in mm.named_parameters() if "lora_" in n}
    else:
        assert "llm.model.embed_tokens.weight" in llm_grads and "llm.model.layers.0.mlp.up_proj.weight" in llm_grads
    assert got <= trainable
    assert mm.llm.training and not mm.tokenizer.training  # a frozen LLM still follows train(); the tokenizer never


def test_forward_refuses_bad_labels(mllm_factory):
    mm = mllm_factory()
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="labels must be -100 or lie in"):
        mm(input_ids=ids, labels=torch.tensor([[-5, 2, 3]]))
    with pytest.raises(ValueError, match="needs labels"):
        mm(input_ids=ids)


def test_gradient_checkpointing_of_a_frozen_llm_gives_the_same_gradients(mllm_factory):
    mm = mllm_factory(kind="llama", tied=False, chat=False, train="adapter").train()
    batch = _mixed_batch(mm)
    mm(**batch.model_inputs()).loss.backward()
    plain = {n: p.grad.clone() for n, p in mm.trainable_parameters()}
    mm.zero_grad()
    enable = getattr(mm.llm, "activation_checkpointing_enable", None) or mm.llm.gradient_checkpointing_enable  # the name in transformers 5.x / 4.x
    enable()
    calls = []
    hook = mm.llm.model.layers[0].self_attn.register_forward_hook(lambda *a: calls.append(1))
    mm(**batch.model_inputs()).loss.backward()
    hook.remove()
    assert len(calls) == 2  # the layer ran again in backward: checkpointing is active
    for n, p in mm.trainable_parameters():
        torch.testing.assert_close(p.grad, plain[n], rtol=1e-5, atol=1e-7)
