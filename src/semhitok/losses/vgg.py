"""VGG16 convolutional feature extractor in plain torch, in torchvision's ``features.*`` layout.

No torchvision: the layer indices of ``self.features`` are exactly torchvision's ``vgg16().features``
(convs at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), so the state dict of the ImageNet file
``vgg16-397923af.pth`` (or a safetensors file with the same keys) loads directly. The final max-pool
(index 30) and the classifier are not built: LPIPS taps stop at ``relu5_3`` (index 29).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

# torchvision "D" configuration; "M" is a 2x2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip

#: Tap name -> index in ``features`` of the ReLU whose output is returned.
VGG16_TAPS: dict[str, int] = {
    "relu1_2": 3,
    "relu2_2": 8,
    "relu3_3": 15,
    "relu4_3": 22,
    "relu5_3": 29,
}

#: Channels of each tap, in tap order.
VGG16_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

#: Indices of the 13 convolutions in ``features`` (torchvision layout).
VGG16_CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# Keys of torchvision's full VGG16 file that belong to the classifier head; accepted and ignored.
_IGNORED_PREFIXES = ("classifier.",)


def _build_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_channels = int(item)
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=False))
            in_channels = out_channels
    return nn.Sequential(*layers)


def read_state_dict(path: str | Path, what: str = "VGG16 weights file") -> dict[str, Tensor]:
    """Read a weights file with :func:`semhitok.weights_file.read_weights_file`: ``.safetensors``,
    or ``torch.load(weights_only=True)`` (no pickle code is executed). Tensors land on the CPU.

    Raises:
        WeightsFileError: missing, not a regular file, damaged, a pickle payload ("not a
            weights-only checkpoint; refusing to unpickle"), not a dict of tensors, or NaN/Inf.
    """
    from ..weights_file import read_weights_file

    return read_weights_file(path, what=what)


class VGG16Features(nn.Module):
    """VGG16 ``features`` returning the five LPIPS taps.

    Input (B, 3, H, W), already normalised the way the weights expect (LPIPS: its shift/scale on
    [-1, 1] images). Output: list of 5 maps ``relu1_2`` (B, 64, H, W), ``relu2_2`` (B, 128, H/2, W/2),
    ``relu3_3`` (B, 256, H/4, W/4), ``relu4_3`` (B, 512, H/8, W/8), ``relu5_3`` (B, 512, H/16, W/16).

    Args:
        weights: optional path to a torchvision-format VGG16 state dict (``.pth`` / ``.pt`` read with
            ``weights_only=True``, or ``.safetensors``); ``classifier.*`` keys are ignored, any other
            unknown or missing key is an error. ``None`` keeps torchvision's random init.
    """

    channels: tuple[int, ...] = VGG16_CHANNELS

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.features = _build_features()
        self._init_weights()
        self.pretrained = False
        if weights is not None:
            self.load_weights(weights)

    def _init_weights(self) -> None:
        # torchvision's VGG init for the convs.
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def load_weights(self, weights: str | Path | dict[str, Tensor]) -> None:
        """Load a torchvision-format state dict (a path or a dict); see the class doc for the rules."""
        state = dict(weights) if isinstance(weights, dict) else read_state_dict(weights)
        source = "state dict" if isinstance(weights, dict) else str(weights)
        state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
        expected = self.state_dict()
        unknown = sorted(set(state) - set(expected))
        missing = sorted(set(expected) - set(state))
        if unknown or missing:
            raise ValueError(
                f"{source} is not a torchvision VGG16 state dict: "
                f"unknown keys {unknown[:6]}{'...' if len(unknown) > 6 else ''}, "
                f"missing keys {missing[:6]}{'...' if len(missing) > 6 else ''}"
            )
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise ValueError(
                    f"{source}: {key} has shape {tuple(value.shape)}, "
                    f"VGG16 expects {tuple(expected[key].shape)}"
                )
        self.load_state_dict(state, strict=True)
        self.pretrained = True

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> the five tap maps (see the class doc)."""
        taps = set(VGG16_TAPS.values())
        last = max(taps)
        outputs: list[Tensor] = []
        h = x
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in taps:
                outputs.append(h)
            if index == last:
                break
        return outputs
