"""``semhitok export``: a run folder's last checkpoint -> a SemHiTok model folder."""

from __future__ import annotations

import argparse

from . import common
from .common import info
from .errors import CLIError, one_line, os_reason

NAME = "export"
HELP = "a run's last checkpoint -> a model folder"
DESCRIPTION = "Export the last checkpoint of a training run (its EMA weights if the run kept them) as a SemHiTok folder."
EXAMPLE = """\
example:
  semhitok export runs/s1 -o models/stage1
  semhitok train configs/tiny/stage2_pixel.yaml --init models/stage1 --data assets/photos

The folder is written whole or not at all (a full disk leaves nothing behind)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'semhitok train'")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="the model folder to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import TrainingError, export_model

    try:
        out = export_model(args.run_dir, args.output)
    except (TrainingError, FileNotFoundError, ValueError) as exc:
        raise CLIError(one_line(exc)) from exc
    except OSError as exc:  # the model folder is written whole or not at all; this names the path
        raise CLIError(_os_message(exc)) from exc
    info(f"exported {args.run_dir} -> {out}")
    return 0


def _os_message(exc: OSError) -> str:
    """``PATH: reason`` for a plain OSError; an OutputError's own one-line message names its path."""
    if exc.filename:
        return f"{exc.filename}: {os_reason(exc)}"
    return one_line(exc) or os_reason(exc)
