"""Named outputs of the SemHiTok model."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..quantizers import QuantizerOutput


@dataclass
class SemHiTokEncoding:
    """Tokens of a batch of images; every tensor is long (B, h, w).

    ``ids = semantic_ids * m + pixel_ids`` is the flat vocabulary an LLM sees.
    """

    semantic_ids: Tensor
    pixel_ids: Tensor
    ids: Tensor


@dataclass
class SemanticForwardOutput:
    """Stage-1 forward: teacher features, their quantization and the semantic decoder's output.

    Attributes:
        features: (B, L, D) frozen teacher features (the distillation target).
        quantizer: the semantic codebook's output (ids (B, L), quantized (B, L, d_s), loss).
        reconstruction: (B, L, D) ``D_s(z_q)``.
    """

    features: Tensor
    quantizer: QuantizerOutput
    reconstruction: Tensor


@dataclass
class PixelForwardOutput:
    """Stage-2/3 forward: both quantizations and the reconstructed image.

    Attributes:
        semantic: the semantic codebook's output for the batch.
        pixel: the SGHC output (ids in [0, m) inside each token's semantic sub-codebook).
        reconstruction: (B, 3, H, W) decoded images on the [0, 1] scale, not clamped (for losses).
    """

    semantic: QuantizerOutput
    pixel: QuantizerOutput
    reconstruction: Tensor
