"""How the commands talk: warning lines on stderr, plain lines on stdout, the help layout."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from .errors import one_line

PROG = "semhitok"


def warn(message: str) -> None:
    """One ``semhitok: warning: ...`` line on stderr."""
    print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def library_warnings_as_lines() -> Iterator[None]:
    """Show the warnings semhitok's own code raises (categories defined in the package, such as
    :class:`semhitok.precision.PrecisionWarning`) as ``semhitok: warning:`` lines, like the
    commands' own; other packages' warnings keep Python's format, with the place they came from."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
        if category.__module__.split(".")[0] == PROG:
            warn(str(message))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


_deferred: list[str] = []


def warn_on_success(message: str) -> None:
    """A warning printed only if the command succeeds (see cli/main.py): a failed command says one
    line, its error, and a warning about outputs it did not write would only add noise."""
    _deferred.append(message)


def flush_deferred(show: bool) -> None:
    """Print (``show``) or drop the deferred warnings; called once per command by cli/main.py."""
    messages = list(_deferred)
    _deferred.clear()
    if show:
        for message in messages:
            warn(message)


def info(message: str) -> None:
    """A plain line on stdout (what a command did)."""
    print(message, flush=True)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written and leaves room for long option names."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.choices:
            # argparse measures subcommand names without their extra indent; a long one then wraps.
            longest = max(len(name) for name in action.choices) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def progress(total_batches: int, desc: str) -> Any:
    """A tqdm bar over batches on stderr: shown only for more than one batch and on a terminal."""
    from tqdm import tqdm

    return tqdm(total=total_batches, desc=desc, unit="batch", file=sys.stderr, disable=None if total_batches > 1 else True, leave=False)
