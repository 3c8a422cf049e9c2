"""Run checkpoints: weights as safetensors, training state as a weights_only torch file.

A checkpoint is a folder ``step_00001234/`` holding ``model.safetensors`` (every model weight and
buffer), ``state.pt`` (optimizer, scheduler step, RNG states, data position: tensors and plain
Python containers only, so ``torch.load(..., weights_only=True)`` reads it and no pickled code can
run) and ``meta.json``. It is written into a temporary folder and renamed into place, so a crash
mid-write never leaves a checkpoint that looks complete; only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

_NAME = re.compile(r"^step_(\d{8})$")


@dataclass
class Checkpoint:
    """A checkpoint folder found on disk."""

    path: Path
    step: int


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [Checkpoint(p, int(m.group(1))) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found, key=lambda c: c.step)


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep_last``."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=folder))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step}) + "\n")
        if final.exists():  # re-saving the same step (e.g. after a resume) replaces it
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load weights into ``model`` (strict) and return the training state (``weights_only``)."""
    folder = Path(path)
    for name in ("model.safetensors", "state.pt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {folder} has no {name}")
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(map_location)), strict=True)
    return torch.load(folder / "state.pt", map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors (weights_only-loadable)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
