"""Flattening of the hierarchical (semantic, pixel) id pair into one vocabulary: ``id = k*m + j``."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_long(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")


def flatten_ids(semantic_ids: Tensor, pixel_ids: Tensor, subcodebook_size: int) -> Tensor:
    """Map (semantic id k, pixel sub-code j) to the flat id ``k * m + j`` (long, same shape)."""
    _check_long("semantic_ids", semantic_ids)
    _check_long("pixel_ids", pixel_ids)
    if semantic_ids.shape != pixel_ids.shape:
        raise ValueError(
            f"semantic_ids {tuple(semantic_ids.shape)} and pixel_ids {tuple(pixel_ids.shape)} differ in shape"
        )
    if subcodebook_size < 1:
        raise ValueError(f"subcodebook_size must be >= 1, got {subcodebook_size}")
    if pixel_ids.numel() and (int(pixel_ids.min()) < 0 or int(pixel_ids.max()) >= subcodebook_size):
        raise ValueError(f"pixel_ids must lie in [0, {subcodebook_size}), got [{int(pixel_ids.min())}, {int(pixel_ids.max())}]")
    if semantic_ids.numel() and int(semantic_ids.min()) < 0:
        raise ValueError(f"semantic_ids must be >= 0, got {int(semantic_ids.min())}")
    return semantic_ids.long() * subcodebook_size + pixel_ids.long()


def unflatten_ids(ids: Tensor, subcodebook_size: int) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`flatten_ids`: returns ``(ids // m, ids % m)``."""
    _check_long("ids", ids)
    if subcodebook_size < 1:
        raise ValueError(f"subcodebook_size must be >= 1, got {subcodebook_size}")
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f"ids must be >= 0, got {int(ids.min())}")
    ids = ids.long()
    return torch.div(ids, subcodebook_size, rounding_mode="floor"), ids % subcodebook_size
