"""Typed, validated weights and switches of the training losses (stage 1, and stages 2/3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config_types import ConfigError, check_fields

# What the refusal of a perceptual term without real VGG16 weights tells the user to do.
VGG_WEIGHTS_HINT = (
    "give loss.vgg_weights=/path/to/vgg16.pth (torchvision's ImageNet VGG16, vgg16-397923af.pth, "
    "or a .safetensors file with its keys) or turn the term off with loss.perceptual_weight=0"
)


@dataclass
class SemanticLossConfig:
    """Configuration of ``SemanticDistillationLoss`` (stage 1).

    Attributes:
        cosine_weight: weight of the per-token cosine distance to the teacher's features.
        l1_weight: weight of the L1 distance (0 disables it; it is still reported).
    """

    cosine_weight: float = 1.0
    l1_weight: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("cosine_weight", "l1_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")


@dataclass
class LossConfig:
    """Configuration of ``PixelReconstructionLoss`` (defaults from taming / LlamaGen).

    A positive ``perceptual_weight`` needs real VGG16 weights (``vgg_weights``): LPIPS on a random
    network measures nothing useful, so the config is refused without them unless it asks for a
    random network with ``perceptual_backbone: random`` (tests and smoke runs only).

    Attributes:
        rec_loss: ``"l1"`` or ``"l2"`` pixel reconstruction loss (mean over elements).
        rec_weight: lambda_rec.
        codebook_weight: lambda_vq, applied to the pixel (SGHC) quantizer's ``loss``.
        perceptual_weight: lambda_p on the LPIPS-style loss (0 disables it; nothing is built).
        disc_weight: lambda_g on the adversarial generator loss (LlamaGen: 0.5; 0 disables the GAN).
        disc_start: step from which the adversarial terms are on (before it they are exactly 0).
        adaptive_weight: multiply the generator loss by taming's adaptive weight.
        adaptive_weight_max: clamp of the adaptive weight.
        disc_base_channels: first-layer width of the PatchGAN discriminator.
        disc_layers: number of stride-2 layers of the discriminator.
        vgg_weights: torchvision-format VGG16 file for the perceptual backbone; required when
            ``perceptual_weight > 0`` and ``perceptual_backbone`` is ``vgg16``.
        perceptual_backbone: ``"vgg16"`` (from ``vgg_weights``) or ``"random"`` (a randomly
            initialised VGG16, explicitly asked for; never for a real run).
        lpips_heads: ``"torchmetrics"`` (LPIPS's heads from the installed torchmetrics), a file, or
            ``None`` (all-ones heads).
    """

    rec_loss: Literal["l1", "l2"] = "l1"
    rec_weight: float = 1.0
    codebook_weight: float = 1.0
    perceptual_weight: float = 1.0
    disc_weight: float = 0.5
    disc_start: int = 20000
    adaptive_weight: bool = True
    adaptive_weight_max: float = 1e4
    disc_base_channels: int = 64
    disc_layers: int = 3
    vgg_weights: str | None = None
    perceptual_backbone: Literal["vgg16", "random"] = "vgg16"
    lpips_heads: str | None = "torchmetrics"

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("rec_weight", "codebook_weight", "perceptual_weight", "disc_weight", "disc_start"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.adaptive_weight_max <= 0:
            raise ConfigError("adaptive_weight_max", f"must be > 0, got {self.adaptive_weight_max}")
        for name in ("disc_base_channels", "disc_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.vgg_weights == "":
            raise ConfigError("vgg_weights", "is empty; give a file path or null")
        if self.perceptual_backbone == "random" and self.vgg_weights is not None:
            raise ConfigError("perceptual_backbone", "is 'random' but vgg_weights names a file; drop one of them")
        if self.perceptual_weight > 0 and self.perceptual_backbone == "vgg16" and self.vgg_weights is None:
            raise ConfigError(
                "vgg_weights",
                f"perceptual_weight is {self.perceptual_weight:g} but no VGG16 weights are given, "
                f"and a random VGG16 would make the perceptual term meaningless: {VGG_WEIGHTS_HINT}",
            )
