"""Bad-data policy: a file that cannot be decoded is skipped, counted and logged, never fatal --
until too many are bad.

One unreadable JPEG in fifty million must not kill a week-long run, but a run where a third of the
shards are truncated must not silently train on the rest either. :class:`BadDataTracker` holds the
counts for one reader (one per DataLoader worker process: each worker judges its own share) and
raises :class:`BadDataError` once the bad fraction passes ``max_bad_fraction`` after at least
``min_seen`` files.

Each bad file's name and reason go to a log file when one is given (``log_path``; training writes
``RUN_DIR.bad_files.log``, eval ``OUT.bad_files.log``), else to the ``semhitok.data`` logger at DEBUG level -- never one
terminal line per file. The error itself is one line: the count, the first bad file and its
reason, and where the details are.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BadDataError", "BadDataTracker", "reason_for"]

logger = logging.getLogger("semhitok.data")

_RERAISED_MARK = "BadDataError: "


class BadDataError(RuntimeError):
    """Too large a fraction of the data could not be decoded; the run must stop.

    Its message is one line. A DataLoader worker's exception comes back to the main process
    re-created from a message holding the worker's whole traceback; the one line is recovered
    from that text, so the error stays one line whichever process raised it.
    """

    def __init__(self, message: str = "") -> None:
        text = str(message)
        if "\n" in text and _RERAISED_MARK in text:
            text = text.rsplit(_RERAISED_MARK, 1)[1]
        super().__init__(" ".join(text.split()))


def reason_for(exc: BaseException, name: str) -> str:
    """The one-line reason of a decoding error, without the file name its message starts with
    (the tracker prints the name itself): ``"x.png is not an image ..."`` -> ``"not an image ..."``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for prefix in (f"{name} is ", f"{name}: ", f"{name} "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


@dataclass
class BadDataTracker:
    """Counts decoded and undecodable files and enforces the bad-fraction threshold.

    Args:
        max_bad_fraction: largest tolerated fraction of bad files, in [0, 1]. ``1.0`` never stops.
        min_seen: the threshold is only enforced once this many files (good + bad) were seen, so
            that one bad file among the first three does not stop a run. ``check(final=True)``
            (called at the end of a complete pass) ignores it.
        log_path: file that gets one line per bad file (appended to; several DataLoader workers
            may share it: each line is one ``write`` to a file opened with ``O_APPEND``). None:
            the lines go to the ``semhitok.data`` logger at DEBUG level.
    """

    max_bad_fraction: float = 0.05
    min_seen: int = 100
    log_path: str | Path | None = None
    seen: int = field(default=0, init=False)
    bad: int = field(default=0, init=False)
    first_bad: tuple[str, str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_bad_fraction, bool) or not isinstance(self.max_bad_fraction, (int, float)):
            raise TypeError(f"max_bad_fraction must be a number, got {type(self.max_bad_fraction).__name__}")
        if not 0.0 <= float(self.max_bad_fraction) <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if isinstance(self.min_seen, bool) or not isinstance(self.min_seen, int) or self.min_seen < 1:
            raise ValueError(f"min_seen must be an integer >= 1, got {self.min_seen!r}")
        if self.log_path is not None and not isinstance(self.log_path, (str, Path)):
            raise TypeError(f"log_path must be a path or None, got {type(self.log_path).__name__}")

    @property
    def bad_fraction(self) -> float:
        """Bad files / files seen (0 before anything was seen)."""
        return self.bad / self.seen if self.seen else 0.0

    def record_good(self) -> None:
        """One file decoded."""
        self.seen += 1

    def record_bad(self, name: str, reason: str) -> None:
        """One file skipped: count it, log it (name and reason, see ``log_path``), enforce the threshold.

        Raises:
            BadDataError: the bad fraction now exceeds the threshold (after ``min_seen`` files).
        """
        self.seen += 1
        self.bad += 1
        reason = " ".join(str(reason).split()) or "unknown reason"
        if self.first_bad is None:
            self.first_bad = (name, reason)
        self._log(f"skipped undecodable file {name}: {reason}")
        self.check()

    def check(self, final: bool = False) -> None:
        """Raise :class:`BadDataError` if the bad fraction exceeds the threshold.

        ``final=True`` marks the end of a full pass: the fraction is then definitive and
        ``min_seen`` no longer applies.
        """
        if self.seen == 0 or (not final and self.seen < self.min_seen):
            return
        if self.bad_fraction > self.max_bad_fraction:
            raise BadDataError(self.message())

    def message(self) -> str:
        """The one-line explanation used by :class:`BadDataError`."""
        first = f"; first: {self.first_bad[0]}: {self.first_bad[1]}" if self.first_bad else ""
        return (
            f"{self.bad} of {self.seen} files could not be decoded "
            f"({100.0 * self.bad_fraction:.1f}% > threshold {100.0 * self.max_bad_fraction:.1f}%){first}; {self.details_hint()}"
        )

    def details_hint(self) -> str:
        """Where the list of bad files is (for messages)."""
        if self.log_path is not None:
            return f"every bad file is listed in {self.log_path}"
        return "every bad file is logged at DEBUG level by the 'semhitok.data' logger"

    def _log(self, line: str) -> None:
        if self.log_path is None:
            logger.debug(line)
            return
        try:
            # One os.write per line on an O_APPEND descriptor: lines of several workers never interleave.
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, (line + "\n").encode("utf-8", errors="replace"))
            finally:
                os.close(fd)
        except OSError as exc:
            # An unwritable log must not turn one bad image into a crash; the DEBUG logger still has it.
            logger.debug("%s (could not write %s: %s)", line, self.log_path, exc)
