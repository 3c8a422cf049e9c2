"""Shared test setup: no hub access, a fixed RNG state at the start of every test, and the tiny
offline text parts every MLLM test builds on (a byte-level text tokenizer, tiny random LLMs)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_offline():
    """Every test starts offline and from the same torch RNG state."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.manual_seed(0)
    yield


# ---- tiny offline text parts for the MLLM tests ---------------------------------------------------
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


@pytest.fixture(scope="session")
def text_tokenizer_factory():
    """``text_tokenizer_factory(chat=True)``: the byte-level tokenizer (260 ids)."""
    return make_text_tokenizer


@pytest.fixture(scope="session")
def llm_factory():
    """``llm_factory(kind="qwen"|"llama", tied=True, vocab=None, seed=0)``: a tiny random causal LM."""
    return make_llm
