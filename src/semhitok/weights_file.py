"""Reading a weights file the user names: ``.safetensors``, or a torch file loaded weights-only.

One reader for every weights file semhitok takes (the FID Inception file, the VGG16 file for LPIPS
and the perceptual loss): no pickle code is ever executed, and every problem -- a missing or
non-regular file, a damaged file, a pickle payload, a file that holds something other than a flat
dict of tensors, NaN/Inf values -- is one :class:`WeightsFileError` whose one-line message names
the file.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from .file_kind import FOLDER, MISSING, REGULAR, file_kind

__all__ = ["WeightsFileError", "read_weights_file"]

_REFUSED = "not a weights-only checkpoint; refusing to unpickle"
# The first bytes of a torch file: a zip archive (torch.save since 1.6) or a raw pickle stream
# (protocol 2+ starts with 0x80). Anything else is not a torch file at all.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


class WeightsFileError(ValueError):
    """A weights file that cannot be used; ``str()`` is one line naming the file."""


def read_weights_file(path: str | os.PathLike[str], what: str = "weights file", check_finite: bool = True) -> dict[str, Tensor]:
    """Read ``path`` into a dict of CPU tensors.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. A ``{"state_dict": {...}}`` wrapper is unwrapped.

    Args:
        path: the file.
        what: how messages call the file, e.g. ``"--fid-weights"`` or ``"loss.vgg_weights"``; empty:
            the path alone.
        check_finite: refuse floating tensors holding NaN or Inf.

    Raises:
        WeightsFileError: see the module doc.
    """
    p = Path(path)
    _check_regular_file(p, what)
    state = _read_safetensors(p, what) if p.suffix == ".safetensors" else _read_torch(p, what)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise WeightsFileError(f"{_name(what, p)} does not hold a state dict of tensors (name -> tensor)")
    if check_finite:
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise WeightsFileError(f"{_name(what, p)} holds NaN or Inf values (in {', '.join(sorted(bad)[:3])}{', ...' if len(bad) > 3 else ''})")
    return dict(state)


def _check_regular_file(p: Path, what: str) -> None:
    """A FIFO or device would block or stream forever: only regular files are read."""
    try:
        kind = file_kind(p)
    except OSError as exc:
        raise WeightsFileError(f"{_name(what, p)}: cannot read it: {_reason(exc)}") from exc
    if kind == MISSING:
        raise WeightsFileError(f"{_name(what, p)}: no such file")
    if kind == FOLDER:
        raise WeightsFileError(f"{_name(what, p)} is a folder, not a weights file")
    if kind != REGULAR:
        raise WeightsFileError(f"{_name(what, p)} is not a regular file (a pipe or a device?); give a weights file")


def _read_safetensors(p: Path, what: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except SafetensorError as exc:
        raise WeightsFileError(f"{_name(what, p)} is not a readable .safetensors file ({_reason(exc)})") from exc
    except OSError as exc:
        raise WeightsFileError(f"{_name(what, p)}: cannot read it: {_reason(exc)}") from exc


def _read_torch(p: Path, what: str) -> object:
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise WeightsFileError(f"{_name(what, p)}: cannot read it: {_reason(exc)}") from exc
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise WeightsFileError(f"{_name(what, p)} is neither a .safetensors file nor a torch weights file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: one line only
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain containers: a pickle payload (code to
        # run on load) or an object checkpoint (a whole nn.Module, an optimizer) ends here.
        raise WeightsFileError(f"{_name(what, p)} is {_REFUSED}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:  # truncated or damaged
        raise WeightsFileError(f"{_name(what, p)} is a damaged torch file ({_reason(exc)})") from exc
    except OSError as exc:
        raise WeightsFileError(f"{_name(what, p)}: cannot read it: {_reason(exc)}") from exc


def _name(what: str, p: Path) -> str:
    return f"{what} {p}" if what else str(p)


def _reason(exc: BaseException, limit: int = 160) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
