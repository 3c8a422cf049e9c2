"""Why a training run stopped early: each a one-line message the command line prints as is."""

from __future__ import annotations

import signal
from pathlib import Path

__all__ = ["CheckpointError", "RunFolderLocked", "TrainingAborted", "TrainingError", "TrainingInterrupted"]


class TrainingError(RuntimeError):
    """A run cannot go on (bad config for this run folder, non-finite loss, ...): one clear line."""


class CheckpointError(TrainingError):
    """A checkpoint that cannot be written (full disk, ...) or read back (damaged, not
    weights-only, made for another model)."""


class RunFolderLocked(TrainingError):
    """Another process trains into the same run folder."""


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM arrived: the run finished its step, saved a checkpoint and stopped.

    Attributes:
        signum: the signal; ``exit_code`` is the shell's ``128 + signum`` (130 for Ctrl-C, 143 for
            SIGTERM).
        step: the last finished step. checkpoint: the checkpoint holding it (None on ranks > 0).
    """

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint is not None else "checkpoint written by rank 0"
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; {where}; continue with --resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class TrainingAborted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop at once, without finishing the step or saving."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"aborted by a second {signal.Signals(signum).name}; the current step was not saved")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
