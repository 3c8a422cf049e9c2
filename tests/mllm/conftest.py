"""Tiny, offline building blocks for the MLLM tests: MLLMs on the tiny LLMs of tests/conftest.py and
the tiny SemHiTok (K=256, m=4, 4x4 grid)."""

from __future__ import annotations

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig


def make_mllm(tokenizer, make_llm, make_text_tokenizer, kind: str = "qwen", tied: bool = True, chat: bool = True, randomize_head: bool = True, **config):
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
def mllm_factory(tiny_tokenizer, llm_factory, text_tokenizer_factory):
    """``mllm_factory(kind=..., tied=..., chat=..., **MLLMConfig fields)`` on the tiny SemHiTok."""
    def build(**kwargs):
        return make_mllm(kwargs.pop("tokenizer", tiny_tokenizer), llm_factory, text_tokenizer_factory, **kwargs)

    return build
