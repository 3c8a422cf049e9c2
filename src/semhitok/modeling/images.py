"""Checks and the size policy for images handed to the tokenizer."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..image_io import check_image_shape

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


def crop_target(height: int, width: int, size: int) -> tuple[int, int]:
    """The (H', W') a ``crop`` fit resizes to: shorter side ``size``, aspect ratio kept.

    ``max(size, ...)`` guards against rounding the longer side below the crop size. Training
    draws its random crop offsets in this grid, so it is exposed rather than recomputed there.
    """
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def fit_to_size(images: Tensor, size: int, policy: ResizePolicy = "crop", offset: tuple[int, int] | None = None) -> Tensor:
    """Bring (B, 3, H, W) images to (B, 3, size, size): the one resize of the project.

    Encoding, evaluation, visualisation and the training transform all call this, with one
    interpolation (bicubic, antialiased), so a model sees the same pixels in training as in use.

    Policies for images whose size differs:
      - ``crop`` (default): resize so the shorter side is ``size`` (see :func:`crop_target`), then
        take the square at ``offset`` = (top, left) in the resized grid, by default the centre
        (when a margin is odd, the extra pixel is cut from the bottom/right). Keeps the aspect
        ratio, loses the borders of non-square images. An image whose shorter side already is
        ``size`` is only cropped, not interpolated.
      - ``stretch``: resize both sides to ``size``; keeps everything, distorts the aspect ratio.
      - ``error``: raise ValueError.
    Images already of the right size are returned unchanged.

    Raises:
        ValueError: an unknown policy, an offset outside the resized image or with a policy
            other than ``crop``, or (``ImageSizeError``) an aspect ratio beyond
            :data:`semhitok.image_io.MAX_ASPECT_RATIO` -- its resize would need an intermediate
            image ``aspect`` times the model size squared (a 100000 x 1 strip: 5.3 GB).
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    if offset is not None and policy != "crop":
        raise ValueError(f"a crop offset only applies to resize='crop', not {policy!r}")
    h, w = images.shape[-2:]
    if (h, w) == (size, size) and offset in (None, (0, 0)):
        return images
    if policy == "error":
        raise ValueError(f"images are {h}x{w} but the model takes {size}x{size} (use resize='crop' or 'stretch')")
    check_image_shape(h, w, f"a {w}x{h} image")
    target = (size, size) if policy == "stretch" else crop_target(h, w, size)
    out = images
    if target != (h, w):
        out = F.interpolate(images, size=target, mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    if policy == "crop":
        top, left = offset if offset is not None else ((target[0] - size) // 2, (target[1] - size) // 2)
        if not (0 <= top <= target[0] - size and 0 <= left <= target[1] - size):
            raise ValueError(f"crop offset {(top, left)} lies outside the {target[0]}x{target[1]} resized image")
        out = out[..., top : top + size, left : left + size]
    return out
