"""The three training stages of SemHiTok (paper Sec. 3.3 and Tab. 3) as small typed objects.

A :class:`Stage` says what the stage trains, what stays frozen, which forward it runs and whether
its loss has a discriminator; the loop asks it instead of branching on the stage's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..modeling import SemHiTok

__all__ = ["STAGES", "Stage", "TRAINED_MODULES", "get_stage", "prepare_stage"]


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        name: the config's ``stage`` value.
        trained: the top-level SemHiTok modules this stage trains; every other one is frozen (the
            teacher always). The EMA semantic codebook has no gradient but "trains" through its EMA
            update, which needs train mode.
        pixel: the stage runs the full pixel forward (reconstruction loss) rather than the
            semantic forward (distillation loss).
        has_discriminator: the stage's loss trains a PatchGAN discriminator (when its weight > 0).
    """

    name: str
    trained: tuple[str, ...]
    pixel: bool
    has_discriminator: bool

    def frozen(self, model: SemHiTok) -> list[str]:
        """The top-level modules this stage leaves unchanged."""
        return [name for name, _ in model.named_children() if name not in self.trained]

    def prepare(self, model: SemHiTok) -> list[nn.Parameter]:
        """Freeze every module the stage does not train; return the parameters the optimizer gets."""
        model.freeze([name for name in self.frozen(model) if name != "teacher"])
        params = [p for name in self.trained for p in getattr(model, name).parameters()]
        for p in params:
            p.requires_grad_(True)
        return params

    def forward(self, model: SemHiTok, images: Tensor) -> Any:
        """The forward whose output the stage's loss takes."""
        return model(images) if self.pixel else model.semantic_forward(images)

    def trained_modules(self, model: SemHiTok) -> list[nn.Module]:
        return [getattr(model, name) for name in self.trained]


# Stage 1: semantic head, EMA codebook, semantic decoder. Stage 2: pixel encoder, SGHC, pixel
# decoder, with the whole semantic branch frozen. Stage 3: the pixel decoder alone (the paper's
# enhance-decoder fine-tuning).
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("semantic", ("semantic_head", "semantic_quantizer", "semantic_decoder"), pixel=False, has_discriminator=False),
        Stage("pixel", ("pixel_encoder", "pixel_quantizer", "pixel_decoder"), pixel=True, has_discriminator=True),
        Stage("decoder", ("pixel_decoder",), pixel=True, has_discriminator=True),
    )
}

# The same table by name (configs validate ``stage`` against its keys).
TRAINED_MODULES: dict[str, tuple[str, ...]] = {name: s.trained for name, s in STAGES.items()}


def get_stage(name: str | Stage) -> Stage:
    """The stage called ``name`` (a :class:`Stage` passes through)."""
    if isinstance(name, Stage):
        return name
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    return STAGES[name]


def prepare_stage(model: SemHiTok, stage: str | Stage) -> list[nn.Parameter]:
    """Freeze every module ``stage`` does not train; return the parameters the optimizer gets."""
    return get_stage(stage).prepare(model)
