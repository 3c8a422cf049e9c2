"""Stage-2 pixel branch: the ViT pixel encoder ``E_p`` and the ViT pixel decoder ``D_p``."""

from __future__ import annotations

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
    """Token features (B, L, c_in) -> images in [-1, 1] scale (B, 3, H, W), not clamped."""

    def __init__(self, cfg: ViTConfig, patch_size: int, grid_size: int, in_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = grid_size
        self.proj_in = nn.Linear(in_dim, cfg.width)
        self.trunk = ViTTrunk(cfg, grid_size * grid_size)
        self.proj_out = nn.Linear(cfg.width, patch_size * patch_size * 3)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.proj_out(self.trunk(self.proj_in(tokens)))
        return rearrange(
            x, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid_size, p=self.patch_size, q=self.patch_size, c=3
        )
