"""``semhitok export``: a run folder's last checkpoint -> a SemHiTok model folder."""

from __future__ import annotations

import argparse

from . import common
from .common import info
from .errors import CLIError, one_line

NAME = "export"
HELP = "a run's last checkpoint -> a model folder"
DESCRIPTION = "Export the last checkpoint of a training run (its EMA weights if the run kept them) as a SemHiTok folder."
EXAMPLE = """\
example:
  semhitok export runs/s1 -o models/stage1
  semhitok train configs/tiny/stage2_pixel.yaml --init models/stage1 --data assets/photos"""


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
    info(f"exported {args.run_dir} -> {out}")
    return 0
