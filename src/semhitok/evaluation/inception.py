"""The FID Inception-v3 (pytorch-fid's ``fid_inception_v3``) in plain torch, without torchvision.

FID is defined on the 2048-d "pool3" features of the TensorFlow Inception graph
``inception-2015-12-05``. pytorch-fid ported it to torchvision's ``Inception3`` layout with a few
blocks patched to reproduce TensorFlow's behaviour:

* ``FIDInceptionA`` / ``FIDInceptionC`` / ``FIDInceptionE_1``: the 3x3 average pool in the pooling
  branch does not count the zero padding (``count_include_pad=False``);
* ``FIDInceptionE_2`` (the last block, ``Mixed_7c``): the pooling branch uses a 3x3 *max* pool.

This module rebuilds exactly that network (``aux_logits=False``) with parameter and buffer names
identical to the weight file ``pt_inception-2015-12-05-6726825d.pth`` (``Conv2d_1a_3x3.conv.weight``,
``Conv2d_1a_3x3.bn.running_mean``, ``Mixed_5b.branch1x1.conv.weight``, ...), so the file loads with
``load_state_dict(strict=True)``. The file's 1008-way classifier (``fc.weight``, ``fc.bias``) is
not built: FID uses the pool3 features, which come before it; ``load_fid_inception_weights``
checks and then drops those two keys.

Input convention (as pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``):
float images ``(B, 3, H, W)`` in ``[0, 1]`` are resized to 299x299 with bilinear interpolation
(``align_corners=False``, no antialiasing) and scaled to ``[-1, 1]`` by ``2x - 1``. ``uint8`` input
is divided by 255 first. Note that torchmetrics / torch-fidelity resize with a TF1-compatible
bilinear kernel instead, so their numbers differ slightly from pytorch-fid's (and from this
module's) for images that are not already 299x299.

No real weights ship with this package or are downloaded; pass a local file to
``load_fid_inception_weights``. Without it the network has random weights and its numbers must not
be called FID.
"""

from __future__ import annotations

import os
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FIDInceptionV3", "load_fid_inception_weights", "FID_WEIGHTS_FILENAME"]

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
_NUM_CLASSES = 1008  # the TF graph's classifier size; only checked, never built


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps=1e-3) + ReLU; attributes ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class FIDInceptionA(nn.Module):
    """Mixed_5b/5c/5d; the pooling branch's avg pool excludes padding (TF behaviour)."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction 35 -> 17)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..6e (factorised 7x7); avg pool excludes padding (TF behaviour)."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction 17 -> 8)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (``pool="avg"``: avg pool excluding padding) and Mixed_7c (``pool="max"``)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            p = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        else:
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([b1, b3, bd, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 for FID: ``forward(images) -> (B, 2048)`` pool3 features (post-ReLU, >= 0).

    Args:
        resize_input: resize to 299x299 (bilinear, ``align_corners=False``) as pytorch-fid does.
        normalize_input: map ``[0, 1]`` to ``[-1, 1]`` (``2x - 1``) as pytorch-fid does.

    The module is created with random weights, in eval mode, with ``requires_grad=False``; it never
    leaves eval mode (``train()`` is a no-op) so BatchNorm statistics cannot be corrupted, and the
    forward pass runs under ``torch.no_grad()``. ``num_features = 2048`` lets it be passed as
    ``torchmetrics...FrechetInceptionDistance(feature=model)``. Load real weights with
    :func:`load_fid_inception_weights`.
    """

    num_features = 2048
    input_size = 299

    def __init__(self, resize_input: bool = True, normalize_input: bool = True):
        super().__init__()
        self.resize_input = resize_input
        self.normalize_input = normalize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FIDInceptionV3":
        """Stay in eval mode whatever ``mode`` is (the network is a fixed feature extractor)."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Validate, resize and normalise ``images`` as described in the class docstring."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"FIDInceptionV3 expects images of shape (B, 3, H, W), got {shape}")
        if images.dtype == torch.uint8:
            x = images.float() / 255.0
        elif images.is_floating_point():
            x = images
        else:
            raise ValueError(f"FIDInceptionV3 expects float images in [0, 1] or uint8, got {images.dtype}")
        x = x.to(self.Conv2d_1a_3x3.conv.weight.dtype)
        if self.resize_input and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.preprocess(images)
            x = self.Conv2d_1a_3x3(x)  # 299 -> 149
            x = self.Conv2d_2a_3x3(x)  # 147
            x = self.Conv2d_2b_3x3(x)
            x = F.max_pool2d(x, kernel_size=3, stride=2)  # 73
            x = self.Conv2d_3b_1x1(x)
            x = self.Conv2d_4a_3x3(x)  # 71
            x = F.max_pool2d(x, kernel_size=3, stride=2)  # 35
            x = self.Mixed_5b(x)
            x = self.Mixed_5c(x)
            x = self.Mixed_5d(x)
            x = self.Mixed_6a(x)  # 17
            x = self.Mixed_6b(x)
            x = self.Mixed_6c(x)
            x = self.Mixed_6d(x)
            x = self.Mixed_6e(x)
            x = self.Mixed_7a(x)  # 8
            x = self.Mixed_7b(x)
            x = self.Mixed_7c(x)
            return x.mean(dim=(2, 3))  # adaptive avg pool to 1x1 -> (B, 2048)


def _read_state_dict(path: Union[str, os.PathLike]) -> dict:
    # One reader for every weights file: weights-only, regular files only, one-line WeightsFileError.
    from ..weights_file import read_weights_file

    return read_weights_file(path, what="FID Inception weights file")


def _names(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_fid_inception_weights(
    path: Union[str, os.PathLike], model: "FIDInceptionV3 | None" = None
) -> FIDInceptionV3:
    """Load the standard FID Inception weights (``pt_inception-2015-12-05-6726825d.pth`` layout).

    ``path`` is a ``.pth`` file (read with ``torch.load(..., weights_only=True)``) or a
    ``.safetensors`` file with the same keys. The classifier keys ``fc.weight`` (1008, 2048) and
    ``fc.bias`` are optional and ignored (FID uses the features before the classifier); BatchNorm
    ``num_batches_tracked`` counters are optional (older files lack them). Every other key must
    match the network exactly, in name and shape; otherwise a ``ValueError`` names the offending
    keys. Returns ``model`` (a new :class:`FIDInceptionV3` if not given) in eval mode.
    """
    sd = _read_state_dict(path)
    model = FIDInceptionV3() if model is None else model
    fc = {k: sd.pop(k) for k in _CLASSIFIER_KEYS if k in sd}
    if "fc.weight" in fc and fc["fc.weight"].shape != (_NUM_CLASSES, FIDInceptionV3.num_features):
        raise ValueError(
            f"{path}: fc.weight has shape {tuple(fc['fc.weight'].shape)}, expected "
            f"({_NUM_CLASSES}, {FIDInceptionV3.num_features}); is this the FID Inception file?"
        )
    expected = model.state_dict()
    for k, v in expected.items():  # fill optional BatchNorm counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v.clone()
    missing = set(expected) - set(sd)
    unexpected = set(sd) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
        raise ValueError(
            f"{path} is not in the pt_inception-2015-12-05 layout: " + "; ".join(parts)
        )
    bad = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensors have the wrong shape: " + "; ".join(bad[:5]))
    model.load_state_dict(sd, strict=True)
    return model.eval()
