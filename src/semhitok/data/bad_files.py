"""Bad-data policy: a file that cannot be decoded is skipped, counted and logged, never fatal --
until too many are bad.

One unreadable JPEG in fifty million must not kill a week-long run, but a run where a third of the
shards are truncated must not silently train on the rest either. :class:`BadDataTracker` holds the
counts for one reader (one per DataLoader worker process: each worker judges its own share), logs
every bad file at WARNING level with its name and reason, and raises :class:`BadDataError` once
the bad fraction passes ``max_bad_fraction`` after at least ``min_seen`` files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["BadDataError", "BadDataTracker"]

logger = logging.getLogger("semhitok.data")


class BadDataError(RuntimeError):
    """Too large a fraction of the data could not be decoded; the run must stop."""


@dataclass
class BadDataTracker:
    """Counts decoded and undecodable files and enforces the bad-fraction threshold.

    Args:
        max_bad_fraction: largest tolerated fraction of bad files, in [0, 1]. ``1.0`` never stops.
        min_seen: the threshold is only enforced once this many files (good + bad) were seen, so
            that one bad file among the first three does not stop a run. ``check(final=True)``
            (called at the end of a complete pass) ignores it.
    """

    max_bad_fraction: float = 0.05
    min_seen: int = 100
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

    @property
    def bad_fraction(self) -> float:
        """Bad files / files seen (0 before anything was seen)."""
        return self.bad / self.seen if self.seen else 0.0

    def record_good(self) -> None:
        """One file decoded."""
        self.seen += 1

    def record_bad(self, name: str, reason: str) -> None:
        """One file skipped: count it, log it (WARNING, name and reason), enforce the threshold.

        Raises:
            BadDataError: the bad fraction now exceeds the threshold (after ``min_seen`` files).
        """
        self.seen += 1
        self.bad += 1
        if self.first_bad is None:
            self.first_bad = (name, reason)
        logger.warning("skipping undecodable file %s: %s (%d bad of %d seen)", name, reason, self.bad, self.seen)
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
            f"({100.0 * self.bad_fraction:.1f}% > threshold {100.0 * self.max_bad_fraction:.1f}%){first}"
        )
