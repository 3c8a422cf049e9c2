"""Adversarial pieces of stage 2/3: PatchGAN discriminator, hinge losses, adaptive weight, warm-up switch.

Follows pix2pix's / taming-transformers' ``NLayerDiscriminator`` and taming's
``VQLPIPSWithDiscriminator`` (``hinge_d_loss``, ``calculate_adaptive_weight``, ``adopt_weight``).

Normalisation: GroupNorm rather than BatchNorm. BatchNorm's statistics depend on how the batch is
split: under DDP each rank would normalise with its own statistics (unless converted to
SyncBatchNorm, an extra all-reduce per layer), its running buffers are re-broadcast from rank 0 at
every forward, and real and fake batches passed separately get different statistics. GroupNorm is
per sample: the discriminator gives the same logits for an image whatever the batch, the rank count
or the real/fake split, has no buffers to synchronise, and a 2-rank run matches a 1-rank run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import mean_over_ranks


def _group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(max_groups, channels), channels, eps=1e-6, affine=True)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix ``NLayerDiscriminator``) with GroupNorm.

    Layers: conv 4x4 s2 (3 -> C) + LeakyReLU(0.2); for n in 1..n_layers-1: conv 4x4 s2
    (C*min(2^(n-1), 8) -> C*min(2^n, 8)) + GroupNorm + LeakyReLU; conv 4x4 s1 to C*min(2^n_layers, 8)
    + GroupNorm + LeakyReLU; conv 4x4 s1 to 1 logit per patch. Conv weights ~ N(0, 0.02), norm scales
    ~ N(1, 0.02), biases 0.

    Input (B, 3, H, W) images on the [0, 1] scale (mapped to [-1, 1] inside); output (B, 1, H', W')
    patch logits, H' = H / 2^n_layers - 2 (e.g. 256 -> 30 with 3 layers).

    Args:
        in_channels: image channels.
        base_channels: C, the first layer's width (taming: 64).
        n_layers: number of stride-2 convs (taming: 3).
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or n_layers < 1:
            raise ValueError(
                f"in_channels, base_channels and n_layers must be >= 1, got "
                f"{in_channels}, {base_channels}, {n_layers}"
            )
        kw, pad = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, kw, stride=2, padding=pad),
            nn.LeakyReLU(0.2),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(base_channels * prev, base_channels * mult, kw, stride=2, padding=pad, bias=False),
                _group_norm(base_channels * mult),
                nn.LeakyReLU(0.2),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(base_channels * prev, base_channels * mult, kw, stride=1, padding=pad, bias=False),
            _group_norm(base_channels * mult),
            nn.LeakyReLU(0.2),
            nn.Conv2d(base_channels * mult, 1, kw, stride=1, padding=pad),
        ]
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix init: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, H', W') patch logits."""
        return self.main(2 * images - 1)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss ``0.5 * (mean relu(1 - real) + mean relu(1 + fake))`` (scalar)."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator loss ``-mean(fake_logits)`` (scalar)."""
    return -fake_logits.mean()


def adaptive_weight(
    nll_loss: Tensor, g_loss: Tensor, last_layer_weight: Tensor, max_weight: float = 1e4
) -> Tensor:
    """Taming's ``calculate_adaptive_weight``: ``||grad_W nll|| / (||grad_W g|| + 1e-4)``.

    W is the generator's last layer weight. Both gradients are taken with ``retain_graph=True`` (the
    caller still backpropagates the total); the result is clamped to [0, max_weight] and detached.

    Args:
        nll_loss: scalar reconstruction (+ perceptual) loss, depending on W.
        g_loss: scalar generator adversarial loss, depending on W.
        last_layer_weight: the parameter W.
        max_weight: upper clamp.

    Returns:
        detached scalar tensor.
    """
    if not (nll_loss.requires_grad and g_loss.requires_grad):
        raise RuntimeError(
            "adaptive_weight needs losses with a graph to the last layer (not under torch.no_grad)"
        )
    nll_grad = torch.autograd.grad(nll_loss, last_layer_weight, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    # Under DDP each rank holds its share of the batch: average the gradients over the ranks (as
    # DDP does for the update) so the weight is the whole batch's, as in one process.
    nll_grad, g_grad = mean_over_ranks(nll_grad), mean_over_ranks(g_grad)
    weight = torch.norm(nll_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, max_weight).detach()


def disc_factor(step: int, disc_start: int) -> float:
    """Warm-up switch of the adversarial terms: 0.0 while ``step < disc_start``, 1.0 from then on."""
    return 0.0 if step < disc_start else 1.0
