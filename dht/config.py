"""DHTConfig from a TOML table, so operators can tune a node without code."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .core import DHTConfig
from .options import ConfigError, options_from_table
from .reach import ReachConfig

__all__ = [
    "SERVER_DEFAULTS",
    "ConfigError",
    "config_from_mapping",
    "load_config",
    "options_from_table",
]

SERVER_DEFAULTS = DHTConfig(reach=ReachConfig(check=True)).with_fast_paths()
"""What a node someone runs for others starts from (`pagemesh node`, `pagemesh dht
serve`): it checks that others can reach it (docs/protocol.md 1.9) unless
`[dht.reach] check = false`, and takes the fast paths of docs/protocol.md 1.10 (each
can be turned off in `[dht]`). The library's own default checks nothing and takes none
(the behaviour the benchmarks compare against)."""


def config_from_mapping(table: dict[str, Any], defaults: DHTConfig | None = None) -> DHTConfig:
    """Build a DHTConfig from `[dht]`-style keys over `defaults`; `[dht.records]` sets the
    record limits, `[dht.reach]` the reachability checks."""
    config: DHTConfig = options_from_table(table, defaults or DHTConfig(), "dht")
    return config


def load_config(path: Path | None, defaults: DHTConfig | None = None) -> DHTConfig:
    if path is None:
        return defaults or DHTConfig()
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    table = document.get("dht", {})
    if not isinstance(table, dict):
        raise ConfigError("[dht] must be a table")
    return config_from_mapping(table, defaults)
