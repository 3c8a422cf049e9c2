"""Named output of every quantizer in this package."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    Attributes:
        quantized: (..., d) the chosen codes, carrying the straight-through gradient to the input.
        ids: (...) long, index of the chosen code (for a hierarchical quantizer: inside the parent's
            sub-codebook, in [0, m)).
        loss: scalar, the weighted sum of ``codebook_loss`` and ``commitment_loss``.
        commitment_loss: scalar, unweighted ``||z - sg(z_q)||^2`` (mean over elements).
        codebook_loss: scalar, unweighted ``||sg(z) - z_q||^2``; zero for EMA codebooks, which are
            not trained by gradient.
        perplexity: scalar, ``exp(entropy)`` of the code histogram of this batch (this rank only).
        usage: scalar in [0, 1], the fraction of codes this batch used (hierarchical: the mean over
            the parents present in the batch of the fraction of their m sub-codes used).
    """

    quantized: Tensor
    ids: Tensor
    loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor
    perplexity: Tensor
    usage: Tensor
