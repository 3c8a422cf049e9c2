"""Stage-2/3 pixel loss: config validation, total = weighted sum of its terms, disc_start switch."""

import pytest
import torch
from torch import nn

from semhitok.losses import (
    LossConfig,
    PatchDiscriminator,
    PerceptualLoss,
    PixelReconstructionLoss,
    TinyConvBackbone,
    VGG16Features,
    hinge_d_loss,
)
from semhitok.modeling.outputs import PixelForwardOutput
from semhitok.quantizers import QuantizerOutput


class _ToyDecoder(nn.Module):
    """latent (B, 4, H, W) -> image (B, 3, H, W); ``last`` is the layer the adaptive weight uses."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.last = nn.Conv2d(4, 3, 1)

    def forward(self, z):
        return torch.sigmoid(self.last(torch.relu(self.body(z))))


class _ExplodingDiscriminator(nn.Module):
    def forward(self, images):
        raise AssertionError("the discriminator must not run before disc_start")


def _forward(decoder, batch=2, size=16):
    z = torch.randn(batch, 4, size, size)
    recon = decoder(z)
    q_loss = (decoder.body.weight**2).mean()  # stands in for the SGHC loss, with a graph
    q = QuantizerOutput(
        quantized=torch.zeros(batch, 4),
        ids=torch.zeros(batch, 4, dtype=torch.long),
        loss=q_loss,
        commitment_loss=q_loss,
        codebook_loss=torch.tensor(0.0),
        perplexity=torch.tensor(1.0),
        usage=torch.tensor(1.0),
    )
    return PixelForwardOutput(semantic=q, pixel=q, reconstruction=recon)


def _loss(**overrides):
    # A ready perceptual loss is passed, so the config's backbone is never built; "random" only
    # satisfies the config's refusal of a VGG16 without weights.
    cfg = LossConfig(**{"disc_start": 5, "disc_base_channels": 8, "disc_layers": 2, "perceptual_backbone": "random", **overrides})
    perceptual = PerceptualLoss(TinyConvBackbone((4, 8)))
    return PixelReconstructionLoss(cfg, perceptual=perceptual)


def test_config_defaults_and_validation():
    cfg = LossConfig(vgg_weights="vgg16.pth")
    assert (cfg.rec_weight, cfg.perceptual_weight, cfg.codebook_weight, cfg.disc_weight) == (1.0, 1.0, 1.0, 0.5)
    assert (cfg.disc_start, cfg.adaptive_weight, cfg.rec_loss, cfg.perceptual_backbone) == (20000, True, "l1", "vgg16")
    assert LossConfig(perceptual_weight=0).perceptual_weight == 0.0  # no LPIPS term: no weights needed
    for bad, message in [
        ({"rec_loss": "l3"}, "rec_loss: expected one of 'l1', 'l2', got 'l3' (str)"),
        ({"rec_weight": -1.0}, "rec_weight: must be >= 0, got -1.0"),
        ({"perceptual_weight": -0.1}, "perceptual_weight: must be >= 0, got -0.1"),
        ({"codebook_weight": -2}, "codebook_weight: must be >= 0, got -2.0"),
        ({"disc_weight": "0.5"}, "disc_weight: expected a number, got '0.5' (str)"),
        ({"disc_start": -1}, "disc_start: must be >= 0, got -1"),
        ({"disc_start": 1.5}, "disc_start: expected an integer, got 1.5 (float)"),
        ({"disc_layers": 0}, "disc_layers: must be >= 1, got 0"),
        ({"adaptive_weight": 1}, "adaptive_weight: expected true or false, got 1 (int)"),
        ({"adaptive_weight_max": float("inf")}, "adaptive_weight_max: expected a finite number, got inf (float)"),
        ({"vgg_weights": ""}, "vgg_weights: is empty; give a file path or null"),
        ({"perceptual_backbone": "random", "vgg_weights": "v.pth"}, "perceptual_backbone: is 'random' but vgg_weights names a file"),
    ]:
        with pytest.raises(ValueError) as info:
            LossConfig(**{"vgg_weights": "vgg16.pth", **bad})
        assert str(info.value).startswith(message), bad


def test_no_silent_random_vgg():
    """A positive perceptual weight without VGG16 weights is refused, saying how to fix it,
    unless a random network is asked for by name."""
    for make in (LossConfig, PixelReconstructionLoss, lambda: LossConfig(perceptual_weight=0.5)):
        with pytest.raises(ValueError) as info:
            make()
        message = str(info.value)
        assert message.startswith("vgg_weights: perceptual_weight is ") and "\n" not in message
        assert "loss.vgg_weights=/path/to/vgg16.pth" in message and "loss.perceptual_weight=0" in message
    assert LossConfig(perceptual_backbone="random").vgg_weights is None


@pytest.mark.parametrize("rec_loss", ["l1", "l2"])
def test_total_is_weighted_sum_after_disc_start(rec_loss):
    torch.manual_seed(0)
    loss = _loss(rec_loss=rec_loss, rec_weight=0.7, codebook_weight=1.3, perceptual_weight=0.4, disc_weight=0.5)
    decoder = _ToyDecoder()
    images = torch.rand(2, 3, 16, 16)
    out = _forward(decoder)
    terms = loss.generator_loss(images, out, step=5, last_layer=decoder.last.weight)
    assert set(terms) == {"loss", "rec", "codebook", "perceptual", "nll", "g_loss", "adaptive_weight", "disc_factor", "gan"}
    diff = out.reconstruction - images
    expected_rec = diff.abs().mean() if rec_loss == "l1" else (diff**2).mean()
    torch.testing.assert_close(terms["rec"], expected_rec)
    torch.testing.assert_close(terms["codebook"], out.pixel.loss)
    torch.testing.assert_close(terms["perceptual"], loss.perceptual(images, out.reconstruction)["loss"])
    assert terms["disc_factor"].item() == 1.0 and terms["adaptive_weight"].item() > 0
    weighted = (
        0.7 * terms["rec"] + 1.3 * terms["codebook"] + 0.4 * terms["perceptual"]
        + 0.5 * terms["adaptive_weight"] * terms["disc_factor"] * terms["g_loss"]
    )  # fmt: skip
    torch.testing.assert_close(terms["loss"], weighted)
    torch.testing.assert_close(terms["nll"], 0.7 * terms["rec"] + 0.4 * terms["perceptual"])
    g_loss = -loss.discriminator(out.reconstruction).mean()
    torch.testing.assert_close(terms["g_loss"], g_loss)
    terms["loss"].backward()
    assert decoder.last.weight.grad is not None


def test_before_disc_start_gan_is_exactly_zero_and_discriminator_unused():
    torch.manual_seed(0)
    cfg = LossConfig(disc_start=5, perceptual_weight=0.5, perceptual_backbone="random")
    loss = PixelReconstructionLoss(
        cfg, perceptual=PerceptualLoss(TinyConvBackbone((4,))), discriminator=_ExplodingDiscriminator()
    )
    decoder = _ToyDecoder()
    images = torch.rand(2, 3, 16, 16)
    terms = loss.generator_loss(images, _forward(decoder), step=4, last_layer=None)
    for name in ("gan", "g_loss", "adaptive_weight", "disc_factor"):
        assert terms[name].item() == 0.0
    torch.testing.assert_close(terms["loss"], (terms["rec"] + 0.5 * terms["perceptual"]) + terms["codebook"], rtol=0, atol=0)
    terms["loss"].backward()


def test_generator_needs_last_layer_once_on_and_no_grad_gives_zero_adaptive_weight():
    loss = _loss()
    decoder = _ToyDecoder()
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="last_layer"):
        loss.generator_loss(images, _forward(decoder), step=5)
    with torch.no_grad():
        terms = loss.generator_loss(images, _forward(decoder), step=5)
    assert terms["adaptive_weight"].item() == 0.0 and terms["gan"].item() == 0.0
    fixed = _loss(adaptive_weight=False, disc_weight=0.25)
    terms = fixed.generator_loss(images, _forward(decoder), step=5)
    assert terms["adaptive_weight"].item() == 1.0
    torch.testing.assert_close(terms["gan"], 0.25 * terms["g_loss"])


def test_discriminator_loss():
    torch.manual_seed(0)
    loss = _loss()
    images = torch.rand(2, 3, 16, 16)
    recon = torch.rand(2, 3, 16, 16, requires_grad=True)
    before = loss.discriminator_loss(images, recon.detach(), step=4)
    assert before["loss"].item() == 0.0 and before["disc_factor"].item() == 0.0
    before["loss"].backward()  # still a graph: a loop that always steps D does not crash
    after = loss.discriminator_loss(images, recon.detach(), step=5)
    expected = hinge_d_loss(loss.discriminator(images), loss.discriminator(recon.detach()))
    torch.testing.assert_close(after["loss"], expected)
    torch.testing.assert_close(after["d_hinge"], expected)
    assert set(after) == {"loss", "d_hinge", "logits_real", "logits_fake", "disc_factor"}
    after["loss"].backward()
    assert recon.grad is None
    assert all(p.grad is not None for p in loss.discriminator.parameters())


def test_default_construction():
    """An explicitly random VGG16 is built when asked for (real runs give vgg_weights)."""
    loss = PixelReconstructionLoss(LossConfig(perceptual_backbone="random", lpips_heads=None))
    assert isinstance(loss.perceptual.backbone, VGG16Features)
    assert isinstance(loss.discriminator, PatchDiscriminator)
    bare = PixelReconstructionLoss(LossConfig(perceptual_weight=0.0, disc_weight=0.0))
    assert bare.perceptual is None and bare.discriminator is None
    with pytest.raises(RuntimeError, match="no discriminator"):
        bare.discriminator_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), step=0)


def test_bf16_autocast_gives_finite_float32_terms():
    torch.manual_seed(0)
    loss = _loss()
    decoder = _ToyDecoder()
    images = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _forward(decoder)
        terms = loss.generator_loss(images, out, step=5, last_layer=decoder.last.weight)
        d_terms = loss.discriminator_loss(images, out.reconstruction.detach(), step=5)
    for name, value in {**terms, **d_terms}.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    terms["loss"].backward()
    assert torch.isfinite(decoder.last.weight.grad).all()
