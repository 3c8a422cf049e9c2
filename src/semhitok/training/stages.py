"""Which modules each training stage trains (DESIGN.md §1, paper Tab. 3)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..modeling import SemHiTok

Stage = Literal["semantic", "pixel", "decoder"]

# The top-level SemHiTok modules trained in each stage; every other module is frozen. The EMA
# semantic codebook has no gradient but "trains" through its EMA update, which needs train mode.
TRAINED_MODULES: dict[str, tuple[str, ...]] = {
    "semantic": ("semantic_head", "semantic_quantizer", "semantic_decoder"),
    "pixel": ("pixel_encoder", "pixel_quantizer", "pixel_decoder"),
    "decoder": ("pixel_decoder",),
}


def prepare_stage(model: SemHiTok, stage: str) -> list[nn.Parameter]:
    """Freeze every module the stage does not train; return the parameters the optimizer gets.

    Stage 1 (``semantic``): head, EMA codebook, semantic decoder. Stage 2 (``pixel``): pixel
    encoder, SGHC, pixel decoder, with the whole semantic branch frozen. Stage 3 (``decoder``): the
    pixel decoder alone (the paper's enhance-decoder fine-tuning). The teacher is always frozen.
    """
    if stage not in TRAINED_MODULES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(TRAINED_MODULES)}")
    trained = TRAINED_MODULES[stage]
    model.freeze([name for name, _ in model.named_children() if name not in trained and name != "teacher"])
    params = [p for name in trained for p in getattr(model, name).parameters()]
    for p in params:
        p.requires_grad_(True)
    return params
