"""What the codes mean: image patches grouped by semantic code and by pixel sub-code (paper Fig. 5).

The gallery keeps the images it was shown (uint8) and, per semantic code, a uniform random sample
(reservoir) of the token positions assigned to it, so any code's patches can be drawn at the end
without a second pass over the data.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class _Reservoir:
    seen: int = 0
    items: list[tuple[int, int, int]] = field(default_factory=list)  # (image, token, sub-code)


class PatchGallery:
    """Collects patches per semantic code from encoded images.

    Args:
        grid_size: side h = w of the token grid.
        patch_size: pixels per token side (image_size / grid_size).
        per_code: how many patches to keep per semantic code (uniform sample of all its tokens).
        seed: the reservoir sampling seed.
    """

    def __init__(self, grid_size: int, patch_size: int, per_code: int = 16, seed: int = 0) -> None:
        if per_code < 1:
            raise ValueError(f"per_code must be >= 1, got {per_code}")
        self.grid_size, self.patch_size, self.per_code = grid_size, patch_size, per_code
        self.images: list[Tensor] = []
        self.semantic_ids: list[Tensor] = []
        self.pixel_ids: list[Tensor] = []
        self._reservoirs: dict[int, _Reservoir] = {}
        self._generator = torch.Generator().manual_seed(seed)

    def update(self, images: Tensor, semantic_ids: Tensor, pixel_ids: Tensor) -> None:
        """images (B, 3, S, S) in [0, 1]; ids (B, h, w) long."""
        g = self.grid_size
        if semantic_ids.shape[1:] != (g, g) or pixel_ids.shape != semantic_ids.shape:
            raise ValueError(f"ids must be (B, {g}, {g}), got {tuple(semantic_ids.shape)} and {tuple(pixel_ids.shape)}")
        if images.shape[-1] != g * self.patch_size:
            raise ValueError(f"images must be {g * self.patch_size} px, got {images.shape[-1]}")
        start = len(self.images)
        for b in range(images.shape[0]):
            self.images.append((images[b].clamp(0, 1) * 255).round().to(torch.uint8).cpu())
            self.semantic_ids.append(semantic_ids[b].cpu())
            self.pixel_ids.append(pixel_ids[b].cpu())
        flat_k = semantic_ids.reshape(semantic_ids.shape[0], -1).cpu().tolist()
        flat_j = pixel_ids.reshape(pixel_ids.shape[0], -1).cpu().tolist()
        for b, (ks, js) in enumerate(zip(flat_k, flat_j)):
            for t, (k, j) in enumerate(zip(ks, js)):
                self._offer(k, (start + b, t, j))

    def _offer(self, code: int, item: tuple[int, int, int]) -> None:
        # Reservoir sampling (Algorithm R): after n offers each one is kept with probability per_code / n.
        r = self._reservoirs.setdefault(code, _Reservoir())
        r.seen += 1
        if len(r.items) < self.per_code:
            r.items.append(item)
            return
        slot = int(torch.randint(r.seen, (1,), generator=self._generator))
        if slot < self.per_code:
            r.items[slot] = item

    def count(self, code: int) -> int:
        """Tokens assigned to ``code`` so far."""
        return self._reservoirs[code].seen if code in self._reservoirs else 0

    def patch(self, image: int, token: int) -> Tensor:
        """(3, p, p) uint8 patch of token ``token`` (row-major) of image ``image``."""
        p, g = self.patch_size, self.grid_size
        row, col = divmod(token, g)
        return self.images[image][:, row * p : (row + 1) * p, col * p : (col + 1) * p]

    def patches(self, code: int) -> list[tuple[Tensor, int]]:
        """The kept (patch, pixel sub-code) pairs of a semantic code."""
        r = self._reservoirs.get(code)
        return [] if r is None else [(self.patch(i, t), j) for i, t, j in r.items]

    def most_used(self, n: int) -> list[int]:
        """The n semantic codes with the most tokens, most used first (ties by code id)."""
        return sorted(self._reservoirs, key=lambda c: (-self._reservoirs[c].seen, c))[:n]


def code_grid(gallery: PatchGallery, codes: list[int], columns: int, scale: int = 2, gap: int = 2) -> Tensor:
    """A (3, H, W) uint8 picture: one row per code, up to ``columns`` of its patches, upscaled."""
    p = gallery.patch_size * scale
    canvas = torch.full((3, len(codes) * (p + gap) + gap, columns * (p + gap) + gap), 255, dtype=torch.uint8)
    for r, code in enumerate(codes):
        for c, (patch, _) in enumerate(gallery.patches(code)[:columns]):
            top, left = gap + r * (p + gap), gap + c * (p + gap)
            canvas[:, top : top + p, left : left + p] = _upscale(patch, scale)
    return canvas


def subcode_grid(gallery: PatchGallery, code: int, subcodebook_size: int, columns: int, scale: int = 2, gap: int = 2) -> Tensor:
    """Patches of one semantic code, one row per pixel sub-code j = 0..m-1 (empty rows: unused)."""
    p = gallery.patch_size * scale
    canvas = torch.full((3, subcodebook_size * (p + gap) + gap, columns * (p + gap) + gap), 255, dtype=torch.uint8)
    filled = [0] * subcodebook_size
    for patch, j in gallery.patches(code):
        if filled[j] >= columns:
            continue
        top, left = gap + j * (p + gap), gap + filled[j] * (p + gap)
        canvas[:, top : top + p, left : left + p] = _upscale(patch, scale)
        filled[j] += 1
    return canvas


def code_colors(num_codes: int) -> Tensor:
    """(K, 3) uint8 distinct-looking colours: golden-ratio hues, two lightness levels."""
    colors = []
    for k in range(num_codes):
        hue = (k * 0.6180339887) % 1.0
        light = 0.45 if k % 2 else 0.65
        colors.append([round(255 * v) for v in colorsys.hls_to_rgb(hue, light, 0.75)])
    return torch.tensor(colors, dtype=torch.uint8)


def code_map(image: Tensor, semantic_ids: Tensor, colors: Tensor, gap: int = 4) -> Tensor:
    """(3, S, 2S + gap) uint8: the image beside its tokens coloured by semantic code."""
    size, g = image.shape[-1], semantic_ids.shape[-1]
    p = size // g
    tiles = colors[semantic_ids.long()].permute(2, 0, 1)  # (3, g, g)
    painted = tiles.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)
    separator = torch.full((3, size, gap), 255, dtype=torch.uint8)
    return torch.cat([image, separator, painted], dim=-1)


def _upscale(patch: Tensor, scale: int) -> Tensor:
    return patch.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
