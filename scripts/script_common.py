"""Helpers shared by the scripts in this folder (run as ``python scripts/NAME.py``, so this folder
is on ``sys.path``): the CPU's name for records and model cards, and writing a matplotlib figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (runs on other machines take other times)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, target: Path) -> Path:
    """Lay out, write and close ``fig``; returns ``target``."""
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    pyplot().close(fig)
    return target
