"""The generic config validator against hand-written expectations, one annotation at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from semhitok.config_types import ConfigError, build_section, check_fields, check_partial, check_value


@pytest.mark.parametrize(
    "value, tp, expected",
    [
        (3, int, 3),
        (-2, int, -2),
        (3, float, 3.0),  # an int is a number; it is stored as a float
        (2.5, float, 2.5),
        (True, bool, True),
        ("x", str, "x"),
        ("bf16", Literal["fp32", "bf16"], "bf16"),
        (None, float | None, None),
        (0.5, float | None, 0.5),
        ([0.9, 0.95], tuple[float, float], (0.9, 0.95)),
        ((1, 2), tuple[float, float], (1.0, 2.0)),
        ([1, 2, 3], tuple[int, ...], (1, 2, 3)),
        ({"a": 1}, dict[str, Any], {"a": 1}),
        (object, Any, object),
    ],
)
def test_accepted_values(value, tp, expected):
    out = check_value(value, tp, "k")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "value, tp, message",
    [
        (True, int, "k: expected an integer, got True (bool)"),
        (8.5, int, "k: expected an integer, got 8.5 (float)"),
        (8.0, int, "k: expected an integer, got 8.0 (float)"),
        ("8", int, "k: expected an integer, got '8' (str)"),
        (float("inf"), int, "k: expected an integer, got inf (float)"),
        ("abc", float, "k: expected a number, got 'abc' (str)"),
        ([1], float, "k: expected a number, got [1] (list)"),
        (False, float, "k: expected a number, got False (bool)"),
        (float("inf"), float, "k: expected a finite number, got inf (float)"),
        (float("nan"), float, "k: expected a finite number, got nan (float)"),
        (1, bool, "k: expected true or false, got 1 (int)"),
        ("true", bool, "k: expected true or false, got 'true' (str)"),
        (3, str, "k: expected a string, got 3 (int)"),
        ("fp16", Literal["fp32", "bf16"], "k: expected one of 'fp32', 'bf16', got 'fp16' (str)"),
        (1, Literal[True], "k: expected one of True, got 1 (int)"),
        ("x", float | None, "k: expected a number or null, got 'x' (str)"),
        (0.9, tuple[float, float], "k: expected a list of 2 numbers, got 0.9 (float)"),
        ([0.9], tuple[float, float], "k: expected a list of 2 numbers, got 1 values: [0.9] (list)"),
        ([0.9, "a"], tuple[float, float], "k[1]: expected a number, got 'a' (str)"),
        ([1, 2], dict[str, Any], "k: expected a mapping, got [1, 2] (list)"),
        ("a" * 100, int, "k: expected an integer, got '" + "a" * 56 + "... (str)"),
    ],
)
def test_refused_values(value, tp, message):
    with pytest.raises(ConfigError) as info:
        check_value(value, tp, "k")
    assert str(info.value) == message


@dataclass
class _Inner:
    size: int = 1
    name: str = "a"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.size < 1:
            raise ConfigError("size", f"must be >= 1, got {self.size}")


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    rate: float = 0.5
    mode: Literal["x", "y"] = "x"

    def __post_init__(self) -> None:
        check_fields(self)


def test_nested_sections_are_built_and_errors_carry_the_dotted_key():
    built = build_section("top", {"inner": {"size": 3}, "rate": 2}, _Outer)
    assert built == _Outer(inner=_Inner(size=3), rate=2.0)
    assert type(built.rate) is float
    cases = {
        "top.inner.size: expected an integer, got 'x' (str)": {"inner": {"size": "x"}},
        "top.inner.size: must be >= 1, got 0": {"inner": {"size": 0}},  # range checks get the prefix too
        "top.inner: unknown key sise (known: size, name)": {"inner": {"sise": 3}},
        "top.inner: expected a mapping (a config section), got 3 (int)": {"inner": 3},
        "top: unknown keys a, b (known: inner, rate, mode)": {"a": 1, "b": 2},
        "top.mode: expected one of 'x', 'y', got 'z' (str)": {"mode": "z"},
    }
    for message, value in cases.items():
        with pytest.raises(ConfigError) as info:
            build_section("top", value, _Outer)
        assert str(info.value) == message


def test_missing_required_key_is_named():
    @dataclass
    class Needs:
        must: int

        def __post_init__(self) -> None:
            check_fields(self)

    with pytest.raises(ConfigError, match=r"^s: missing key must$"):
        build_section("s", {}, Needs)


def test_partial_sections_check_keys_and_types_but_not_ranges():
    # Range checks wait for the merged config: size 0 passes here, a string does not.
    assert check_partial("m", {"inner": {"size": 0}, "rate": 1}, _Outer) == {"inner": {"size": 0}, "rate": 1.0}
    with pytest.raises(ConfigError, match=r"^m\.inner\.size: expected an integer, got '2' \(str\)$"):
        check_partial("m", {"inner": {"size": "2"}}, _Outer)
    with pytest.raises(ConfigError, match=r"^m\.inner: unknown key bogus"):
        check_partial("m", {"inner": {"bogus": 1}}, _Outer)
