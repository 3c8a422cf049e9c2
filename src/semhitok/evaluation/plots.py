"""Codebook usage plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

import torch
from torch import Tensor


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def usage_plots_png(semantic_counts: Tensor, pair_counts: Tensor | None = None) -> bytes:
    """PNG bytes of three panels: tokens per code (sorted, log-log: usage vs rank), a histogram of
    tokens per used code, and (with ``pair_counts`` (K, m)) how many sub-codes each used code uses."""
    plt = _figure()
    counts = semantic_counts.double().cpu()
    used = counts[counts > 0]
    panels = 3 if pair_counts is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), dpi=110)
    ranked = torch.sort(counts, descending=True).values
    ranked = ranked[ranked > 0]
    axes[0].loglog(torch.arange(1, len(ranked) + 1).numpy(), ranked.numpy(), color="#1f77b4")
    axes[0].set(title=f"usage vs rank ({len(used)} of {len(counts)} codes used)", xlabel="rank", ylabel="tokens")
    axes[1].hist(used.numpy(), bins=min(50, max(5, len(used) // 4)), color="#ff7f0e", log=True)
    axes[1].set(title="tokens per used semantic code", xlabel="tokens", ylabel="codes")
    if pair_counts is not None:
        m = pair_counts.shape[1]
        per_parent = (pair_counts[counts > 0] > 0).sum(dim=1)
        hist = torch.bincount(per_parent, minlength=m + 1)
        axes[2].bar(range(m + 1), hist.numpy(), color="#2ca02c")
        axes[2].set(title="sub-codes used per used code", xlabel=f"used sub-codes (of m={m})", ylabel="semantic codes")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
