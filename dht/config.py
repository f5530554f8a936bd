"""DHTConfig from a TOML table, so operators can tune a node without code."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from .core import DHTConfig
from .records import RecordLimits


class ConfigError(ValueError):
    """A config file that names an unknown option or gives it the wrong type."""


def config_from_mapping(table: dict[str, Any]) -> DHTConfig:
    """Build a DHTConfig from `[dht]`-style keys; `[dht.records]` sets the record limits."""
    fields = {f.name for f in dataclasses.fields(DHTConfig)}
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name == "records":
            if not isinstance(value, dict):
                raise ConfigError("dht.records must be a table")
            values["records"] = _record_limits(value)
            continue
        if name not in fields:
            raise ConfigError(f"unknown dht option {name!r}")
        default = getattr(DHTConfig(), name)
        values[name] = _typed(name, value, type(default))
    try:
        return DHTConfig(**values)
    except ValueError as exc:
        raise ConfigError(f"dht: {exc}") from None


def _typed(name: str, value: Any, expected: type) -> Any:
    """`value` as `expected`; an int is fine where a float is expected, a bool never is."""
    if isinstance(value, bool) == (expected is bool):
        if isinstance(value, expected):
            return value
        if expected is float and isinstance(value, int):
            return float(value)
    raise ConfigError(f"dht option {name!r} must be {expected.__name__}")


def _record_limits(table: dict[str, Any]) -> RecordLimits:
    names = {f.name for f in dataclasses.fields(RecordLimits)}
    for name, value in table.items():
        if name not in names:
            raise ConfigError(f"unknown dht.records option {name!r}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"dht.records option {name!r} must be an integer")
    return RecordLimits(**table)


def load_config(path: Path | None) -> DHTConfig:
    if path is None:
        return DHTConfig()
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    table = document.get("dht", {})
    if not isinstance(table, dict):
        raise ConfigError("[dht] must be a table")
    return config_from_mapping(table)
