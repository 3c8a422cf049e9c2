"""Next-token cross-entropy over the joint vocabulary, at labelled positions only, chunk by chunk.

A 7B LLM with a 150k text vocabulary and 196,608 image ids has ~350k logits per position: for a
batch of 8 x 2048 tokens that is 23 GB in float32. Only the positions that carry a label need logits
at all, and those are formed in chunks whose logits are recomputed in backward (activation
checkpointing), so the peak is one chunk's logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


@dataclass
class MLLMLossOutput:
    """What :meth:`SemHiTokMLLM.forward` returns.

    Attributes:
        loss: mean negative log-likelihood over the labelled positions (scalar, with grad).
        nll_sum: the sum of the same (with grad), for token-weighted accumulation across batches.
        num_labels: labelled positions in the batch.
        text_nll, image_nll: detached sums over the positions whose target is a text id, and an
            image or special id (for logs: the two tasks' losses apart).
        num_text, num_image: how many positions of each kind.
    """

    loss: Tensor
    nll_sum: Tensor
    num_labels: int
    text_nll: Tensor
    image_nll: Tensor
    num_text: int
    num_image: int


def shifted_targets(labels: Tensor) -> Tensor:
    """(B, T) labels aligned with the inputs -> (B, T) targets of each position's *next* token.

    The last position has no next token and gets ``IGNORE_INDEX`` (as Hugging Face's causal LM loss).
    """
    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, :-1] = labels[:, 1:]
    return out


def chunked_nll(hidden: Tensor, targets: Tensor, logits_fn: Callable[[Tensor], Tensor], chunk: int) -> Tensor:
    """Per-position NLL: (N, hidden) states and (N,) target ids -> (N,) float32.

    ``logits_fn`` maps (n, hidden) -> (n, vocab). With gradients on, each chunk is checkpointed:
    its logits are freed after the forward and recomputed in backward.
    """
    def one(h: Tensor, t: Tensor) -> Tensor:
        return F.cross_entropy(logits_fn(h).float(), t, reduction="none")

    parts = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(one, h, t, use_reentrant=False))
        else:
            parts.append(one(h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def labelled_loss(hidden: Tensor, labels: Tensor, logits_fn: Callable[[Tensor], Tensor], text_vocab: int, chunk: int) -> MLLMLossOutput:
    """Causal LM loss of (B, T, hidden) states against (B, T) labels (``-100`` = no label)."""
    targets = shifted_targets(labels)
    keep = targets != IGNORE_INDEX
    picked_targets = targets[keep]
    nll = chunked_nll(hidden[keep], picked_targets, logits_fn, chunk)
    n = int(nll.numel())
    if n == 0:
        # Nothing labelled (e.g. a batch of prompts only): a zero that still backpropagates.
        zero = hidden.sum() * 0.0
        return MLLMLossOutput(zero, zero, 0, zero.detach(), zero.detach(), 0, 0)
    is_text = picked_targets < text_vocab
    total = nll.sum()
    detached = nll.detach()
    return MLLMLossOutput(
        loss=total / n,
        nll_sum=total,
        num_labels=n,
        text_nll=detached[is_text].sum(),
        image_nll=detached[~is_text].sum(),
        num_text=int(is_text.sum()),
        num_image=int((~is_text).sum()),
    )
