"""Statistics of code assignments."""

from __future__ import annotations

import torch
from torch import Tensor


def perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of a histogram of code counts (any shape), as a float64 scalar tensor:
    1 when one code takes everything, K for a uniform histogram over K codes, 0 when empty."""
    counts = counts.detach().reshape(-1).double()
    total = counts.sum()
    if total <= 0:
        return counts.new_zeros(())
    p = counts[counts > 0] / total
    return torch.exp(-(p * p.log()).sum())
