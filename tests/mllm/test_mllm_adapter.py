"""The input side: Dual-MLP adapter on the tokenizer's frozen codebooks (paper §3.3, Tab. 7 variants)."""

from __future__ import annotations

import pytest
import torch

from semhitok.mllm import ImageAdapter


def _all_image_ids(k: int, m: int) -> torch.Tensor:
    return torch.arange(k * m)


def test_dual_adapter_is_two_mlps_on_the_codebook_vectors_concatenated(mllm_factory, tiny_tokenizer):
    mm = mllm_factory(adapter="dual")
    a = mm.adapter
    flat = _all_image_ids(256, 4)
    k, j = flat // 4, flat % 4
    z_q = tiny_tokenizer.semantic_quantizer.lookup(k)  # exactly what the tokenizer decodes from
    p_q = tiny_tokenizer.pixel_quantizer.lookup(k, j)
    expected = torch.cat([a.semantic_mlp(z_q), a.pixel_mlp(p_q)], dim=-1)
    got = a.image_embeddings(flat)
    assert got.shape == (1024, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # two halves: the first 16 channels depend on k only, the last 16 on (k, j)
    assert torch.equal(got[0, :16], got[1, :16]) and not torch.equal(got[0, 16:], got[1, 16:])


def test_single_table_and_semantic_variants(mllm_factory, tiny_tokenizer):
    single = mllm_factory(adapter="single").adapter
    flat = torch.tensor([0, 5, 1023])
    z_q = tiny_tokenizer.semantic_quantizer.lookup(flat // 4)
    p_q = tiny_tokenizer.pixel_quantizer.lookup(flat // 4, flat % 4)
    torch.testing.assert_close(single.image_embeddings(flat), single.mlp(torch.cat([z_q, p_q], -1)), rtol=0, atol=0)
    table = mllm_factory(adapter="table").adapter
    assert table.table.weight.shape == (1024, 32)
    assert torch.equal(table.image_embeddings(flat), table.table.weight[flat])
    semantic = mllm_factory(adapter="semantic").adapter
    torch.testing.assert_close(semantic.image_embeddings(flat), semantic.mlp(z_q), rtol=0, atol=0)
    # the pixel sub-code is not read: the m ids of one semantic code share one embedding
    same_k = semantic.image_embeddings(torch.tensor([20, 21, 22, 23]))
    torch.testing.assert_close(same_k, same_k[:1].expand(4, -1))


def test_codebooks_are_frozen_buffers_outside_the_state_dict(mllm_factory, tiny_tokenizer):
    a = mllm_factory().adapter
    names = {n for n, _ in a.named_parameters()}
    assert not any("codebook" in n for n in names)
    assert not any("codebook" in k for k in a.state_dict())
    assert torch.equal(a.semantic_codebook, tiny_tokenizer.semantic_quantizer.codebook)
    assert torch.equal(a.pixel_codebook, tiny_tokenizer.pixel_quantizer.codebook)
    # a copy: the tokenizer's weights are not shared storage the adapter could move
    assert a.pixel_codebook.data_ptr() != tiny_tokenizer.pixel_quantizer.weight.data_ptr()


def test_dual_widths_and_bad_shapes():
    sem, pix = torch.randn(8, 4), torch.randn(8, 2, 3)
    a = ImageAdapter("dual", sem, pix, hidden_size=10, semantic_width=3)
    assert a.image_embeddings(torch.tensor([0, 15])).shape == (2, 10)
    assert a.semantic_mlp[2].out_features == 3 and a.pixel_mlp[2].out_features == 7
    with pytest.raises(ValueError, match="semantic_width must lie in"):
        ImageAdapter("dual", sem, pix, hidden_size=10, semantic_width=10)
    with pytest.raises(ValueError, match="same K"):
        ImageAdapter("dual", sem, torch.randn(7, 2, 3), hidden_size=10)


def test_embed_routes_text_image_and_special_ids(mllm_factory):
    mm = mllm_factory(kind="qwen")
    ids = mm.ids
    seq = torch.tensor([[5, 259, ids.image_start, ids.image_start + 1023, ids.boi, ids.eoi, ids.uncond]])
    out = mm.embed(seq)
    table = mm.llm.get_input_embeddings().weight
    assert torch.equal(out[0, 0], table[5]) and torch.equal(out[0, 1], table[259])
    # the MLPs ran on 7 rows here and on 2 below: BLAS may sum in another order for another row count
    torch.testing.assert_close(out[0, 2:4], mm.adapter.image_embeddings(torch.tensor([0, 1023])))
    assert torch.equal(out[0, 4:], mm.adapter.special)
    with pytest.raises(ValueError, match="input_ids must lie in"):
        mm.embed(torch.tensor([[ids.total]]))
