"""The ``semhitok`` command: a parser with one subcommand per module, and the error policy.

Bad input (a missing file, a broken model folder, a wrong option) ends with one line on stderr,
``semhitok: error: ...``, and exit status 2. An unexpected exception is a bug: one line and exit
status 1, or the full traceback with ``SEMHITOK_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import data, decode, demo, describe, detokenize, encode, eval, export, generate, reconstruct, tokenize, train, visualize
from .common import HelpFormatter
from .messages import flush_deferred, library_warnings_as_lines
from ..atomic import OutputError
from ..modeling import ModelFolderError
from ..weights_file import WeightsFileError
from .errors import CLIError, one_line

PROG = "semhitok"
# Library errors that are the user's input (an output that cannot be written, a broken model
# folder, a refused weights file), recognised by type wherever a command lets them through: one
# line naming the path, exit status 2.
USER_ERRORS = (OutputError, ModelFolderError, WeightsFileError)
# Commands that work today, so --help never lists a command that cannot run.
COMMANDS = (demo, train, export, encode, decode, reconstruct, eval, visualize, tokenize, detokenize, data, generate, describe)

DESCRIPTION = "SemHiTok: a discrete image tokenizer with a semantic-guided hierarchical codebook."
EPILOG = """\
examples:
  semhitok demo -o outputs/demo
  semhitok train configs/tiny/stage1_semantic.yaml --data assets/photos --out runs/s1
  semhitok encode photos/*.jpg --model runs/stage2/model -o tokens.npz
  semhitok decode tokens.npz --model runs/stage2/model -o decoded/
  semhitok reconstruct photos/*.jpg --preset tiny -o recon/    (untrained model, to try the tool)
  semhitok generate "a red ankle boot" --model runs/mllm/final -o samples/ --n 4 --seed 0
  semhitok describe photos/*.jpg --model runs/mllm/final --question "What is in the image?"

Run 'semhitok COMMAND --help' for a command's options. Set SEMHITOK_DEBUG=1 to see tracebacks."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``semhitok: error: ... (see 'semhitok encode --help')``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _debug() -> bool:
    return os.environ.get("SEMHITOK_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 internal error)."""
    try:
        return _run(argv)
    finally:
        flush_deferred(show=False)  # a failed command prints its error line only


def _run(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as exc:  # --help and --version exit through argparse
            return exc.code if isinstance(exc.code, int) else 0
        if extra:
            # argparse stops filling `train`'s KEY=VALUE positionals at the first option; overrides
            # written after the options arrive here instead.
            if getattr(args, "overrides", None) is not None and all("=" in e and not e.startswith("-") for e in extra):
                args.overrides += extra
            else:
                raise CLIError(f"unrecognized arguments: {' '.join(extra)} (see '{PROG} --help')")
        if args.command is None:
            names = ", ".join(m.NAME for m in COMMANDS)
            raise CLIError(f"no command given; choose one of {names} (see '{PROG} --help')")
        with library_warnings_as_lines():
            code = int(args.func(args) or 0)
        flush_deferred(show=True)
        return code
    except CLIError as exc:
        if _debug() and exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return exc.exit_code
    except USER_ERRORS as exc:
        if _debug():
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # e.g. `semhitok reconstruct ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's final flush quiet
        except OSError:
            pass
        return 1
    except Exception as exc:
        if _debug():
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {one_line(exc)} (run with SEMHITOK_DEBUG=1 for the traceback)",
            file=sys.stderr, flush=True,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
