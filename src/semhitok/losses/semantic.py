"""Stage-1 loss: distil the frozen teacher's features through the semantic codebook."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SemanticLossConfig

if TYPE_CHECKING:
    from ..modeling.outputs import SemanticForwardOutput


class SemanticDistillationLoss(nn.Module):
    """``cosine_weight * mean(1 - cos(D_s(z_q), f)) + l1_weight * mean|D_s(z_q) - f| + commitment``.

    The cosine is taken per token over the feature dim D and averaged over the B*L tokens. The
    teacher features ``f`` are the target and are detached: no gradient ever reaches the teacher.
    ``commitment`` is the quantizer's own ``loss`` (already weighted by its beta; the EMA codebook's
    codebook term is zero). Everything is computed in float32 whatever the autocast dtype.

    Args:
        config: the two weights (default ``SemanticLossConfig()``: cosine 1, L1 0). An L1 weight
            of 0 disables that term; it is still reported, without graph.
    """

    def __init__(self, config: SemanticLossConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else SemanticLossConfig()
        if not isinstance(config, SemanticLossConfig):
            raise TypeError(f"SemanticDistillationLoss needs a SemanticLossConfig, got {type(config).__name__}")
        self.cosine_weight = config.cosine_weight
        self.l1_weight = config.l1_weight

    def forward(self, out: SemanticForwardOutput) -> dict[str, Tensor]:
        """Loss terms of one stage-1 forward.

        Args:
            out: ``reconstruction`` (B, L, D) = ``D_s(z_q)``, ``features`` (B, L, D) teacher target,
                ``quantizer.loss`` scalar.

        Returns:
            scalar tensors ``loss`` (the weighted total), ``cosine``, ``l1``, ``commitment``.
        """
        prediction = out.reconstruction.float()
        target = out.features.detach().float()
        if prediction.shape != target.shape:
            raise ValueError(
                f"reconstruction {tuple(prediction.shape)} and teacher features "
                f"{tuple(target.shape)} must have the same shape (B, L, D)"
            )
        cosine = (1.0 - F.cosine_similarity(prediction, target, dim=-1, eps=1e-8)).mean()
        if self.l1_weight > 0:
            l1 = (prediction - target).abs().mean()
        else:
            with torch.no_grad():
                l1 = (prediction - target).abs().mean()
        commitment = out.quantizer.loss.float()
        loss = self.cosine_weight * cosine + self.l1_weight * l1 + commitment
        return {"loss": loss, "cosine": cosine, "l1": l1, "commitment": commitment}
