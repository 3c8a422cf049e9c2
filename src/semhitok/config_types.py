"""Check config values against their dataclass annotations, with one-line messages naming the key.

YAML and ``key=value`` overrides hand the configs whatever the user typed: ``"8"``, ``8.5``,
``true``, ``.inf`` or ``[1]`` where an integer is meant. Python's dataclasses do not check their
annotations, so such values used to surface later as a TypeError deep in torch, or not at all (a
``max_steps: inf`` run never ends). Every config dataclass calls :func:`check_fields` first in its
``__post_init__``; nested sections are built and checked by :func:`build_section`, which prefixes
the section's name, so a message reads ``optim.lr: expected a number, got 'abc' (str)``.

Supported annotations: ``int`` (not bool, not 8.0), ``float`` (int accepted and converted; finite
only), ``bool``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[X, Y]`` / ``tuple[X, ...]`` (from a
list or tuple), ``dict[str, Any]``, ``Any`` and nested config dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union

_REPR_LIMIT = 60


class ConfigError(ValueError):
    """A config value is wrong. ``key`` is the dotted path of the value ("" for the whole config)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)

    def within(self, section: str) -> ConfigError:
        """The same error seen from the enclosing section (its name becomes a key prefix)."""
        key = f"{section}.{self.key}" if self.key else section
        return ConfigError(key, self.problem)


def describe(value: Any) -> str:
    """``'abc' (str)``: a short repr and the Python type, as the messages show a wrong value."""
    text = repr(value)
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"{text} ({type(value).__name__})"


def expected(tp: Any) -> str:
    """How a message names the values an annotation accepts."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(expected(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {len(args)} values ({', '.join(expected(a) for a in args)})"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (a config section)"
    return getattr(tp, "__name__", str(tp))


def _plural(tp: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, expected(tp))


def check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against annotation ``tp`` (int -> float, list -> tuple converted).

    Raises:
        ConfigError: naming ``key``, what was expected and what was given.
    """
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for alternative in (a for a in args if a is not type(None)):
            try:
                return check_value(value, alternative, key)
            except ConfigError as exc:
                # A nested section's own message (an unknown key inside it) says more than "or".
                if dataclasses.is_dataclass(alternative) and isinstance(value, Mapping):
                    raise exc from None
        raise ConfigError(key, f"expected {expected(tp)}, got {describe(value)}")
    if dataclasses.is_dataclass(tp):
        return build_section(key, value, tp)  # type: ignore[arg-type]
    if origin is Literal:
        # `type(a) is type(value)` keeps True from matching 1 and 1 from matching 1.0.
        if any(type(a) is type(value) and a == value for a in args):
            return value
        raise ConfigError(key, f"expected {expected(tp)}, got {describe(value)}")
    if origin is tuple:
        return _check_tuple(value, tp, args, key)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected {expected(tp)}, got {describe(value)}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(key, f"keys must be strings, got {describe(bad[0])}")
        return dict(value)
    return _check_scalar(value, tp, key)


def _check_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {describe(value)}")
        if ok:
            return float(value)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{key}: config annotation {tp!r} is not supported by check_value")
    if not ok:
        raise ConfigError(key, f"expected {expected(tp)}, got {describe(value)}")
    return value


def _check_tuple(value: Any, tp: Any, args: tuple[Any, ...], key: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, f"expected {expected(tp)}, got {describe(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        element_types: Iterable[Any] = [args[0]] * len(value)
    else:
        if len(value) != len(args):
            raise ConfigError(key, f"expected {expected(tp)}, got {len(value)} values: {describe(value)}")
        element_types = args
    return tuple(check_value(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, element_types)))


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields (the modules use postponed annotations)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_fields(obj: Any, skip: Iterable[str] = ()) -> None:
    """Check (and normalise in place) every field of the dataclass instance ``obj``.

    Keys in messages are relative to ``obj``; :func:`build_section` adds the section's name.
    Fields in ``skip`` are left to the caller (their type depends on another field).
    """
    skipped = set(skip)
    for name, tp in field_types(type(obj)).items():
        if name not in skipped:
            setattr(obj, name, check_value(getattr(obj, name), tp, name))


def check_at_least(obj: Any, minimum: float, names: Iterable[str]) -> None:
    """Refuse any of the fields ``names`` of ``obj`` below ``minimum`` (after :func:`check_fields`)."""
    for name in names:
        value = getattr(obj, name)
        if value < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {value}")


def check_known_keys(section: str, value: Mapping[str, Any], cls: type) -> None:
    """Refuse keys that are not fields of ``cls``, listing the known ones."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(value) - set(known))
    if unknown:
        raise ConfigError(section, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (known: {', '.join(known)})")


def build_section(section: str, value: Any, cls: type) -> Any:
    """A nested config section given as a ``cls`` instance or a mapping of its fields.

    Unknown and missing keys are refused; any error raised while building (type or range) is
    reported with ``section`` prefixed to its key.
    """
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(section, f"expected {expected(cls)}, got {describe(value)}")
    check_known_keys(section, value, cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(section, f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    try:
        return cls(**value)
    except ConfigError as exc:
        raise exc.within(section) from None


def check_partial(section: str, value: Any, cls: type) -> dict[str, Any]:
    """Check the keys and value types of a partial ``cls`` mapping (overrides merged later onto a
    complete config); range checks wait for the merged config. Returns the normalised mapping."""
    if not isinstance(value, Mapping):
        raise ConfigError(section, f"expected {expected(cls)}, got {describe(value)}")
    check_known_keys(section, value, cls)
    types_ = field_types(cls)
    out: dict[str, Any] = {}
    for name, item in value.items():
        tp = types_[name]
        key = f"{section}.{name}" if section else name
        out[name] = check_partial(key, item, tp) if dataclasses.is_dataclass(tp) else check_value(item, tp, key)
    return out
