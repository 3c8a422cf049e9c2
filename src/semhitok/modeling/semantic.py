"""Stage-1 modules around the semantic codebook: the projection head and the semantic decoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ViTConfig
from .vit import ViTTrunk


class SemanticHead(nn.Module):
    """MLP from teacher features (B, L, D) to codebook space (B, L, d_s)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(features)))


class SemanticDecoder(nn.Module):
    """``D_s``: transformer from quantized codes (B, L, d_s) back to teacher space (B, L, D)."""

    def __init__(self, cfg: ViTConfig, code_dim: int, out_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(code_dim, cfg.width)
        self.trunk = ViTTrunk(cfg, num_tokens)
        self.proj_out = nn.Linear(cfg.width, out_dim)

    def forward(self, z_q: Tensor) -> Tensor:
        return self.proj_out(self.trunk(self.proj_in(z_q)))
