"""Undecodable data files during eval and visualize: one summary line, the details in a log file.

The data readers skip a file they cannot decode and log one WARNING per file on the
``semhitok.data`` logger; on a terminal that is a line per file, followed by the error when too
many are bad. While a command runs, :func:`collect_bad_files` keeps those records instead, so the
command can write them to ``bad_files.log`` in its output folder and print a single line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

DATA_LOGGER = "semhitok.data"
LOG_NAME = "bad_files.log"


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)  # the readers log each bad file at DEBUG (semhitok.data.bad_files)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def collect_bad_files() -> Iterator[list[str]]:
    """Within the block, data warnings go to the returned list, not to stderr."""
    logger = logging.getLogger(DATA_LOGGER)
    collector = _Collector()
    propagate, level = logger.propagate, logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    logger.propagate = False  # no per-file lines on stderr (nor through the root logger)
    try:
        yield collector.lines
    finally:
        logger.removeHandler(collector)
        logger.propagate = propagate
        logger.setLevel(level)


def summary(lines: list[str], log_path: str) -> str:
    """The one warning line for a run that skipped files."""
    return f"{len(lines)} data warning{'s' if len(lines) != 1 else ''} (undecodable files were skipped); details in {log_path}"
