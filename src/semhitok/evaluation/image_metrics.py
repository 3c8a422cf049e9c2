"""Per-image reconstruction metrics: PSNR, SSIM, LPIPS, bits per image, and a streaming meter.

All image metrics take two batches ``a`` (originals) and ``b`` (reconstructions) of shape
(B, 3, H, W) (any channel count works for PSNR and SSIM) on the [0, ``data_range``] scale and
return one value per image, a float64 tensor of shape (B,). Dataset numbers are the mean of the
per-image values (see :class:`ReconstructionMeter`), the usual protocol of tokenizer papers.

Conventions
-----------
PSNR
    ``10 log10(data_range² / MSE)`` with the MSE over all channels and pixels of one image, computed
    in float64. Identical images give ``+inf`` (and a dataset mean containing one is ``+inf``).
    Per image it equals :func:`semhitok.image_io.psnr` applied to that image alone.
SSIM
    Wang et al. (2004): 11x11 Gaussian window, sigma 1.5 (normalised separable weights
    ``exp(-x²/(2 sigma²))`` for x in -5..5), ``C1 = (0.01 R)²``, ``C2 = (0.03 R)²``, population
    (not sample) covariances. The SSIM map is computed on the *valid* region only (no padding:
    an (H-10) x (W-10) map), averaged per channel, then the channel means are averaged. This equals
    ``skimage.metrics.structural_similarity(x, y, channel_axis=-1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=R)`` (scikit-image filters the whole image
    with reflect padding and then crops the 5-pixel border, which leaves exactly the valid region).
    Images must be at least 11x11. Computed in float64.
LPIPS
    :class:`LPIPSMetric` wraps a :class:`~semhitok.losses.PerceptualLoss` and returns its per-image
    ``distance`` without gradient; with the VGG16 backbone and LPIPS's heads it is LPIPS-VGG.
Bits per image
    :func:`bits_per_image`: the code length of a fixed-length stream of ``num_tokens`` tokens, each
    an index into a vocabulary of ``vocab_size`` ids, stored with no entropy coding:
    ``num_tokens * log2(vocab_size)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses.perceptual import PerceptualLoss

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "LPIPSMetric",
    "ReconstructionMeter",
    "bits_per_image",
    "gaussian_window",
    "psnr",
    "ssim",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(a: Tensor, b: Tensor, name: str) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name} needs two tensors")
    if a.shape != b.shape:
        raise ValueError(f"{name} needs batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() != 4:
        raise ValueError(f"{name} needs (B, C, H, W) batches, got shape {tuple(a.shape)}")
    if a.numel() == 0:
        raise ValueError(f"{name} of empty images is undefined")


@torch.no_grad()
def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB of two (B, C, H, W) batches: float64 (B,); ``inf`` where identical."""
    _check_pair(a, b, "psnr")
    diff = a.detach().double() - b.detach().double().to(a.device)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(torch.as_tensor(float(data_range) ** 2, dtype=torch.float64, device=mse.device) / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype: torch.dtype = torch.float64) -> Tensor:
    """Normalised 1-D Gaussian weights of length ``size`` (odd), centred, standard deviation ``sigma``."""
    if size < 1 or size % 2 != 1:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _filter_valid(x: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filter of (N, 1, H, W) without padding -> (N, 1, H-s+1, W-s+1)."""
    s = window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, s))
    return F.conv2d(x, window.view(1, 1, s, 1))


@torch.no_grad()
def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM of two (B, C, H, W) batches: float64 (B,) (see the module doc for the convention)."""
    _check_pair(a, b, "ssim")
    batch, channels, height, width = a.shape
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {height}x{width}")
    x = a.detach().double().reshape(batch * channels, 1, height, width)
    y = b.detach().double().to(a.device).reshape(batch * channels, 1, height, width)
    window = gaussian_window().to(x.device)
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=0)
    filtered = _filter_valid(stacked, window)
    n = x.shape[0]
    mu_x, mu_y, xx, yy, xy = (filtered[i * n : (i + 1) * n] for i in range(5))
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per_channel = ssim_map.flatten(1).mean(dim=1).view(batch, channels)
    return per_channel.mean(dim=1)


class LPIPSMetric(nn.Module):
    """Per-image LPIPS distances from a frozen :class:`~semhitok.losses.PerceptualLoss`.

    ``metric(a, b)`` returns ``perceptual.distance(a, b)[0]`` (B,) computed under ``no_grad`` with the
    loss in eval mode; its parameters never require a gradient. ``a`` and ``b`` are (B, 3, H, W) in
    [0, 1]. For LPIPS-VGG build ``PerceptualLoss(vgg_weights=FILE)`` (heads from torchmetrics); any
    other backbone gives an LPIPS-style distance, which should be labelled as such.

    Args:
        perceptual: the loss whose ``distance`` is reported.
        max_batch: score at most this many image pairs per backbone call (bounds memory for
            large images); ``None`` scores the whole batch at once. The result does not depend on it.
    """

    def __init__(self, perceptual: PerceptualLoss, max_batch: int | None = None) -> None:
        super().__init__()
        if not isinstance(perceptual, PerceptualLoss):
            raise TypeError(f"LPIPSMetric needs a PerceptualLoss, got {type(perceptual).__name__}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer or None, got {max_batch}")
        self.max_batch = max_batch
        self.perceptual = perceptual
        self.perceptual.requires_grad_(False)
        self.perceptual.eval()

    def train(self, mode: bool = True) -> LPIPSMetric:
        """Always in eval mode (frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """(B, 3, H, W) x 2 in [0, 1] -> per-image distance (B,) (float32, detached)."""
        if self.max_batch is None or a.shape[0] <= self.max_batch:
            return self.perceptual.distance(a, b)[0].detach()
        parts = [
            self.perceptual.distance(a[i : i + self.max_batch], b[i : i + self.max_batch])[0]
            for i in range(0, a.shape[0], self.max_batch)
        ]
        return torch.cat(parts).detach()


def bits_per_image(num_tokens: int, vocab_size: int) -> float:
    """``num_tokens * log2(vocab_size)``: the length in bits of a fixed-length token stream.

    Each of the ``num_tokens`` tokens of an image is an index into ``vocab_size`` ids, stored
    without entropy coding (e.g. a 16x16 grid over K*m = 196,608 ids: 256 * 17.58 = 4500.8 bits).
    """
    if int(num_tokens) != num_tokens or num_tokens < 0:
        raise ValueError(f"num_tokens must be a non-negative integer, got {num_tokens}")
    if int(vocab_size) != vocab_size or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size}")
    return float(num_tokens) * math.log2(int(vocab_size))


class ReconstructionMeter:
    """Streaming dataset means of per-image PSNR, SSIM and (optionally) LPIPS.

    ``update(originals, reconstructions)`` scores one batch and adds its per-image values to running
    float64 sums; ``compute()`` returns ``{"psnr", "ssim", "lpips" (only with an LPIPS metric),
    "num_images", "psnr_infinite"}``: the means over all images seen so far, the number of images,
    and how many images were reconstructed exactly (infinite PSNR; any such image makes the PSNR
    mean ``inf``). ``merge(other)`` adds another meter's sums (distributed evaluation).

    Args:
        lpips: an :class:`LPIPSMetric`, a :class:`~semhitok.losses.PerceptualLoss` (wrapped), or
            ``None`` to skip LPIPS.
        data_range: the value range of the images (1.0 for [0, 1]).
    """

    def __init__(
        self,
        lpips: LPIPSMetric | PerceptualLoss | Callable[[Tensor, Tensor], Tensor] | None = None,
        data_range: float = 1.0,
    ) -> None:
        if isinstance(lpips, PerceptualLoss):
            lpips = LPIPSMetric(lpips)
        self.lpips = lpips
        self.data_range = float(data_range)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.num_images = 0
        self.psnr_infinite = 0
        self.sums: dict[str, float] = {"psnr": 0.0, "ssim": 0.0}
        if self.lpips is not None:
            self.sums["lpips"] = 0.0

    def update(self, originals: Tensor, reconstructions: Tensor) -> dict[str, Tensor]:
        """Score one batch; returns its per-image values ``{"psnr", "ssim"[, "lpips"]}`` (each (B,))."""
        values = {
            "psnr": psnr(originals, reconstructions, self.data_range),
            "ssim": ssim(originals, reconstructions, self.data_range),
        }
        if self.lpips is not None:
            with torch.no_grad():
                values["lpips"] = self.lpips(originals, reconstructions).detach().double()
        for name, v in values.items():
            self.sums[name] += float(v.sum())
        self.psnr_infinite += int(torch.isinf(values["psnr"]).sum())
        self.num_images += int(originals.shape[0])
        return values

    def merge(self, other: ReconstructionMeter) -> ReconstructionMeter:
        """Add ``other``'s images to this meter (in place); returns ``self``."""
        if set(other.sums) != set(self.sums):
            raise ValueError(f"cannot merge meters with metrics {sorted(self.sums)} and {sorted(other.sums)}")
        for name in self.sums:
            self.sums[name] += other.sums[name]
        self.num_images += other.num_images
        self.psnr_infinite += other.psnr_infinite
        return self

    def compute(self) -> dict[str, float]:
        """Means over every image seen (``nan`` before any update) and the counts."""
        result: dict[str, float] = {}
        for name, total in self.sums.items():
            result[name] = total / self.num_images if self.num_images else math.nan
        result["num_images"] = self.num_images
        result["psnr_infinite"] = self.psnr_infinite
        return result
