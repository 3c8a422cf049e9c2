"""Checks and the size policy for images handed to the tokenizer."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ResizePolicy = Literal["crop", "stretch", "error"]
RESIZE_POLICIES = ("crop", "stretch", "error")


def check_images(images: Tensor) -> None:
    """Raise a one-line TypeError/ValueError unless ``images`` is float (B, 3, H, W) in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor in [0, 1], got {images.dtype} (divide uint8 images by 255)")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels in dim 1, got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")


def fit_to_size(images: Tensor, size: int, policy: ResizePolicy = "crop") -> Tensor:
    """Bring (B, 3, H, W) images to (B, 3, size, size).

    Policies for images whose size differs:
      - ``crop`` (default): resize so the shorter side is ``size`` (bicubic, antialiased), then take
        the centre square. Keeps the aspect ratio, loses the borders of non-square images.
      - ``stretch``: resize both sides to ``size``; keeps everything, distorts the aspect ratio.
      - ``error``: raise ValueError.
    Images already of the right size are returned unchanged.
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if policy == "error":
        raise ValueError(f"images are {h}x{w} but the model takes {size}x{size} (use resize='crop' or 'stretch')")
    if policy == "stretch":
        target = (size, size)
    else:
        scale = size / min(h, w)
        target = (max(size, round(h * scale)), max(size, round(w * scale)))
    out = F.interpolate(images, size=target, mode="bicubic", align_corners=False, antialias=True)
    if policy == "crop":
        top = (target[0] - size) // 2
        left = (target[1] - size) // 2
        out = out[..., top : top + size, left : left + size]
    return out.clamp(0.0, 1.0)
