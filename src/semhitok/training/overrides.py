"""``key.sub=value`` overrides from the command line onto a nested config mapping."""

from __future__ import annotations

import copy
from typing import Any

from ..yaml_io import parse_yaml


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with each ``a.b.c=value`` applied.

    Values are parsed as YAML scalars/flow collections (``1e-4`` -> float, ``true`` -> bool,
    ``[1, 2]`` -> list, ``null`` -> None); intermediate mappings are created as needed. A key that
    walks into a non-mapping value is an error, so typos surface instead of being ignored later.

    Raises:
        ValueError: one line naming the override (a malformed item, or a value that is not YAML,
            e.g. ``a=[1,`` or a Python tag).
    """
    out = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"override {item!r} must look like key.sub=value")
        value = parse_yaml(raw, f"override {item!r}: cannot parse the value", locate=False) if raw.strip() else ""
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out
