"""Weights and switches of the stage-2/3 pixel loss."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LossConfig:
    """Configuration of ``PixelReconstructionLoss`` (defaults from taming / LlamaGen).

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
        vgg_weights: optional torchvision-format VGG16 file for the perceptual backbone (else random).
        lpips_heads: ``"torchmetrics"`` (LPIPS's heads from the installed torchmetrics), a file, or
            ``None`` (all-ones heads).
    """

    rec_loss: str = "l1"
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
    lpips_heads: str | None = "torchmetrics"

    def __post_init__(self) -> None:
        if self.rec_loss not in ("l1", "l2"):
            raise ValueError(f"rec_loss must be 'l1' or 'l2', got {self.rec_loss!r}")
        for name in ("rec_weight", "codebook_weight", "perceptual_weight", "disc_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.disc_start, int) or isinstance(self.disc_start, bool) or self.disc_start < 0:
            raise ValueError(f"disc_start must be an int >= 0, got {self.disc_start!r}")
        if not self.adaptive_weight_max > 0:
            raise ValueError(f"adaptive_weight_max must be > 0, got {self.adaptive_weight_max!r}")
        if self.disc_base_channels < 1 or self.disc_layers < 1:
            raise ValueError(
                f"disc_base_channels and disc_layers must be >= 1, got "
                f"{self.disc_base_channels}, {self.disc_layers}"
            )
