"""One rule for reading config tables into dataclasses: `[dht]`, `[node]`, `[relay]`.

A module of its own, importing nothing of the project, so that every package
(the relay included, which imports nothing else of ours) reads its table the
same way and says the same thing about a mistake.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A config file that names an unknown option or gives it the wrong type."""


def typed_option(section: str, name: str, value: Any, default: Any) -> Any:
    """`value` typed like `default`, or ConfigError naming the option.

    The one rule for every config table (`[dht]`, `[node]`, `[relay]`): an int
    is fine where a float is expected, a bool is never a number, and a tuple
    default takes a list of items typed like its own (strings when empty).
    """
    if isinstance(default, tuple):
        item = type(default[0]) if default else str
        if isinstance(value, list) and all(
            isinstance(v, item) and not isinstance(v, bool) for v in value
        ):
            return tuple(value)
        raise ConfigError(f"{section} option {name!r} must be a list of {item.__name__}")
    expected = type(default)
    if isinstance(value, bool) == (expected is bool):
        if isinstance(value, expected):
            return value
        if expected is float and isinstance(value, int):
            return float(value)
    raise ConfigError(f"{section} option {name!r} must be {expected.__name__}")


def options_from_table(table: dict[str, Any], defaults: Any, section: str) -> Any:
    """`defaults` (a dataclass instance) with what `table` sets, each option typed by
    `typed_option`; a nested dataclass is a nested table. Unknown options are errors."""
    names = {f.name for f in dataclasses.fields(defaults)}
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name not in names:
            raise ConfigError(f"unknown {section} option {name!r}")
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{section} option {name!r} must be a table")
            values[name] = options_from_table(value, default, f"{section}.{name}")
        else:
            values[name] = typed_option(section, name, value, default)
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as exc:
        raise ConfigError(f"{section}: {exc}") from None
