"""Undecodable data files during eval and visualize: one line on the terminal, details in a log file.

The data readers skip a file they cannot decode and list it in the ``bad_files_log`` they are
given (see :class:`semhitok.data.BadDataTracker`); too many bad files stop the command with one
error line that names that log. The log lies beside the output folder (``OUT.bad_files.log``), not
inside it, because a failed command leaves no output folder but the user still needs the list.
It is created only when a bad file is met.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .messages import warn


def fresh_log(output: str | Path) -> Path:
    """The log path for ``output``, with a previous run's log removed (only rank 0 under torchrun)."""
    log = Path(str(output).rstrip("/\\") + ".bad_files.log")
    if os.environ.get("RANK", "0") == "0":
        # Nothing to remove, or a destination that cannot be written: the output itself is checked
        # (and refused with one line) right after this.
        with contextlib.suppress(OSError):
            log.unlink()
    return log


def warn_if_any(log: Path) -> None:
    """After a run that completed: one warning line when some files were skipped."""
    if not log.is_file():
        return
    with open(log, encoding="utf-8", errors="replace") as f:
        count = sum(1 for line in f if line.strip())
    warn(f"{count} undecodable file{'s were' if count != 1 else ' was'} skipped; the list is in {log}")
