"""Image transforms for training: any PIL image -> float (3, S, S) in [0, 1].

Resize (shorter side to S, aspect kept), then a center or random S x S crop, then an optional
horizontal flip. Decoding and mode handling (RGBA, palette, greyscale, CMYK, 16-bit, EXIF, ...) are
:func:`semhitok.image_io.decode_image`'s, the resize and crop are
:func:`semhitok.modeling.images.fit_to_size`'s, so training sees exactly the pixels
``semhitok encode`` sees: a center crop without flip *is* ``fit_to_size(decode_image(file))``. Every random decision draws from an explicit ``torch.Generator``: datasets seed one per
sample from (seed, epoch, sample) so the augmentation of an image does not depend on which worker
or rank loaded it, and a resumed run repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from semhitok.image_io import pil_to_tensor
from semhitok.modeling.images import crop_target, fit_to_size

__all__ = ["CROP_MODES", "ImageTransform", "TransformConfig"]

CROP_MODES = ("center", "random")


@dataclass(frozen=True)
class TransformConfig:
    """What :class:`ImageTransform` does.

    Attributes:
        image_size: side S of the square output.
        crop: ``"center"`` (evaluation) or ``"random"`` (training augmentation).
        flip: flip horizontally with probability 1/2.
    """

    image_size: int = 256
    crop: str = "center"
    flip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {', '.join(CROP_MODES)}, got {self.crop!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be true or false, got {self.flip!r}")

    @property
    def is_random(self) -> bool:
        """Whether the transform needs a generator."""
        return self.crop == "random" or self.flip


class ImageTransform:
    """Callable ``(image, generator) -> (3, S, S)`` float tensor in [0, 1]."""

    def __init__(self, config: TransformConfig) -> None:
        if not isinstance(config, TransformConfig):
            raise TypeError(f"config must be a TransformConfig, got {type(config).__name__}")
        self.config = config

    def __repr__(self) -> str:
        return f"ImageTransform({self.config})"

    def __call__(self, image: Image.Image | Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Transform one image.

        Args:
            image: a PIL image of any mode, or a float tensor (3, H, W) in [0, 1].
            generator: source of randomness; required when the crop is random or flip is on.

        Returns:
            float32 tensor (3, S, S) in [0, 1].
        """
        if self.config.is_random and generator is None:
            raise ValueError("a random crop or flip needs an explicit torch.Generator (for reproducible runs)")
        x = pil_to_tensor(image) if isinstance(image, Image.Image) else image
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] != 3 or not x.is_floating_point():
            raise ValueError(f"expected a PIL image or a float tensor (3, H, W), got {getattr(x, 'shape', type(x))}")
        size = self.config.image_size
        h, w = x.shape[-2:]
        if self.config.crop == "center":
            offset = None  # fit_to_size's centre
        else:
            # Offsets are drawn in the grid fit_to_size resizes to, so the crop is one of its squares.
            th, tw = crop_target(h, w, size)
            offset = (int(torch.randint(0, th - size + 1, (1,), generator=generator)),
                      int(torch.randint(0, tw - size + 1, (1,), generator=generator)))
        x = fit_to_size(x.unsqueeze(0), size, "crop", offset=offset).squeeze(0)
        if self.config.flip and bool(torch.rand((), generator=generator) < 0.5):
            x = x.flip(-1)
        return x.contiguous()
