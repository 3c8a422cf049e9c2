"""Training: stages, schedules, checkpoints, configs and the loop."""

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import DataConfig, OptimConfig, RunConfig, TrainConfig
from .errors import RunFolderLocked, TrainingAborted, TrainingError, TrainingInterrupted
from .loop import TrainResult, export_model, train
from .schedule import warmup_cosine
from .stages import STAGES, TRAINED_MODULES, Stage, get_stage, prepare_stage

__all__ = [
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "RunFolderLocked",
    "STAGES",
    "Stage",
    "TRAINED_MODULES",
    "TrainConfig",
    "TrainResult",
    "TrainingAborted",
    "TrainingError",
    "TrainingInterrupted",
    "export_model",
    "get_stage",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_stage",
    "save_checkpoint",
    "train",
    "warmup_cosine",
]
