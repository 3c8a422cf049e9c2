"""Training: stages, schedules, checkpoints (the loop lands with issue 3)."""

from .schedule import warmup_cosine
from .stages import TRAINED_MODULES, prepare_stage

__all__ = ["TRAINED_MODULES", "prepare_stage", "warmup_cosine"]
