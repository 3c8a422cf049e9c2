"""Stage-2 pixel branch: the ViT pixel encoder ``E_p`` and the ViT pixel decoder ``D_p``."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from ..config import ViTConfig
from .vit import ViTTrunk


class PixelEncoder(nn.Module):
    """Images in [-1, 1] (B, 3, H, W) -> pixel features (B, L, d_p) on the semantic token grid."""

    def __init__(self, cfg: ViTConfig, patch_size: int, grid_size: int, out_dim: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, cfg.width, kernel_size=patch_size, stride=patch_size)
        self.trunk = ViTTrunk(cfg, grid_size * grid_size)
        self.proj_out = nn.Linear(cfg.width, out_dim)

    def forward(self, images: Tensor) -> Tensor:
        x = rearrange(self.patch_embed(images), "b c h w -> b (h w) c")
        return self.proj_out(self.trunk(x))


class PixelDecoder(nn.Module):
    """Token features (B, L, c_in) -> images in [-1, 1] scale (B, 3, H, W), not clamped.

    With ``prefix_dim > 0`` the decoder also reads a prefix of L more tokens of ``prefix_dim``
    channels (the semantic tokens, concatenated along the *length*): both are projected to the
    width, the trunk runs on 2L tokens (learned positions tell the halves apart) and the image is
    read off the last L, the pixel tokens.
    """

    def __init__(self, cfg: ViTConfig, patch_size: int, grid_size: int, in_dim: int, prefix_dim: int = 0) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = grid_size
        self.proj_in = nn.Linear(in_dim, cfg.width)
        self.proj_in_prefix = nn.Linear(prefix_dim, cfg.width) if prefix_dim > 0 else None
        self.trunk = ViTTrunk(cfg, grid_size * grid_size * (2 if prefix_dim > 0 else 1))
        self.proj_out = nn.Linear(cfg.width, patch_size * patch_size * 3)

    def forward(self, tokens: Tensor, prefix: Tensor | None = None) -> Tensor:
        """``tokens`` (B, L, in_dim); ``prefix`` (B, L, prefix_dim) exactly when built with one."""
        if (prefix is None) != (self.proj_in_prefix is None):
            raise ValueError("this pixel decoder " + ("needs" if prefix is None else "takes no") + " a prefix (length concat)")
        x = self.proj_in(tokens)
        if self.proj_in_prefix is not None:
            x = torch.cat([self.proj_in_prefix(prefix), x], dim=1)
        x = self.proj_out(self.trunk(x)[:, -tokens.shape[1] :])
        return rearrange(
            x, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid_size, p=self.patch_size, q=self.patch_size, c=3
        )
