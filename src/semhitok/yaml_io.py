"""YAML reading with YAML 1.2 floats: ``1e-4`` is a number, as users expect, not a string.

PyYAML follows YAML 1.1, whose float pattern needs a dot (``1.0e-4``), so ``lr: 1e-4`` would load
as the string "1e-4". This loader adds the 1.2 pattern; everything else is ``yaml.SafeLoader``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text (a document or a single value such as ``3e-4`` or ``[1, 2]``)."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file."""
    return parse_yaml(Path(path).read_text())
