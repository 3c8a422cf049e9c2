"""Training: stages, schedules, checkpoints, configs and the loop."""

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import DataConfig, OptimConfig, RunConfig, TrainConfig
from .loop import TrainingError, TrainResult, export_model, train
from .schedule import warmup_cosine
from .stages import TRAINED_MODULES, prepare_stage

__all__ = [
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TRAINED_MODULES",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "export_model",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_stage",
    "save_checkpoint",
    "train",
    "warmup_cosine",
]
