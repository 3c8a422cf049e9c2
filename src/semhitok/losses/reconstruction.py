"""Stage-2/3 loss: pixel reconstruction + SGHC codebook + perceptual + hinge GAN (taming recipe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossConfig
from .gan import PatchDiscriminator, adaptive_weight, disc_factor, hinge_d_loss, hinge_g_loss
from .perceptual import PerceptualLoss

if TYPE_CHECKING:
    from ..modeling.outputs import PixelForwardOutput


class PixelReconstructionLoss(nn.Module):
    """``rec_weight * L_rec + codebook_weight * L_vq + perceptual_weight * LPIPS
    + disc_weight * adaptive_weight * disc_factor * L_G``.

    Owns the (frozen) perceptual loss and the (trainable) PatchGAN discriminator; the training loop
    gives the discriminator's parameters to their own optimizer. Two calls per step:

    * ``generator_loss`` for the tokenizer's update. Its graph also reaches the discriminator's
      parameters once the GAN is on: zero the discriminator's gradients before its own step.
    * ``discriminator_loss`` on the detached reconstruction for the discriminator's update.

    Before ``disc_start`` the GAN term is exactly 0 and the discriminator is not run in
    ``generator_loss`` (no ``last_layer`` needed). Under ``torch.no_grad`` (validation) the adaptive
    weight cannot be computed and is 0, as in taming: the reported total then has no GAN term.

    Args:
        config: weights and switches (default: ``LossConfig()``, which needs ``vgg_weights``).
        perceptual: a ready ``PerceptualLoss`` (e.g. on a tiny backbone); default: built from
            ``config`` (VGG16 from ``vgg_weights``, or random when ``perceptual_backbone`` is
            ``random``; ``lpips_heads``) when ``perceptual_weight > 0``.
        discriminator: a ready discriminator mapping (B, 3, H, W) in [0, 1] to logits; default: a
            ``PatchDiscriminator`` from ``config`` when ``disc_weight > 0``. ``discriminator_loss``
            scores real and fake images in one concatenated batch, which is exact for per-sample
            normalisation (GroupNorm) but would mix BatchNorm statistics.
    """

    def __init__(
        self,
        config: LossConfig | None = None,
        perceptual: PerceptualLoss | None = None,
        discriminator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config if config is not None else LossConfig()
        if perceptual is None and config.perceptual_weight > 0:
            # LossConfig refuses a vgg16 backbone without weights, so vgg_weights=None here means
            # the config asked for a random VGG16 explicitly (perceptual_backbone: random).
            perceptual = PerceptualLoss(vgg_weights=config.vgg_weights, head_weights=config.lpips_heads)
        self.perceptual = perceptual
        if discriminator is None and config.disc_weight > 0:
            discriminator = PatchDiscriminator(
                base_channels=config.disc_base_channels, n_layers=config.disc_layers
            )
        self.discriminator = discriminator

    def _rec(self, images: Tensor, reconstruction: Tensor) -> Tensor:
        if self.config.rec_loss == "l1":
            return F.l1_loss(reconstruction.float(), images.float())
        return F.mse_loss(reconstruction.float(), images.float())

    def generator_loss(
        self,
        images: Tensor,
        out: PixelForwardOutput,
        step: int,
        last_layer: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Loss of the tokenizer (generator) update.

        Args:
            images: (B, 3, H, W) targets in [0, 1].
            out: the model's pixel forward; uses ``reconstruction`` (B, 3, H, W) and ``pixel.loss``.
            step: global optimisation step (for the ``disc_start`` switch).
            last_layer: the pixel decoder's last layer weight, needed for the adaptive weight once
                the GAN is on.

        Returns:
            scalar tensors ``loss`` (the total), ``rec``, ``codebook``, ``perceptual``, ``nll``
            (``rec_weight * rec + perceptual_weight * perceptual``), ``g_loss`` (``-mean D(x_hat)``),
            ``adaptive_weight`` and ``disc_factor`` (the multipliers used; 0 when the GAN is off),
            ``gan`` (``disc_weight * adaptive_weight * disc_factor * g_loss``). The total is
            ``nll + codebook_weight * codebook + gan``.
        """
        cfg = self.config
        reconstruction = out.reconstruction
        if reconstruction.shape != images.shape:
            raise ValueError(
                f"reconstruction {tuple(reconstruction.shape)} and images {tuple(images.shape)} "
                "must have the same shape"
            )
        zero = torch.zeros((), device=images.device)
        rec = self._rec(images, reconstruction)
        codebook = out.pixel.loss.float()
        if self.perceptual is not None and cfg.perceptual_weight > 0:
            perceptual = self.perceptual(images, reconstruction)["loss"]
        else:
            perceptual = zero
        nll = cfg.rec_weight * rec + cfg.perceptual_weight * perceptual
        loss = nll + cfg.codebook_weight * codebook

        factor = disc_factor(step, cfg.disc_start) if cfg.disc_weight > 0 else 0.0
        g_loss, weight, gan = zero, zero, zero
        if factor > 0:
            if self.discriminator is None:
                raise RuntimeError("disc_weight > 0 but the loss has no discriminator")
            g_loss = hinge_g_loss(self.discriminator(reconstruction).float())
            if not cfg.adaptive_weight:
                weight = torch.ones((), device=images.device)
            elif not torch.is_grad_enabled():
                weight = zero
            else:
                if last_layer is None:
                    raise ValueError(
                        "generator_loss needs last_layer (the decoder's last weight) for the "
                        "adaptive weight once step >= disc_start"
                    )
                weight = adaptive_weight(nll, g_loss, last_layer, cfg.adaptive_weight_max)
            gan = cfg.disc_weight * weight * factor * g_loss
            loss = loss + gan
        return {
            "loss": loss,
            "rec": rec,
            "codebook": codebook,
            "perceptual": perceptual,
            "nll": nll,
            "g_loss": g_loss,
            "adaptive_weight": weight,
            "disc_factor": torch.tensor(factor, device=images.device),
            "gan": gan,
        }

    def discriminator_loss(
        self, images: Tensor, reconstruction_detached: Tensor, step: int
    ) -> dict[str, Tensor]:
        """Loss of the discriminator update: ``disc_factor * hinge_d_loss``.

        Args:
            images: (B, 3, H, W) real images in [0, 1].
            reconstruction_detached: (B, 3, H, W) reconstructions (detached again here).
            step: global step; before ``disc_start`` the loss is 0 (still a graph, so backward works).

        Returns:
            scalar tensors ``loss``, ``d_hinge`` (unweighted), ``logits_real`` and ``logits_fake``
            (mean logits, detached), ``disc_factor``.
        """
        if self.discriminator is None:
            raise RuntimeError("this loss has no discriminator (disc_weight = 0)")
        batch = images.shape[0]
        logits = self.discriminator(torch.cat([images.detach(), reconstruction_detached.detach()]))
        logits = logits.float()
        real, fake = logits[:batch], logits[batch:]
        d_hinge = hinge_d_loss(real, fake)
        factor = disc_factor(step, self.config.disc_start)
        return {
            "loss": factor * d_hinge,
            "d_hinge": d_hinge,
            "logits_real": real.detach().mean(),
            "logits_fake": fake.detach().mean(),
            "disc_factor": torch.tensor(factor, device=images.device),
        }
