"""Tiny, offline building blocks for the MLLM tests: a byte-level text tokenizer (with or without a
chat template), tiny random Llama / Qwen2 causal LMs, and the tiny SemHiTok (K=256, m=4, 4x4 grid)."""

from __future__ import annotations

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT_TOKENIZER_LEN = 260  # 256 bytes + 4 specials


def make_text_tokenizer(chat: bool = True):
    """Byte-level BPE without merges: every byte one token, exact decoding, 260 ids."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|bos|>", eos_token="<|im_end|>", pad_token="<|pad|>", extra_special_tokens=["<|im_start|>"]
    )
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    assert len(tok) == TEXT_TOKENIZER_LEN
    return tok


def make_llm(kind: str = "qwen", tied: bool = True, vocab: int | None = None, seed: int = 0):
    """A tiny random causal LM: ``llama`` (head rows = tokenizer length) or ``qwen`` (a padded head
    with more rows than the tokenizer, as Qwen2 has)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab or TEXT_TOKENIZER_LEN, **common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab or 288, **common)).eval()


def make_mllm(tokenizer, kind: str = "qwen", tied: bool = True, chat: bool = True, randomize_head: bool = True, **config):
    """An MLLM on a tiny LLM. ``randomize_head`` gives the image head random weights, as after
    training: at its zero init every image id is equally likely whatever the context."""
    from semhitok.mllm import MLLMConfig, SemHiTokMLLM

    mm = SemHiTokMLLM.from_llm(make_llm(kind, tied), tokenizer, make_text_tokenizer(chat), MLLMConfig(**config))
    if randomize_head:
        with torch.no_grad():
            mm.image_head.weight.normal_(std=0.5)
    return mm.eval()


@pytest.fixture(scope="session")
def tiny_tokenizer() -> SemHiTok:
    torch.manual_seed(0)
    return SemHiTok(SemHiTokConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="session")
def other_tokenizer() -> SemHiTok:
    """Same architecture, other random codebooks."""
    torch.manual_seed(1)
    return SemHiTok(SemHiTokConfig.from_preset("tiny")).eval()


@pytest.fixture
def text_tokenizer_factory():
    return make_text_tokenizer


@pytest.fixture
def llm_factory():
    return make_llm


@pytest.fixture
def mllm_factory(tiny_tokenizer):
    """``mllm_factory(kind=..., tied=..., chat=..., **MLLMConfig fields)`` on the tiny SemHiTok."""
    def build(**kwargs):
        return make_mllm(kwargs.pop("tokenizer", tiny_tokenizer), **kwargs)

    return build
