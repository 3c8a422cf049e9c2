"""A tiny MLLM trained a few steps on the shipped slice (shared by the MLLM evaluation tests), and
the reference the batched teacher-forced NLL is checked against."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from semhitok.training.mllm_config import MLLMTrainConfig
from semhitok.training.mllm_loop import train_mllm

SLICE = Path(__file__).resolve().parents[2] / "src" / "semhitok" / "assets" / "colour-fashion-mnist-mini"


@pytest.fixture(scope="session")
def trained(tmp_path_factory, llm_factory, text_tokenizer_factory) -> Path:
    """A tiny random Llama with the shipped mini SemHiTok, 6 mixed steps: its exported folder."""
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
    with torch.random.fork_rng(devices=[]):
        result = train_mllm(config, root / "run", quiet=True)
    return result.model_dir


@pytest.fixture(scope="session")
def reference_image_nll():
    """The reference NLL function (see :func:`_reference_image_nll`)."""
    return _reference_image_nll


@pytest.fixture(scope="session")
def mini_slice() -> Path:
    """The colour Fashion-MNIST slice shipped in the package."""
    return SLICE


def _reference_image_nll(mm, caption: str | None, ids: torch.Tensor) -> torch.Tensor:
    """-log softmax over the joint vocabulary at each image id and ``<eoi>`` of one unpadded
    generation sequence (None: the unconditional prompt): (h*w + 1,)."""
    seq = mm.format.generation(caption, ids.flatten())
    input_ids = torch.tensor([seq.input_ids])
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        hidden = mm.hidden_states(mm.embed(input_ids), mask, torch.arange(input_ids.shape[1])[None])[0]
        logp = torch.log_softmax(mm.joint_logits(hidden).float(), dim=-1)
    labels = torch.tensor(seq.labels)
    at = (labels[1:] != -100).nonzero().flatten()  # position t predicts label t + 1
    return -logp[at, labels[1:][at]]
