"""LPIPS-style perceptual loss: properties, a step-by-step reference, the torchmetrics heads."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from semhitok.losses import (
    VGG16_CHANNELS,
    PerceptualLoss,
    TinyConvBackbone,
    VGG16Features,
    load_lpips_heads,
    torchmetrics_lpips_head_path,
)

HAS_TORCHMETRICS = importlib.util.find_spec("torchmetrics") is not None


def _tiny_loss(seed=0):
    torch.manual_seed(seed)
    backbone = TinyConvBackbone((4, 6, 8))
    loss = PerceptualLoss(backbone)
    heads = [torch.rand(c) for c in backbone.channels]  # fixed random non-negative heads
    loss.set_head_weights(heads)
    return loss, backbone, heads


def test_zero_identical_positive_otherwise_symmetric():
    loss, _, _ = _tiny_loss()
    x, y = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    assert loss(x, x)["loss"].item() == 0.0
    dxy, dyx = loss.distance(x, y)[0], loss.distance(y, x)[0]
    assert (dxy > 0).all()
    torch.testing.assert_close(dxy, dyx, rtol=0, atol=0)


def test_equals_step_by_step_computation():
    loss, backbone, heads = _tiny_loss()
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx = backbone(((2 * x - 1) - shift) / scale)
    fy = backbone(((2 * y - 1) - shift) / scale)
    expected = torch.zeros(2)
    for a, b, w in zip(fx, fy, heads):
        na = a / torch.sqrt(1e-8 + (a**2).sum(1, keepdim=True))
        nb = b / torch.sqrt(1e-8 + (b**2).sum(1, keepdim=True))
        per_pixel = ((na - nb) ** 2 * w.view(1, -1, 1, 1)).sum(1)  # 1x1 conv, one output channel
        expected += per_pixel.mean(dim=(1, 2))
    out = loss(x, y)
    torch.testing.assert_close(loss.distance(x, y)[0], expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["loss"], expected.mean(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["loss"], sum(out[f"layer{k}"] for k in range(3)), rtol=1e-6, atol=1e-8)


def test_frozen_but_gradient_reaches_images():
    loss, _, _ = _tiny_loss()
    loss.train()
    assert not loss.training and not loss.backbone.training
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(x, torch.rand(1, 3, 16, 16))["loss"].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_head_weights_validated():
    loss, _, _ = _tiny_loss()
    with pytest.raises(ValueError, match="non-negative"):
        loss.set_head_weights([-torch.ones(c) for c in (4, 6, 8)])
    with pytest.raises(ValueError, match="channels"):
        loss.set_head_weights([torch.ones(c + 1) for c in (4, 6, 8)])
    with pytest.raises(ValueError, match="vgg_weights"):
        PerceptualLoss(TinyConvBackbone(), vgg_weights="x.pth")


@pytest.mark.skipif(not HAS_TORCHMETRICS, reason="torchmetrics (which ships the LPIPS heads) is not installed")
def test_torchmetrics_lpips_heads_load_with_the_right_shapes():
    path = torchmetrics_lpips_head_path()
    assert path.name == "vgg.pth" and path.parent.name == "lpips_models"
    heads = load_lpips_heads(path)
    assert [tuple(h.shape) for h in heads] == [(1, c, 1, 1) for c in VGG16_CHANNELS]
    assert all((h >= 0).all() for h in heads)
    torch.manual_seed(0)
    loss = PerceptualLoss()  # VGG16 (random here) + LPIPS's trained heads
    for head, w in zip(loss.heads, heads):
        assert torch.equal(head.weight, w)


def _torchmetrics_lpips_module():
    """torchmetrics' ``functional/image/lpips.py`` loaded on its own: importing the torchmetrics
    package costs seconds, and that file needs only ``_TORCHVISION_AVAILABLE`` from it."""
    if "torchmetrics" in sys.modules:
        from torchmetrics.functional.image import lpips

        return lpips
    root = Path(importlib.util.find_spec("torchmetrics").origin).parent
    names = ("torchmetrics", "torchmetrics.utilities", "torchmetrics.utilities.imports")
    stubs = {name: types.ModuleType(name) for name in names}
    stubs["torchmetrics.utilities.imports"]._TORCHVISION_AVAILABLE = False
    spec = importlib.util.spec_from_file_location("_tm_lpips", root / "functional" / "image" / "lpips.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.update(stubs)
    try:
        spec.loader.exec_module(module)
    finally:
        for name in names:
            sys.modules.pop(name, None)
    return module


@pytest.mark.skipif(not HAS_TORCHMETRICS, reason="torchmetrics (which ships the LPIPS reference code) is not installed")
def test_matches_torchmetrics_lpips_pieces_on_vgg16():
    """Same number as torchmetrics' LPIPS forward (ScalingLayer, normalize, NetLinLayer, spatial
    average) on the same VGG16 taps; torchmetrics' own VGG needs torchvision, so ours feeds both."""
    tl = _torchmetrics_lpips_module()

    torch.manual_seed(0)
    vgg = VGG16Features()
    loss = PerceptualLoss(vgg, head_weights=torchmetrics_lpips_head_path())
    scaling = tl.ScalingLayer()
    lins = torch.nn.ModuleList(tl.NetLinLayer(c, use_dropout=True) for c in VGG16_CHANNELS)
    state = torch.load(torchmetrics_lpips_head_path(), map_location="cpu", weights_only=True)
    lins.load_state_dict({k.replace("lin", "", 1): v for k, v in state.items()})
    lins.eval()
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        fx, fy = vgg(scaling(2 * x - 1)), vgg(scaling(2 * y - 1))
        ref = sum(
            tl._spatial_average(lin((tl._normalize_tensor(a) - tl._normalize_tensor(b)) ** 2))
            for lin, a, b in zip(lins, fx, fy)
        ).view(-1)
        ours = loss.distance(x, y)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
