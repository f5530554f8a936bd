"""DHTConfig from a TOML table, so operators can tune a node without code."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .core import DHTConfig
from .options import ConfigError, options_from_table

__all__ = ["ConfigError", "config_from_mapping", "load_config", "options_from_table"]


def config_from_mapping(table: dict[str, Any]) -> DHTConfig:
    """Build a DHTConfig from `[dht]`-style keys; `[dht.records]` sets the record limits."""
    config: DHTConfig = options_from_table(table, DHTConfig(), "dht")
    return config


def load_config(path: Path | None) -> DHTConfig:
    if path is None:
        return DHTConfig()
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    table = document.get("dht", {})
    if not isinstance(table, dict):
        raise ConfigError("[dht] must be a table")
    return config_from_mapping(table)
