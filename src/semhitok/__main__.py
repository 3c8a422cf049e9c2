"""``python -m semhitok ...`` runs the command line (the same as the ``semhitok`` script)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
