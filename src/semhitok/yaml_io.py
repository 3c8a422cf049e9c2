"""Safe YAML reading with YAML 1.2 floats and one-line errors that name the file and the line.

PyYAML follows YAML 1.1, whose float pattern needs a dot (``1.0e-4``), so ``lr: 1e-4`` would load
as the string "1e-4". This loader adds the 1.2 pattern; otherwise it is ``yaml.SafeLoader`` (no
Python tags: ``!!python/object/apply:os.system`` is refused, never run), and it also refuses a key
given twice in one mapping (PyYAML would silently keep the last one).

Errors are :class:`YAMLFileError` (a ``ValueError``) with one sentence such as
``configs/x.yaml: line 3, column 1: a tab character cannot indent YAML; use spaces``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class YAMLFileError(ValueError):
    """YAML text that cannot be read; ``str()`` is one line naming the source and the line."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden after
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; SafeLoader's own message follows below
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in the same mapping", key_node.start_mark
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


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


def _reason(exc: yaml.YAMLError) -> str:
    """The problem of a PyYAML error as a short clause (its own text spans several lines)."""
    problem = str(getattr(exc, "problem", None) or type(exc).__name__)
    tag = re.search(r"constructor for the tag '([^']*)'", problem)
    if tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        if name.startswith("!!python/"):
            return f"refusing the Python tag {name} (configs hold plain values; nothing is executed)"
        return f"unknown tag {name} (configs hold plain values)"
    if "'\\t'" in problem:
        return "a tab character cannot indent YAML; use spaces"
    context = getattr(exc, "context", None)
    return " ".join(f"{context + ', ' if context else ''}{problem}".split())


def _location(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def parse_yaml(text: str, source: str = "<text>", *, locate: bool = True) -> Any:
    """Parse YAML text (a document or a single value such as ``3e-4`` or ``[1, 2]``).

    Raises:
        YAMLFileError: ``{source}: line L, column C: {what is wrong}`` on one line (without the
            line and column when ``locate`` is False, e.g. for a one-line value).
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where = _location(exc) if locate else ""
        raise YAMLFileError(f"{source}: {where}{_reason(exc)}") from None


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file.

    Raises:
        YAMLFileError: the file is not UTF-8 text or not valid YAML (one line naming it).
        OSError: the file cannot be read.
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLFileError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    return parse_yaml(text, str(path))
