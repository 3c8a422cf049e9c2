"""Where commands write: atomic outputs (see :mod:`semhitok.atomic`), their names, and the rule
that no output may overwrite an input."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..atomic import AtomicDir, AtomicFile, OutputError
from .errors import CLIError

# The commands' outputs: a failed write raises OutputError, which `semhitok` reports as one line
# with exit status 2 (see cli/main.py).
OutputFile = AtomicFile
OutputDir = AtomicDir

__all__ = ["OutputDir", "OutputError", "OutputFile", "output_stems", "refuse_overwriting_inputs"]

_UNSAFE = re.compile(r"[\x00-\x1f/\\:]+")


def output_stems(files: Sequence[str] | None, count: int) -> list[str]:
    """File-name stems for ``count`` outputs: each input's stem, made unique; else image_0000...

    ``a/x.jpg`` and ``b/x.png`` give ``x`` and ``x_2``.
    """
    stems: list[str] = []
    used: set[str] = set()
    for i in range(count):
        stem = ""
        if files is not None:
            stem = _UNSAFE.sub("_", Path(str(files[i])).stem).lstrip(".").strip()
        if not stem:
            stem = f"image_{i:04d}"
        candidate, n = stem, 2
        while candidate.lower() in used:  # also unique on case-insensitive file systems
            candidate, n = f"{stem}_{n}", n + 1
        used.add(candidate.lower())
        stems.append(candidate)
    return stems


def refuse_overwriting_inputs(inputs: Iterable[str | Path], output: str | Path, flag: str = "-o") -> None:
    """Refuse, before anything is written, an output path that is one of the inputs (``encode
    x.png -o x.png`` would replace the photo with a token file), also through links or ``..``."""
    out = Path(output)
    for given in inputs:
        path = Path(given)
        if _same_file(path, out):
            raise CLIError(f"{flag} {output} is also an input ({given}); writing it would destroy the input: choose another output")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # same inode: catches hard links and symlinks
    except OSError:  # one of them does not exist yet
        return os.path.abspath(a) == os.path.abspath(b) or a.resolve() == b.resolve()
