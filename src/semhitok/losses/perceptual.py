"""LPIPS-style perceptual distance with a pluggable, frozen backbone.

For images x, y in [0, 1] (B, 3, H, W):

    u = ((2x - 1) - shift) / scale            shift = (-.030, -.088, -.188), scale = (.458, .448, .450)
    F_k = backbone(u)_k                        k-th feature map (B, C_k, H_k, W_k)
    n_k = F_k / sqrt(eps + sum_c F_k^2)        unit-normalised over channels (eps = 1e-8)
    d(x, y) = sum_k mean_{h,w} sum_c w_{k,c} (n_k(x) - n_k(y))_c^2      w_{k,c} >= 0

which is LPIPS (Zhang et al. 2018) with its ``ScalingLayer``, ``normalize_tensor``, ``NetLinLayer`` and
spatial average. The backbone and the heads are frozen (no gradient, always in eval mode); the
gradient flows to the images.

LPIPS head weights: ``torchmetrics`` ships LPIPS's trained VGG heads as
``torchmetrics/functional/image/lpips_models/vgg.pth`` with keys ``lin{k}.model.1.weight`` of shape
(1, C_k, 1, 1) (``model.0`` is a parameter-free dropout); here they become ``heads.{k}.weight``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .vgg import VGG16Features, read_state_dict

LPIPS_SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)

#: Sentinel for ``head_weights``: take the LPIPS VGG heads from the installed torchmetrics.
TORCHMETRICS_HEADS = "torchmetrics"


def torchmetrics_lpips_head_path(net: str = "vgg") -> Path:
    """Path of LPIPS's trained linear heads inside the installed ``torchmetrics`` (not imported).

    Raises:
        FileNotFoundError: torchmetrics is not installed, or the file is not in it.
    """
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the LPIPS head weights ship inside torchmetrics, which is not installed "
            "(pip install torchmetrics), or pass head_weights=PATH to a vgg.pth file"
        )
    path = Path(spec.origin).parent / "functional" / "image" / "lpips_models" / f"{net}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"torchmetrics is installed but has no LPIPS head file {path}")
    return path


def load_lpips_heads(path: str | Path) -> list[Tensor]:
    """Read LPIPS head weights (``lin{k}.model.1.weight`` (1, C_k, 1, 1), or already-mapped
    ``heads.{k}.weight``) in layer order; the file is read with ``weights_only=True``."""
    state = read_state_dict(path, what="LPIPS head weights file")
    heads: dict[int, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[0].startswith("lin") and parts[1:] == ["model", "1", "weight"]:
            heads[int(parts[0][3:])] = value
        elif len(parts) == 3 and parts[0] == "heads" and parts[2] == "weight":
            heads[int(parts[1])] = value
        else:
            raise ValueError(f"{path}: unexpected key {key!r} in an LPIPS head file")
    if sorted(heads) != list(range(len(heads))):
        raise ValueError(f"{path}: head indices {sorted(heads)} are not 0..{len(heads) - 1}")
    return [heads[k] for k in range(len(heads))]


def normalize_channels(features: Tensor, eps: float = 1e-8) -> Tensor:
    """(B, C, H, W) -> the same divided by ``sqrt(eps + sum_c f^2)`` (LPIPS ``normalize_tensor``)."""
    return features / torch.sqrt(eps + features.pow(2).sum(dim=1, keepdim=True))


class PerceptualLoss(nn.Module):
    """LPIPS-style perceptual loss (see the module doc for the formula).

    Args:
        backbone: a ``FeatureBackbone`` (list of maps + ``channels``); default: ``VGG16Features``.
        vgg_weights: only with the default backbone, a torchvision-format VGG16 file (else random).
        head_weights: ``"torchmetrics"`` (LPIPS's trained VGG heads from the installed torchmetrics),
            a path to a head file, or ``None`` for all-ones heads (plain squared distance of the
            unit-normalised features). ``"auto"`` (default): ``"torchmetrics"`` for the default VGG
            backbone, ``None`` for a custom backbone.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        *,
        vgg_weights: str | Path | None = None,
        head_weights: str | Path | None = "auto",
    ) -> None:
        super().__init__()
        if backbone is None:
            backbone = VGG16Features(vgg_weights)
            if head_weights == "auto":
                head_weights = TORCHMETRICS_HEADS
        elif vgg_weights is not None:
            raise ValueError("vgg_weights applies only to the default VGG16 backbone")
        if head_weights == "auto":
            head_weights = None
        channels = getattr(backbone, "channels", None)
        if channels is None or len(channels) == 0:
            raise ValueError("the backbone must expose `channels`, its output channel counts")
        self.backbone = backbone
        self.channels: tuple[int, ...] = tuple(int(c) for c in channels)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.channels)
        for head in self.heads:
            nn.init.ones_(head.weight)
        if head_weights is not None:
            path = (
                torchmetrics_lpips_head_path()
                if head_weights == TORCHMETRICS_HEADS
                else Path(head_weights)
            )
            self.set_head_weights(load_lpips_heads(path))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def set_head_weights(self, weights: Sequence[Tensor]) -> None:
        """Set the heads from one (1, C_k, 1, 1) (or (C_k,)) non-negative tensor per layer."""
        if len(weights) != len(self.heads):
            raise ValueError(f"got {len(weights)} head weights for {len(self.heads)} backbone layers")
        for k, (head, w) in enumerate(zip(self.heads, weights)):
            w = w.reshape(-1)
            if w.numel() != self.channels[k]:
                raise ValueError(
                    f"head {k}: {w.numel()} weights for a layer with {self.channels[k]} channels"
                )
            if (w < 0).any():
                raise ValueError(f"head {k}: LPIPS head weights must be non-negative")
            with torch.no_grad():
                head.weight.copy_(w.view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The backbone and heads never leave eval mode (frozen)."""
        return super().train(False)

    def distance(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Per-image distance of two batches in [0, 1].

        Args:
            x, y: (B, 3, H, W) images on the [0, 1] scale.

        Returns:
            ``(d, per_layer)``: d (B,) = sum of per_layer, each (B,) the head-weighted spatial mean.
        """
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected two (B, 3, H, W) batches of the same shape, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        both = torch.cat([x, y], dim=0)
        both = ((2 * both - 1) - self.shift.to(both.dtype)) / self.scale.to(both.dtype)
        features = self.backbone(both)
        if len(features) != len(self.heads):
            raise ValueError(f"backbone returned {len(features)} maps, expected {len(self.heads)}")
        batch = x.shape[0]
        per_layer: list[Tensor] = []
        for head, f in zip(self.heads, features):
            n = normalize_channels(f.float())
            diff = (n[:batch] - n[batch:]).pow(2)
            weighted = (diff * head.weight.float().view(1, -1, 1, 1)).sum(dim=1)
            per_layer.append(weighted.mean(dim=(1, 2)))
        return torch.stack(per_layer, dim=0).sum(dim=0), per_layer

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Batch-mean perceptual loss of (B, 3, H, W) images in [0, 1].

        Returns:
            ``loss`` (scalar, mean over the batch of the per-image distance) and ``layer{k}`` (the
            batch mean of layer k's contribution; they sum to ``loss``).
        """
        d, per_layer = self.distance(x, y)
        result = {"loss": d.mean()}
        for k, layer in enumerate(per_layer):
            result[f"layer{k}"] = layer.mean()
        return result
