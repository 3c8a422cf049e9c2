"""Training losses: stage-1 feature distillation, stage-2/3 pixel reconstruction with LPIPS and GAN.

Every loss is an ``nn.Module`` returning a dict of named scalar tensors with the total under
``"loss"``; none knows about optimizers, steps (beyond the ``disc_start`` switch) or logging.
"""

from .backbone import FeatureBackbone, TinyConvBackbone
from .config import VGG_WEIGHTS_HINT, LossConfig, SemanticLossConfig
from .gan import (
    PatchDiscriminator,
    adaptive_weight,
    disc_factor,
    hinge_d_loss,
    hinge_g_loss,
)
from .perceptual import (
    LPIPS_SCALE,
    LPIPS_SHIFT,
    TORCHMETRICS_HEADS,
    PerceptualLoss,
    load_lpips_heads,
    normalize_channels,
    torchmetrics_lpips_head_path,
)
from .reconstruction import PixelReconstructionLoss
from .semantic import SemanticDistillationLoss
from .vgg import (
    VGG16_CHANNELS,
    VGG16_CONV_INDICES,
    VGG16_TAPS,
    VGG16Features,
    read_state_dict,
)

__all__ = [
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "TORCHMETRICS_HEADS",
    "VGG16_CHANNELS",
    "VGG16_CONV_INDICES",
    "VGG16_TAPS",
    "VGG_WEIGHTS_HINT",
    "FeatureBackbone",
    "LossConfig",
    "PatchDiscriminator",
    "PerceptualLoss",
    "PixelReconstructionLoss",
    "SemanticDistillationLoss",
    "SemanticLossConfig",
    "TinyConvBackbone",
    "VGG16Features",
    "adaptive_weight",
    "disc_factor",
    "hinge_d_loss",
    "hinge_g_loss",
    "load_lpips_heads",
    "normalize_channels",
    "read_state_dict",
    "torchmetrics_lpips_head_path",
]
