"""Next-token cross-entropy over the joint vocabulary, at labelled positions only, chunk by chunk.

A 7B LLM with a 150k text vocabulary and 196,608 image ids has ~350k logits per position: for a
batch of 8 x 2048 tokens that is 23 GB in float32. Only the positions that carry a label need logits
at all. Those are formed in chunks and, where all of them would be large, each chunk's logits are
recomputed in backward (activation checkpointing), so the peak is one chunk's logits. The text and
image logits are never concatenated: the softmax's normaliser is combined from the two parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
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


LogitsFn = Callable[[Tensor], "Tensor | Sequence[Tensor]"]

# Logits of every labelled position are kept for backward up to this size; beyond it each chunk's
# logits are recomputed in backward instead (one chunk's at a time in memory). At the mini MLLM's
# size (16 samples x 65 labels x 57k vocabulary: 240 MB) keeping them skips the head's recomputed
# forward (the whole step showed no gain beyond noise on a 2-core CPU: benchmarks/BENCHMARKS.md);
# a 7B LLM's batch (8 x 2048 x 350k: 23 GB) is recomputed.
KEEP_LOGITS_BYTES = 1 << 30


def part_nll(parts: Sequence[Tensor], targets: Tensor) -> Tensor:
    """Cross-entropy over a vocabulary given in consecutive parts: (n, V_1), (n, V_2), ... logits
    and (n,) targets in [0, V_1 + V_2 + ...) -> (n,) float32 NLL, without concatenating the parts.

    ``logsumexp`` over all parts minus the target's logit, i.e. ``F.cross_entropy`` on the
    concatenation (tested against it).
    """
    parts = [p.float() for p in parts]
    lse = parts[0].logsumexp(dim=-1)
    for p in parts[1:]:
        lse = torch.logaddexp(lse, p.logsumexp(dim=-1))
    picked = torch.zeros_like(lse)
    start = 0
    for p in parts:
        inside = (targets >= start) & (targets < start + p.shape[-1])
        index = (targets - start).clamp(0, p.shape[-1] - 1).unsqueeze(-1)
        picked = torch.where(inside, p.gather(-1, index).squeeze(-1), picked)
        start += p.shape[-1]
    return lse - picked


def chunked_nll(hidden: Tensor, targets: Tensor, logits_fn: LogitsFn, chunk: int, recompute: bool | None = None) -> Tensor:
    """Per-position NLL: (N, hidden) states and (N,) target ids -> (N,) float32.

    ``logits_fn`` maps (n, hidden) -> (n, vocab) logits, or to the vocabulary's consecutive parts
    (see :func:`part_nll`). With gradients on and ``recompute`` (None: when all N positions' logits
    would take more than :data:`KEEP_LOGITS_BYTES`), each chunk is checkpointed: its logits are
    freed after the forward and recomputed in backward.
    """
    def one(h: Tensor, t: Tensor) -> Tensor:
        return part_nll(_as_parts(logits_fn(h)), t)

    if recompute is None and torch.is_grad_enabled() and hidden.shape[0]:
        with torch.no_grad():  # the vocabulary's size, from one position's logits
            vocab = sum(p.shape[-1] for p in _as_parts(logits_fn(hidden[:1].detach())))
        recompute = hidden.shape[0] * vocab * 4 > KEEP_LOGITS_BYTES
    parts = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled() and recompute:
            parts.append(checkpoint(one, h, t, use_reentrant=False))
        else:
            parts.append(one(h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _as_parts(logits: Tensor | Sequence[Tensor]) -> Sequence[Tensor]:
    return [logits] if isinstance(logits, Tensor) else logits


def labelled_loss(hidden: Tensor, labels: Tensor, logits_fn: LogitsFn, text_vocab: int, chunk: int) -> MLLMLossOutput:
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
