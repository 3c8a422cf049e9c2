"""Graceful stop on SIGINT (Ctrl-C) and SIGTERM (pre-emption by a job scheduler).

The first signal only sets a flag: the loop finishes its step, saves a checkpoint and raises
:class:`~semhitok.training.errors.TrainingInterrupted`. A second signal raises
:class:`~semhitok.training.errors.TrainingAborted` at once (the user means it). Handlers can only be
installed from the main thread; elsewhere (a library caller's worker thread) this does nothing.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from .errors import TrainingAborted

__all__ = ["StopSignals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: ``requested`` is the first signal received (None while none)."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise TrainingAborted(signum)
        self.requested = signum
