"""Run checkpoints: weights as safetensors, training state as a weights_only torch file.

A checkpoint is a folder ``step_00001234/`` holding ``model.safetensors`` (every model weight and
buffer), ``state.pt`` (optimizer, scheduler step, RNG states, data position: tensors and plain
Python containers only, so ``torch.load(..., weights_only=True)`` reads it and no pickled code can
run) and ``meta.json`` (step, loss, largest trained weight). It is written into a temporary folder
``.step_*`` and renamed into place, so a crash mid-write never leaves a checkpoint that looks
complete; a kill can leave the temporary folder, which :func:`remove_partial` deletes on the next
run. Only the newest ``keep_last`` are kept: an old checkpoint is first renamed aside (``.trash.*``)
and then deleted, so a kill during pruning never leaves a half-deleted ``step_*`` folder.

Before a checkpoint is written, :func:`weights_problem` checks the weights: every value finite and
every trained weight within :data:`MAX_ABS_WEIGHT` in magnitude. A diverging run (e.g. a far too
large learning rate) drives weights towards 1e30 before its loss turns NaN; such weights are never
saved, so the newest checkpoint is always one to go back to.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import current_umask
from .errors import CheckpointError

_NAME = re.compile(r"^step_(\d{8})$")

# AdamW moves a weight by about lr per step whatever the gradient, so reaching 1e4 from an O(1)
# initialisation at the paper's lr of 1e-4 would take 1e8 steps, far beyond any run: a trained
# weight this large means the run diverged (the probe saw 1e30 one step before the loss was NaN).
MAX_ABS_WEIGHT = 1e4


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


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module | Mapping[str, torch.Tensor],
    state: dict[str, Any],
    keep_last: int = 3,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep_last``.

    ``model``: a module (its whole ``state_dict`` is saved) or just the tensors to save (e.g. only
    the trained ones of a model whose frozen part is loaded from elsewhere).
    ``meta`` (JSON values, e.g. the step's loss) goes into ``meta.json`` beside the step.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"step_{step:08d}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=folder))
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide checkpoints from colleagues
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {final}: {_reason(exc)}") from exc
    try:
        tensors = model.state_dict() if isinstance(model, nn.Module) else model
        weights = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(weights, str(tmp / "model.safetensors"))
        (tmp / "model.safetensors").chmod(0o666 & ~current_umask())  # safetensors writes 0600
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, **(meta or {})}) + "\n")
        if final.exists():  # re-saving the same step (e.g. after a resume) replaces it
            aside = _rename_aside(final)
            tmp.rename(final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            tmp.rename(final)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {_reason(exc)}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(_rename_aside(old.path), ignore_errors=True)
    return final


def _rename_aside(path: Path) -> Path:
    """Move a checkpoint out of ``step_*`` naming in one atomic rename, before deleting it."""
    aside = Path(tempfile.mkdtemp(prefix=f".trash.{path.name}.", dir=path.parent))
    target = aside / path.name
    path.rename(target)
    return aside


def remove_partial(run_dir: str | Path) -> list[Path]:
    """Delete what a killed run left in ``checkpoints/``: unfinished ``.step_*`` writes and
    ``.trash.*`` folders of an interrupted pruning. Call it only while holding the run's lock."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    leftovers = [p for p in folder.iterdir() if p.name.startswith((".step_", ".trash."))]
    for p in leftovers:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return leftovers


def weights_problem(tensors: Iterable[tuple[str, torch.Tensor]], trained: set[str], bound: float = MAX_ABS_WEIGHT) -> str | None:
    """Why these weights must not be saved, or None when they are sane.

    Every floating tensor must be finite; those named in ``trained`` must also stay within
    ``bound`` in magnitude (frozen weights and statistics buffers are not ours to bound).
    """
    for name, t in tensors:
        if not t.is_floating_point():
            continue
        if not bool(torch.isfinite(t).all()):
            return f"{name} holds NaN or Inf"
        if name in trained and t.numel():
            largest = float(t.detach().abs().max())
            if largest > bound:
                return f"{name} reached |w| = {largest:.3g} (> {bound:.0e})"
    return None


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json`` ({} when missing or unreadable)."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def last_good_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The newest checkpoint whose recorded loss is finite (checkpoints are only written with
    sane weights; a loss recorded as null or non-finite marks a step not to go back to)."""
    for checkpoint in reversed(list_checkpoints(run_dir)):
        loss = read_meta(checkpoint.path).get("loss", 0.0)
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            return checkpoint
    return None


def load_checkpoint(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load weights into ``model`` (strict) and return the training state (``weights_only``).

    Raises:
        FileNotFoundError: a file is missing. CheckpointError: a file is damaged, holds code
            (not weights-only), or its weights do not fit ``model``.
    """
    folder = Path(path)
    weights = read_checkpoint_weights(folder, map_location)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {folder}: its weights do not fit the model ({_reason(exc)})") from exc
    return read_checkpoint_state(folder, map_location)


def read_checkpoint_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A checkpoint's ``model.safetensors`` as a dict (the caller puts the tensors in place).

    Raises:
        FileNotFoundError: a file is missing. CheckpointError: it is damaged.
    """
    folder = Path(path)
    for name in ("model.safetensors", "state.pt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {folder} has no {name}")
    try:
        return load_file(str(folder / "model.safetensors"), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: unreadable model.safetensors ({_reason(exc)})") from exc


def read_checkpoint_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's training state (``state.pt``, read with ``weights_only``: no code runs).

    Raises:
        FileNotFoundError: no ``state.pt``. CheckpointError: damaged, or not weights-only.
    """
    folder = Path(path)
    if not (folder / "state.pt").is_file():
        raise FileNotFoundError(f"checkpoint {folder} has no state.pt")
    try:
        return torch.load(folder / "state.pt", map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"checkpoint {folder}: state.pt is not a weights-only checkpoint; refusing to unpickle") from exc
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: unreadable state.pt ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors (weights_only-loadable)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s output, or one DDP rank's (``cuda_device``: its current GPU's)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "cuda_device" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_device"])
