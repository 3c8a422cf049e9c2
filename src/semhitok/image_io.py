"""Reading and writing image files, and PSNR, for the command line, the datasets and scripts.

:func:`decode_image` is the one decoder: a file path or the encoded bytes (e.g. a webdataset tar
member) -> a float (3, H, W) tensor in [0, 1] -- the input the tokenizer expects -- whatever its
mode: RGB, RGBA / LA / P with transparency (composited on white), greyscale, CMYK, 16- and 32-bit
integer greyscale (scaled by their bit depth), 1-bit, and with the EXIF orientation applied, so a
phone photo comes out the way it is shown. The same bytes give the same tensor from a folder or a
tar shard. :func:`load_image` is its file-path form.

Decoding is bounded, so a hostile or broken file costs a clear error, not the machine:

* only regular files are opened (a FIFO would block ``open`` forever, a device never ends); the
  check is an ``os.stat`` before opening;
* the size in the header is checked before any pixel is decoded: at most :data:`MAX_IMAGE_PIXELS`
  pixels and :data:`MAX_IMAGE_SIDE` pixels a side (a 370-byte PNG can declare 100000 x 1 or
  50000 x 50000 pixels);
* the aspect ratio is at most :data:`MAX_ASPECT_RATIO`: fitting an image to the model resizes its
  shorter side to the model size, so a 100000 x 1 strip fitted to 64 px would need a
  6,400,000 x 64 intermediate image (5.3 GB). :func:`semhitok.modeling.fit_to_size` enforces the
  same bound on tensors.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from struct import error as struct_error
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from semhitok.file_kind import FOLDER, MISSING, REGULAR, file_kind

__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "ImageSizeError",
    "NotRegularFileError",
    "check_image_shape",
    "check_regular_file",
    "decode_image",
    "load_image",
    "pil_to_tensor",
    "psnr",
    "save_image",
    "tensor_to_pil",
]

# Decoding bounds. 2**26 pixels (e.g. 8192 x 8192) is a 805 MB float tensor; larger photos are
# rare in tokenizer data and are refused rather than allowed to exhaust a DataLoader worker.
MAX_IMAGE_PIXELS = 2**26
MAX_IMAGE_SIDE = 2**15
# Web banners reach ~11:1 and panoramas ~10:1; 64:1 keeps every plausible photo while bounding the
# resize intermediate of fit_to_size at 64 x size^2 pixels.
MAX_ASPECT_RATIO = 64

_BOUNDS = f"at most {MAX_IMAGE_SIDE} pixels a side and {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels are decoded"

# Integer greyscale modes and the full-scale value they are divided by.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

ImageSource = str | Path | bytes | bytearray | memoryview


class NotRegularFileError(ValueError):
    """A FIFO, socket or device was given where an image (or shard) file is expected."""


class ImageSizeError(ValueError):
    """An image beyond the decoding bounds (pixels, side, aspect ratio)."""


def decode_image(source: ImageSource, *, name: str | None = None) -> Tensor:
    """Decode an image file or its encoded bytes into a float32 tensor (3, H, W) in [0, 1].

    Transparent pixels are composited on white; greyscale is repeated over the three channels;
    16-bit images are divided by 65535 (not by their maximum, so a dark frame stays dark).
    Multi-frame files (GIF, TIFF) give their first frame. The EXIF orientation is applied.

    Args:
        source: a path, or the bytes of an encoded image (PNG, JPEG, ...).
        name: how error messages call the bytes (default ``<bytes>``); ignored for paths.

    Raises:
        FileNotFoundError: no such file.
        IsADirectoryError: ``source`` is a directory.
        PermissionError: the file cannot be opened.
        ValueError: not a regular file (FIFO, device, socket), not an image PIL can decode, or
            beyond the size bounds of this module; the message names the file and is one line.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), name or "<bytes>")
    path = Path(source)
    check_regular_file(path)
    with open(path, "rb") as fp:  # PermissionError and other OS errors propagate as OSError
        return _decode(fp, str(path))


def load_image(path: str | Path) -> Tensor:
    """Read an image file into a float32 tensor (3, H, W) in [0, 1]: :func:`decode_image` of a path."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        raise TypeError("load_image takes a path; use decode_image for encoded bytes")
    return decode_image(path)


def check_regular_file(path: str | Path) -> None:
    """Raise unless ``path`` is a regular file (following symlinks), without opening it.

    ``open()`` on a FIFO blocks until a writer appears, and a character device such as
    ``/dev/zero`` never ends, so anything but a regular file is refused before it is opened.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: as ``os.stat`` / the file type say.
        NotRegularFileError: a FIFO, socket or device (a ValueError; one line naming the path).
    """
    path = Path(path)
    try:
        kind = file_kind(path)
    except NotADirectoryError:  # a parent component is a file
        kind = MISSING
    if kind == MISSING:
        raise FileNotFoundError(f"{path}: no such file")
    if kind == FOLDER:
        raise IsADirectoryError(f"{path} is a directory, not an image")
    if kind != REGULAR:
        raise NotRegularFileError(f"{path} is {kind}, not a regular file; refusing to read it")


def check_image_shape(height: int, width: int, name: str = "image") -> None:
    """Raise a one-line :class:`ImageSizeError` if a ``height`` x ``width`` image is beyond the bounds."""
    if height < 1 or width < 1:
        raise ImageSizeError(f"{name} has no pixels ({width}x{height})")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE or height * width > MAX_IMAGE_PIXELS:
        raise ImageSizeError(f"{name} is {width}x{height} pixels; {_BOUNDS}")
    long_side, short_side = max(height, width), min(height, width)
    if long_side > MAX_ASPECT_RATIO * short_side:
        raise ImageSizeError(
            f"{name} is {width}x{height} pixels: an aspect ratio of {long_side / short_side:.0f}:1 is beyond the "
            f"supported {MAX_ASPECT_RATIO}:1 (resizing its shorter side to the model's size would make the other {long_side // short_side} times that)"
        )


def _decode(fp: BinaryIO, name: str) -> Tensor:
    """The one decoding path: header size check, bounded decode, EXIF orientation, mode conversion."""
    try:
        with warnings.catch_warnings():
            # PIL only *warns* between its own pixel limit and twice that; a warning would be a
            # second stderr line, and the bound checked below is tighter anyway.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                width, height = im.size
                check_image_shape(height, width, name)  # before load(): no pixel allocated yet
                im.load()
                # Converted inside the with block: a closed PIL image no longer gives its pixels.
                upright = _exif_upright(im)
                pixels, problem = _convert(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own limit, checked inside Image.open, is looser than ours: the same refusal.
        raise ImageSizeError(f"{name} is too large to decode ({_reason(exc)}); {_BOUNDS}") from exc
    except UnidentifiedImageError as exc:
        # PIL's text names the file object, not the file; the name is already in front.
        raise ValueError(f"{name} is not an image file that can be read (no image format recognised)") from exc
    except ImageSizeError:
        raise
    except (OSError, SyntaxError, EOFError, IndexError, TypeError, ValueError, struct_error) as exc:
        # Truncated or corrupt data, bad headers (PIL raises all of these for damaged files).
        raise ValueError(f"{name} is a damaged or unsupported image ({_reason(exc)})") from exc
    if pixels is None:
        raise ValueError(f"{name}: {problem}")
    return pixels


def _convert(im: Image.Image) -> tuple[Tensor | None, str]:
    """pil_to_tensor, with its refusal (an unusable mode or range) returned instead of raised."""
    try:
        return pil_to_tensor(im), ""
    except ValueError as exc:
        return None, _reason(exc)


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
