"""What a path names, from one ``stat`` and before anything opens it.

``open()`` on a FIFO blocks until a writer appears and a character device such as ``/dev/zero``
never ends, so every reader of user-given files (images, token files, weights files) asks this
first and refuses anything but a regular file, each with its own one-line message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["FOLDER", "MISSING", "REGULAR", "file_kind"]

MISSING, FOLDER, REGULAR = "missing", "folder", "regular"


def file_kind(path: str | Path) -> str:
    """``MISSING``, ``FOLDER``, ``REGULAR`` (symlinks followed), or, for anything else, a phrase
    for a message: "a FIFO (named pipe)", "a socket", "a device", "a special file".

    Raises:
        OSError: ``stat`` failed for another reason than a missing path (permission denied, a
            parent that is a file, ...): the caller words it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return MISSING
    if stat.S_ISDIR(mode):
        return FOLDER
    if stat.S_ISREG(mode):
        return REGULAR
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
