"""The ``semhitok`` command line (``semhitok --help``); one module per command."""

from .errors import CLIError
from .main import main

__all__ = ["CLIError", "main"]
