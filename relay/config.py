"""The `[relay]` table of a TOML file: protocol settings (RelayConfig) and where to listen.

```toml
[relay]
port = 3478
secret_file = "/etc/pagemesh/relay.secret"
realm = "relay.example.org"
max_allocations = 500
bandwidth_bps = 4000000
allow_peers = []          # e.g. ["10.1.0.0/16"] for a private deployment
```

Unknown keys and wrong types raise ConfigError, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import RelayConfig
from .policy import PeerPolicy


class ConfigError(ValueError):
    """A config file that names an unknown option or gives it the wrong type."""


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """Where a standalone relay listens; the command line overrides each of these."""

    host: str = "0.0.0.0"
    port: int = 3478
    tcp: bool = True
    relay_host: str = ""
    """Address relayed sockets bind (default: the listener's, or the outgoing one for 0.0.0.0)."""
    external_host: str = ""
    """Address advertised in XOR-RELAYED-ADDRESS behind a 1:1 NAT (coturn's external-ip)."""
    metrics_port: int | None = None
    secret_file: str = ""


_TUPLE_FIELDS = {"allow_peers": str, "deny_peers": str, "families": int}


def config_from_mapping(table: dict[str, Any]) -> tuple[RelayConfig, ListenOptions]:
    relay_fields = {f.name: f for f in dataclasses.fields(RelayConfig)}
    listen_fields = {f.name: f for f in dataclasses.fields(ListenOptions)}
    relay_values: dict[str, Any] = {}
    listen_values: dict[str, Any] = {}
    for name, value in table.items():
        if name in _TUPLE_FIELDS:
            relay_values[name] = _typed_list(name, value, _TUPLE_FIELDS[name])
        elif name in relay_fields:
            relay_values[name] = _typed(name, value, type(getattr(RelayConfig(), name)))
        elif name == "metrics_port":
            listen_values[name] = None if value is None else _typed(name, value, int)
        elif name in listen_fields:
            listen_values[name] = _typed(name, value, type(getattr(ListenOptions(), name)))
        else:
            raise ConfigError(f"unknown relay option {name!r}")
    config = RelayConfig(**relay_values)
    try:
        PeerPolicy.from_strings(config.allow_peers, config.deny_peers)
    except ValueError as exc:
        raise ConfigError(f"relay peer networks: {exc}") from None
    if config.max_lifetime < 60 or config.default_lifetime > config.max_lifetime:
        raise ConfigError("relay lifetimes need 60 <= default_lifetime <= max_lifetime")
    if config.max_past_expiry < 0:
        raise ConfigError("relay max_past_expiry must not be negative")
    if any(f not in (1, 2) for f in config.families):
        raise ConfigError("relay families are 1 (IPv4) and 2 (IPv6)")
    return config, ListenOptions(**listen_values)


def _typed(name: str, value: Any, expected: type) -> Any:
    """`value` as `expected`; an int is fine where a float is expected, a bool never is."""
    if isinstance(value, bool) == (expected is bool):
        if isinstance(value, expected):
            return value
        if expected is float and isinstance(value, int):
            return float(value)
    raise ConfigError(f"relay option {name!r} must be {expected.__name__}")


def _typed_list(name: str, value: Any, item: type) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, item) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"relay option {name!r} must be a list of {item.__name__}")
    return tuple(value)


def load_config(path: str | Path | None) -> tuple[RelayConfig, ListenOptions]:
    """The `[relay]` table of the TOML file at `path` (defaults when None or absent)."""
    if path is None:
        return RelayConfig(), ListenOptions()
    with Path(path).open("rb") as handle:
        document = tomllib.load(handle)
    table = document.get("relay", {})
    if not isinstance(table, dict):
        raise ConfigError("[relay] must be a table")
    return config_from_mapping(table)
