"""Errors the command line reports as one line on stderr (``semhitok: error: ...``, exit code 2)."""

from __future__ import annotations

import errno


class CLIError(Exception):
    """A problem with the user's input (files, options, model folder): reported without a traceback.

    Args:
        message: one line saying what is wrong and, where it helps, what to do about it.
        exit_code: the process exit status (2, like argparse's usage errors).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def one_line(text: object) -> str:
    """Collapse a message onto one line (exception texts sometimes span several)."""
    return " ".join(str(text).split())


def os_reason(exc: BaseException) -> str:
    """A short, human reason for an OSError ("permission denied", "no such file or directory")."""
    if isinstance(exc, OSError) and exc.errno is not None:
        text = exc.strerror or errno.errorcode.get(exc.errno, str(exc))
        return text[:1].lower() + text[1:]
    return one_line(exc) or type(exc).__name__
