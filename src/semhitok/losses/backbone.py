"""What a perceptual-loss backbone must provide, and a tiny random one for tests and small runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class FeatureBackbone(Protocol):
    """Any module mapping (B, 3, H, W) to a list of feature maps (B, C_k, H_k, W_k).

    ``channels`` lists C_k in output order; the perceptual loss builds one 1x1 head per entry.
    """

    channels: tuple[int, ...]

    def __call__(self, x: Tensor) -> list[Tensor]: ...


class TinyConvBackbone(nn.Module):
    """A small random CNN: per stage a 3x3 conv + ReLU, stages after the first downsample by 2.

    Input (B, 3, H, W); output one map per stage, stage k (B, channels[k], H / 2^k, W / 2^k).
    A stand-in for VGG16 where no pretrained weights exist (tests, CPU-scale runs).

    Args:
        channels: output channels of each stage.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        if len(channels) == 0 or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels}")
        self.channels = tuple(int(c) for c in channels)
        stages: list[nn.Module] = []
        in_channels = 3
        for k, out_channels in enumerate(self.channels):
            stride = 1 if k == 0 else 2
            stages.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
                    nn.ReLU(),
                )
            )
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> list of (B, channels[k], H / 2^k, W / 2^k)."""
        outputs: list[Tensor] = []
        h = x
        for stage in self.stages:
            h = stage(h)
            outputs.append(h)
        return outputs
