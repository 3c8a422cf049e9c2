"""Batch statistics of code assignments."""

from __future__ import annotations

import torch
from torch import Tensor


def perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of a histogram of code counts; 1 means one code, K means uniform."""
    total = counts.sum()
    if total <= 0:
        return counts.new_tensor(0.0, dtype=torch.float32)
    p = counts.float() / total
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return entropy.exp()
