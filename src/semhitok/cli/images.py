"""Image inputs of encode and reconstruct: checked up front, read, fit to the model, batched."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..file_kind import FOLDER, MISSING, REGULAR, file_kind
from .errors import CLIError, one_line, os_reason
from .messages import progress

if TYPE_CHECKING:
    import torch


def check_image_paths(paths: Sequence[str]) -> None:
    """Fail before any work when an input is missing, a folder, or not a regular file (a FIFO
    would block the read forever)."""
    for p in paths:
        try:
            kind = file_kind(p)
        except OSError as exc:
            raise CLIError(f"cannot read {p}: {os_reason(exc)}") from exc
        if kind == MISSING:
            raise CLIError(f"{p}: no such file")
        if kind == FOLDER:
            raise CLIError(f"{p} is a directory, not an image (give the image files, e.g. {p.rstrip('/')}/*.jpg)")
        if kind != REGULAR:
            raise CLIError(f"{p} is not a regular file (a pipe or a device?); give image files")


def load_fitted(path: str, size: int, policy: str) -> torch.Tensor:
    """Read one image and fit it to (1, 3, size, size) with the resize policy."""
    from ..image_io import load_image
    from ..modeling import fit_to_size

    try:
        image = load_image(path)
    except FileNotFoundError as exc:
        raise CLIError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise CLIError(f"{path} is a directory, not an image") from exc
    except ValueError as exc:
        raise CLIError(short(exc)) from exc
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {os_reason(exc)}") from exc
    h, w = image.shape[-2:]
    if policy == "error" and (h, w) != (size, size):
        raise CLIError(f"{path} is {w}x{h} pixels but the model takes {size}x{size} (use --resize crop or --resize stretch)")
    return fit_to_size(image.unsqueeze(0), size, policy)  # type: ignore[arg-type]


def image_batches(paths: Sequence[str], size: int, policy: str, batch_size: int, desc: str) -> Iterator[tuple[range, torch.Tensor]]:
    """Yield ``(indices, images (b, 3, size, size))`` over ``paths``, with a progress bar on stderr."""
    import torch

    starts = range(0, len(paths), batch_size)
    with progress(len(starts), desc) as bar:
        for start in starts:
            idx = range(start, min(start + batch_size, len(paths)))
            yield idx, torch.cat([load_fitted(paths[i], size, policy) for i in idx])
            bar.update(1)


def short(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = one_line(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
