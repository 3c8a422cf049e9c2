"""Codebook usage of a SemHiTok tokenizer, accumulated over a dataset.

:class:`CodebookUsage` counts, over every token seen, how often each semantic code ``k`` (of K)
and each pair ``(k, j)`` (pixel sub-code j of m inside k's sub-codebook) was chosen. From the
counts it reports:

``num_tokens``
    tokens seen.
``semantic_used``, ``semantic_usage``, ``dead_semantic_codes``
    semantic codes chosen at least once, that number / K, and K minus it.
``semantic_perplexity``
    ``exp(H)`` of the semantic histogram, H the entropy in nats: K for uniform use, 1 for one code.
``flat_used``, ``flat_usage``, ``flat_perplexity``
    the same over the K*m flat ids ``k*m + j`` (the vocabulary an LLM sees).
``subcodebook_usage``
    the mean, over *used* semantic codes, of (sub-codes used in that code's sub-codebook) / m.
``subcode_histogram``
    a list of m+1 counts: entry n is the number of used semantic codes that used exactly n of
    their m sub-codes (entry 0 is always 0: a used code used at least one sub-code).
``dead_subcodes``
    sub-codes never chosen inside the sub-codebooks of used semantic codes (unused semantic
    codes' sub-codebooks are not counted: they cannot be reached).
``top_semantic_codes``
    the ``top_n`` most used semantic codes as ``[code, count]`` pairs, most used first (ties by
    lower code), codes never used left out -- the codes a gallery shows.

Ratios are 0.0 when nothing has been counted yet. All counts are int64 tensors on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..quantizers.stats import perplexity

__all__ = ["CodebookUsage", "histogram_perplexity"]


def histogram_perplexity(counts: Tensor) -> float:
    """``exp(entropy)`` of a histogram of counts (any shape; computed in float64); 0.0 if empty."""
    return float(perplexity(counts))


class CodebookUsage:
    """Accumulates semantic and (semantic, pixel) code counts over batches.

    Args:
        codebook_size: K, the number of semantic codes.
        subcodebook_size: m, the number of pixel sub-codes per semantic code.
    """

    def __init__(self, codebook_size: int, subcodebook_size: int) -> None:
        if int(codebook_size) != codebook_size or codebook_size < 1:
            raise ValueError(f"codebook_size must be a positive integer, got {codebook_size}")
        if int(subcodebook_size) != subcodebook_size or subcodebook_size < 1:
            raise ValueError(f"subcodebook_size must be a positive integer, got {subcodebook_size}")
        self.codebook_size = int(codebook_size)
        self.subcodebook_size = int(subcodebook_size)
        self.reset()

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> CodebookUsage:
        """An empty accumulator sized for a tokenizer with ``codebook_size`` and ``subcodebook_size``."""
        return cls(tokenizer.codebook_size, tokenizer.subcodebook_size)

    def reset(self) -> None:
        """Forget all counts."""
        self.pair_counts = torch.zeros(self.codebook_size, self.subcodebook_size, dtype=torch.long)

    @property
    def semantic_counts(self) -> Tensor:
        """(K,) int64: how often each semantic code was chosen."""
        return self.pair_counts.sum(dim=1)

    @property
    def num_tokens(self) -> int:
        return int(self.pair_counts.sum())

    def update(self, semantic_ids: Tensor, pixel_ids: Tensor) -> None:
        """Count one batch of ids of any (equal) shape: semantic in [0, K), pixel in [0, m)."""
        if not isinstance(semantic_ids, Tensor) or not isinstance(pixel_ids, Tensor):
            raise TypeError("semantic_ids and pixel_ids must be tensors")
        if semantic_ids.shape != pixel_ids.shape:
            raise ValueError(
                f"semantic_ids and pixel_ids must have the same shape, got "
                f"{tuple(semantic_ids.shape)} and {tuple(pixel_ids.shape)}"
            )
        ids = (semantic_ids, pixel_ids)
        if any(t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool for t in ids):
            raise TypeError(f"ids must be integer tensors, got {semantic_ids.dtype} and {pixel_ids.dtype}")
        if semantic_ids.numel() == 0:
            return
        k = semantic_ids.detach().reshape(-1).long().cpu()
        j = pixel_ids.detach().reshape(-1).long().cpu()
        if int(k.min()) < 0 or int(k.max()) >= self.codebook_size:
            raise ValueError(
                f"semantic ids must lie in [0, {self.codebook_size}), got [{int(k.min())}, {int(k.max())}]"
            )
        if int(j.min()) < 0 or int(j.max()) >= self.subcodebook_size:
            raise ValueError(
                f"pixel ids must lie in [0, {self.subcodebook_size}), got [{int(j.min())}, {int(j.max())}]"
            )
        flat = k * self.subcodebook_size + j
        counts = torch.bincount(flat, minlength=self.codebook_size * self.subcodebook_size)
        self.pair_counts += counts.view(self.codebook_size, self.subcodebook_size)

    def merge(self, other: CodebookUsage) -> CodebookUsage:
        """Add ``other``'s counts to this accumulator (in place); returns ``self``."""
        if (other.codebook_size, other.subcodebook_size) != (self.codebook_size, self.subcodebook_size):
            raise ValueError(
                f"cannot merge a (K={other.codebook_size}, m={other.subcodebook_size}) accumulator into "
                f"a (K={self.codebook_size}, m={self.subcodebook_size}) one"
            )
        self.pair_counts += other.pair_counts
        return self

    def all_reduce(self, group: Any = None) -> CodebookUsage:
        """Sum the counts over all ranks of ``torch.distributed`` (no-op when not initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend(group)
            on_gpu = backend == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
            counts = self.pair_counts.to(device)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
            self.pair_counts = counts.cpu()
        return self

    def compute(self, top_n: int = 16) -> dict[str, Any]:
        """The statistics of the module doc, as plain Python numbers and lists (JSON-ready)."""
        K, m = self.codebook_size, self.subcodebook_size
        pairs = self.pair_counts
        semantic = pairs.sum(dim=1)
        used = semantic > 0
        semantic_used = int(used.sum())
        flat_used = int((pairs > 0).sum())
        subs_used = (pairs[used] > 0).sum(dim=1)  # per used semantic code, in [1, m]
        histogram = torch.bincount(subs_used, minlength=m + 1)
        order = torch.sort(semantic, descending=True, stable=True).indices[: max(int(top_n), 0)]
        top = [[int(c), int(semantic[c])] for c in order if int(semantic[c]) > 0]
        return {
            "codebook_size": K,
            "subcodebook_size": m,
            "num_tokens": int(semantic.sum()),
            "semantic_used": semantic_used,
            "semantic_usage": semantic_used / K,
            "dead_semantic_codes": K - semantic_used,
            "semantic_perplexity": histogram_perplexity(semantic),
            "flat_used": flat_used,
            "flat_usage": flat_used / (K * m),
            "flat_perplexity": histogram_perplexity(pairs),
            "subcodebook_usage": float(subs_used.double().mean()) / m if semantic_used else 0.0,
            "subcode_histogram": [int(c) for c in histogram],
            "dead_subcodes": semantic_used * m - flat_used,
            "top_semantic_codes": top,
        }
