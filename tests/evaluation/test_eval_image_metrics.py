"""PSNR, SSIM, LPIPS wrapper, bits per image and the streaming meter against references."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from semhitok.evaluation.image_metrics import (
    LPIPSMetric,
    ReconstructionMeter,
    bits_per_image,
    gaussian_window,
    psnr,
    ssim,
)
from semhitok.image_io import psnr as io_psnr
from semhitok.losses import PerceptualLoss, TinyConvBackbone


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    out = []
    for x, y in zip(a, b):
        out.append(
            structural_similarity(
                x.double().permute(1, 2, 0).numpy(),
                y.double().permute(1, 2, 0).numpy(),
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
            )
        )
    return out


def _structured_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random, smooth, striped, blocky and shifted image pairs of assorted sizes."""
    g = torch.Generator().manual_seed(1)
    pairs = []
    a = torch.rand(3, 3, 24, 31, generator=g)
    pairs.append((a, torch.rand(3, 3, 24, 31, generator=g)))  # unrelated noise
    pairs.append((a, (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)))  # noisy copy
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 40), indexing="ij")
    smooth = torch.stack([xx, yy, (xx + yy) / 2])[None]
    stripes = (torch.sin(xx * 40) * 0.5 + 0.5).expand(3, -1, -1)[None]
    pairs.append((smooth, stripes))
    blocks = (torch.rand(1, 3, 4, 5, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3))
    pairs.append((blocks, torch.roll(blocks, shifts=3, dims=3)))  # shifted blocks
    pairs.append((smooth, smooth * 0.5 + 0.25))  # contrast and brightness change
    pairs.append((torch.zeros(1, 3, 11, 11), torch.ones(1, 3, 11, 11)))  # smallest size, flat images
    return pairs


# ---- PSNR ------------------------------------------------------------------------------------
def test_psnr_hand_computation():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    b[1, 0, 0, 0] = 0.5  # MSE 0.25 / 48
    expected = torch.tensor([20.0, 10 * math.log10(48 / 0.25)], dtype=torch.float64)
    out = psnr(a, b)
    assert out.dtype == torch.float64 and out.shape == (2,)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(psnr(a * 255, b * 255, data_range=255.0), expected)


def test_psnr_agrees_with_image_io_and_is_inf_for_identical():
    a, b = torch.rand(5, 3, 16, 12), torch.rand(5, 3, 16, 12)
    out = psnr(a, b)
    for i in range(5):
        assert out[i].item() == pytest.approx(io_psnr(a[i], b[i]), rel=1e-12)
    same = psnr(a, a)
    assert torch.isinf(same).all() and (same > 0).all()
    with pytest.raises(ValueError):
        psnr(a, b[:, :, :8])
    with pytest.raises(ValueError):
        psnr(a[0], b[0])


# ---- SSIM ------------------------------------------------------------------------------------
def test_gaussian_window():
    w = gaussian_window()
    assert w.shape == (11,) and w.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(w, w.flip(0))
    x = torch.arange(-5, 6, dtype=torch.float64)
    ref = torch.exp(-(x**2) / 4.5)
    torch.testing.assert_close(w, ref / ref.sum())


def test_ssim_matches_scikit_image():
    for a, b in _structured_pairs():
        ours = ssim(a, b)
        assert ours.shape == (a.shape[0],) and ours.dtype == torch.float64
        np.testing.assert_allclose(ours.numpy(), _skimage_ssim(a, b), atol=1e-4, rtol=0)


def test_ssim_identity_symmetry_and_noise():
    a = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ssim(a, a), torch.ones(2, dtype=torch.float64))
    b = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    torch.testing.assert_close(ssim(a, b), ssim(b, a))
    previous = 1.0
    for sigma in (0.02, 0.05, 0.1, 0.3):
        noisy = (a + sigma * torch.randn_like(a)).clamp(0, 1)
        value = float(ssim(a, noisy).mean())
        assert value < previous
        previous = value
    torch.testing.assert_close(ssim(a * 255, b * 255, data_range=255.0), ssim(a, b))
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.rand(1, 3, 10, 20), torch.rand(1, 3, 10, 20))


# ---- LPIPS -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def perceptual():
    torch.manual_seed(3)
    loss = PerceptualLoss(TinyConvBackbone((4, 8)))
    loss.set_head_weights([torch.rand(4), torch.rand(8)])
    return loss


def test_lpips_metric_equals_perceptual_distance(perceptual):
    metric = LPIPSMetric(perceptual)
    a = torch.rand(3, 3, 16, 16)
    b = torch.rand(3, 3, 16, 16, requires_grad=True)
    out = metric(a, b)
    assert out.shape == (3,) and not out.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(out, perceptual.distance(a, b)[0])
    torch.testing.assert_close(metric(a, a), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(LPIPSMetric(perceptual, max_batch=2)(a, b), out)  # chunked: same values
    with pytest.raises(ValueError):
        LPIPSMetric(perceptual, max_batch=0)
    metric.train()
    assert not metric.training and not perceptual.training
    assert not any(p.requires_grad for p in metric.parameters())
    with pytest.raises(TypeError):
        LPIPSMetric(TinyConvBackbone())


# ---- bits per image ----------------------------------------------------------------------------
def test_bits_per_image():
    assert bits_per_image(256, 16384 * 12) == pytest.approx(256 * math.log2(196608))
    assert bits_per_image(4, 256) == 32.0
    assert bits_per_image(10, 1) == 0.0
    with pytest.raises(ValueError):
        bits_per_image(-1, 8)
    with pytest.raises(ValueError):
        bits_per_image(4, 0)


# ---- meter -------------------------------------------------------------------------------------
def test_meter_is_the_mean_of_per_image_values(perceptual):
    meter = ReconstructionMeter(perceptual)
    assert math.isnan(meter.compute()["psnr"])
    batches = [(torch.rand(n, 3, 16, 16), torch.rand(n, 3, 16, 16)) for n in (2, 3, 1)]
    per_image = {"psnr": [], "ssim": [], "lpips": []}
    for a, b in batches:
        values = meter.update(a, b)
        per_image["psnr"].append(psnr(a, b))
        per_image["ssim"].append(ssim(a, b))
        with torch.no_grad():
            per_image["lpips"].append(perceptual.distance(a, b)[0].double())
        torch.testing.assert_close(values["psnr"], per_image["psnr"][-1])
    result = meter.compute()
    assert result["num_images"] == 6 and result["psnr_infinite"] == 0
    for name, parts in per_image.items():
        assert result[name] == pytest.approx(float(torch.cat(parts).mean()), rel=1e-9)

    # merging two meters equals one meter over all batches
    first, second = ReconstructionMeter(perceptual), ReconstructionMeter(perceptual)
    first.update(*batches[0])
    for a, b in batches[1:]:
        second.update(a, b)
    merged = first.merge(second).compute()
    for key, value in result.items():
        assert merged[key] == pytest.approx(value, rel=1e-12)

    meter.update(batches[0][0], batches[0][0])  # exact reconstructions
    assert meter.compute()["psnr_infinite"] == 2 and math.isinf(meter.compute()["psnr"])
    meter.reset()
    assert meter.compute()["num_images"] == 0


def test_meter_without_lpips():
    meter = ReconstructionMeter()
    a = torch.rand(2, 3, 12, 12)
    meter.update(a, (a + 0.1).clamp(0, 1))
    result = meter.compute()
    assert "lpips" not in result and result["num_images"] == 2
    with pytest.raises(ValueError):
        meter.merge(ReconstructionMeter(PerceptualLoss(TinyConvBackbone((4,)))))
