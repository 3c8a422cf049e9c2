"""``--model DIR`` / ``--preset NAME`` -> a model on the chosen device; bad folders become CLIErrors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CLIError, one_line
from .messages import warn_on_success
from .options import PRESET_SEED

if TYPE_CHECKING:
    import torch

    from ..modeling import SemHiTok


@dataclass
class LoadedModel:
    """A model and where it came from."""

    model: SemHiTok
    source: str  # "model folder X" or "preset 'tiny'"
    untrained: bool

    @property
    def untrained_note(self) -> str:
        return f"the model is UNTRAINED ({self.source}, random weights, seed {PRESET_SEED}): its outputs say nothing about what a trained SemHiTok does"


def resolve_device(name: str | None) -> torch.device:
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for, but CUDA is not available here (use --device cpu)")
    return torch.device(name)


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Build the model named by ``--model`` or ``--preset``; every bad input becomes a CLIError."""
    device = resolve_device(getattr(args, "device", None))
    if args.preset is not None:
        return LoadedModel(_preset_model(args.preset, device), f"preset {args.preset!r}", untrained=True)
    return LoadedModel(folder_model(model_folder(args.model), device), f"model folder {args.model}", untrained=False)


def model_folder(name_or_path: str) -> Path:
    """``--model``: a folder, or the name of a model shipped in the package (``mini-semhitok``).
    A folder of that name in the working directory wins over the shipped model."""
    from ..pretrained import PRETRAINED, pretrained_path

    path = Path(name_or_path)
    if path.exists() or name_or_path not in PRETRAINED:
        return path
    try:
        return pretrained_path(name_or_path)
    except FileNotFoundError as exc:
        raise CLIError(one_line(exc)) from exc


def _preset_model(name: str, device: torch.device) -> SemHiTok:
    import torch

    from ..config import PRESETS, SemHiTokConfig
    from ..modeling import SemHiTok

    if name not in PRESETS:
        raise CLIError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    config = SemHiTokConfig.from_preset(name)
    warn_on_success(f"--preset {name} builds an UNTRAINED model with random weights (seed {PRESET_SEED}); use --model DIR for a trained tokenizer")
    with torch.random.fork_rng(devices=[]):  # fixed weights, without disturbing the caller's RNG
        torch.manual_seed(PRESET_SEED)
        model = SemHiTok(config, load_teacher_weights=False)
    return model.to(device).eval()


def folder_model(folder: Path, device: torch.device) -> SemHiTok:
    """``SemHiTok.from_pretrained``; its one error type, ModelFolderError, becomes a CLIError."""
    from ..modeling import ModelFolderError, SemHiTok

    try:
        return SemHiTok.from_pretrained(folder, device=device)
    except ModelFolderError as exc:
        raise CLIError(str(exc)) from exc
