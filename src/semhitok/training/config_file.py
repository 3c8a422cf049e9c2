"""Reading and writing a run's top-level config: a YAML file plus ``key=value`` overrides in, plain
YAML-safe values out. Shared by the tokenizer stages (:class:`TrainConfig`) and ``stage: mllm``
(:class:`MLLMTrainConfig`), so both read files, apply overrides and report errors the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..config_types import ConfigError, check_known_keys, describe
from ..yaml_io import load_yaml
from .overrides import apply_overrides

C = TypeVar("C", bound="ConfigFile")


class ConfigFile:
    """Mixin for a dataclass that is a whole training config file."""

    @classmethod
    def check_top_level(cls, raw: dict[str, Any]) -> None:
        """Checks on the raw top-level mapping before the dataclass is built (none by default)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe values (tuples as lists) that :meth:`from_dict` reads back."""
        return plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], raw: Any, overrides: list[str] | None = None) -> C:
        """Build from a mapping (a parsed YAML file), after ``key=value`` overrides."""
        if not isinstance(raw, Mapping):
            raise ConfigError("", f"a training config must be a mapping at the top level, got {describe(raw)}")
        raw = apply_overrides(dict(raw), overrides or [])
        check_known_keys("", raw, cls)
        cls.check_top_level(raw)
        return cls(**raw)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: list[str] | None = None) -> C:
        """Read a YAML file, apply ``key=value`` overrides, validate.

        Raises:
            ValueError: one line starting with the file's name (then the key, for a bad value).
        """
        try:
            raw = load_yaml(path)  # YAML errors already name the file and the line
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
        try:
            return cls.from_dict({} if raw is None else raw, overrides)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def plain(value: Any) -> Any:
    """Dicts, lists and tuples (as lists) all the way down; other values as they are."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
