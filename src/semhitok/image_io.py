"""Reading and writing image files, and PSNR, for the command line and scripts.

``load_image`` turns any image PIL can read into a float (3, H, W) tensor in [0, 1] -- the input the
tokenizer expects -- whatever its mode: RGB, RGBA / LA / P with transparency (composited on white),
greyscale, CMYK, 16- and 32-bit integer greyscale (scaled by their bit depth), 1-bit, and with the
EXIF orientation applied, so a phone photo comes out the way it is shown.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = ["load_image", "pil_to_tensor", "psnr", "save_image", "tensor_to_pil"]

# Integer greyscale modes and the full-scale value they are divided by.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def load_image(path: str | Path) -> Tensor:
    """Read an image file into a float32 tensor (3, H, W) in [0, 1].

    Transparent pixels are composited on white; greyscale is repeated over the three channels;
    16-bit images are divided by 65535 (not by their maximum, so a dark frame stays dark).
    Multi-frame files (GIF, TIFF) give their first frame.

    Raises:
        FileNotFoundError: no such file.
        IsADirectoryError: ``path`` is a directory.
        ValueError: the file is not an image PIL can decode (the message names the file).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an image")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_tensor(_exif_upright(im))
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path} is not an image file that can be read ({_reason(exc)})") from exc
    except (OSError, SyntaxError, EOFError) as exc:  # truncated or corrupt data, bad headers
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise ValueError(f"{path} is a damaged or unsupported image ({_reason(exc)})") from exc


def pil_to_tensor(im: Image.Image) -> Tensor:
    """Convert a PIL image of any mode to float32 (3, H, W) in [0, 1] (see :func:`load_image`)."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        # Palette transparency (a transparent index or per-entry alpha) survives only through RGBA.
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im).astype(np.float32) / 65535.0
        return _grey_to_rgb(arr)
    if mode == "I":
        arr = np.asarray(im).astype(np.float64)
        # 32-bit signed storage; 16-bit PNG/TIFF data often arrives in this mode. Scale by the bit
        # depth the values actually need: 16 bits unless some value exceeds it.
        full_scale = 65535.0 if arr.size == 0 or arr.max() <= 65535 else float(2**31 - 1)
        return _grey_to_rgb(np.clip(arr / full_scale, 0.0, 1.0).astype(np.float32))
    if mode == "F":
        arr = np.asarray(im).astype(np.float32)
        if arr.size and not np.isfinite(arr).all():
            raise ValueError("floating-point image contains NaN or inf")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(f"floating-point image has values in [{arr.min():.4g}, {arr.max():.4g}]; only [0, 1] is understood")
        return _grey_to_rgb(arr)
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode == "L":
        return _grey_to_rgb(np.asarray(im).astype(np.float32) / 255.0)
    if mode in _ALPHA_MODES:
        if mode in ("LA", "La"):
            la = np.asarray(im.convert("LA")).astype(np.float32) / 255.0
            rgb, alpha = np.repeat(la[..., :1], 3, axis=-1), la[..., 1:]
        else:
            rgba = np.asarray(im.convert("RGBA")).astype(np.float32) / 255.0
            rgb, alpha = rgba[..., :3], rgba[..., 3:]
        return _hwc_to_tensor(rgb * alpha + (1.0 - alpha))  # "over" a white background
    if mode != "RGB":
        try:
            im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
        except (ValueError, OSError) as exc:
            raise ValueError(f"image mode {mode!r} cannot be converted to RGB") from exc
    return _hwc_to_tensor(np.asarray(im).astype(np.float32) / 255.0)


def tensor_to_pil(image: Tensor) -> Image.Image:
    """Float (3, H, W) or (H, W) in [0, 1] -> 8-bit RGB / L PIL image (values are clamped)."""
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a float tensor in [0, 1], got {image.dtype}")
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if not (image.dim() == 2 or (image.dim() == 3 and image.shape[0] == 3)):
        raise ValueError(f"image must have shape (3, H, W) or (H, W), got {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image contains NaN or inf")
    arr = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
    if arr.ndim == 3:
        return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), mode="RGB")
    return Image.fromarray(arr, mode="L")


def save_image(image: Tensor, path: str | Path) -> None:
    """Write a float (3, H, W) image in [0, 1] as an 8-bit file; the format follows the suffix."""
    tensor_to_pil(image).save(Path(path))


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range² / MSE)`` over all elements.

    ``a`` and ``b`` are images of the same shape on the [0, ``data_range``] scale. Identical
    images give ``inf``.
    """
    if a.shape != b.shape:
        raise ValueError(f"psnr needs images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError("psnr of empty images is undefined")
    mse = float(((a.detach().double() - b.detach().double().to(a.device)) ** 2).mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _exif_upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a damaged EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - unreadable metadata must not make a readable image fail
        return im


def _grey_to_rgb(arr: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).unsqueeze(0).expand(3, -1, -1).contiguous()


def _hwc_to_tensor(arr: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)).clamp_(0.0, 1.0)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
