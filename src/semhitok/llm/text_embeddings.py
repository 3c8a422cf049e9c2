"""Caption embeddings from a frozen causal LM: the locked text tower of the mini-world's teacher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


@torch.no_grad()
def caption_embeddings(captions: Sequence[str], model: Any, tokenizer: Any, batch_size: int = 64) -> Tensor:
    """Mean of the LM's last hidden states over each caption's tokens: float32 (N, hidden).

    A causal LM has no [CLS] token; the mean over positions is the usual sentence embedding for
    decoder-only models (padding positions are excluded by the attention mask).
    """
    if not captions:
        raise ValueError("no captions to embed")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    body = getattr(model, "model", model)  # the decoder stack without the LM head
    out = []
    for start in range(0, len(captions), batch_size):
        batch = tokenizer(list(captions[start : start + batch_size]), return_tensors="pt", padding=True)
        hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * mask).sum(1) / mask.sum(1)).float())
    return torch.cat(out)
