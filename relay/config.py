"""The `[relay]` table of a TOML file: protocol settings (RelayConfig) and where to listen.

```toml
[relay]
port = 3478
secret_file = "/etc/pagemesh/relay.secret"
realm = "relay.example.org"
max_allocations = 500
bandwidth_bps = 4000000
allow_peers = []          # e.g. ["10.1.0.0/16"] for a private deployment
tls_port = 443            # TURN over TLS (`turns:`) beside UDP and TCP; -1 (default): none
tls_cert = "/etc/pagemesh/relay/fullchain.pem"
tls_key = "/etc/pagemesh/relay/privkey.pem"   # mode 0600, else the relay refuses it
```

Unknown keys and wrong types raise ConfigError, so a typo never passes silently; the
rule is the one every table follows (`dht.config.typed_option`).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dht.options import ConfigError, options_from_table, typed_option

from .core import RelayConfig
from .policy import PeerPolicy

__all__ = ["ConfigError", "ListenOptions", "check_listen", "config_from_mapping", "load_config"]


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
    tls_port: int = -1
    """TURN over TLS on this TCP port (RFC 8656 section 3.1): -1 for none, 0 for any."""
    tls_cert: str = ""
    """PEM certificate chain of the TLS listener."""
    tls_key: str = ""
    """PEM private key of `tls_cert`, readable by the relay's user only (mode 0600)."""


def check_listen(listen: ListenOptions) -> None:
    """ConfigError for listener options that cannot work together."""
    if listen.tls_port >= 0 and not (listen.tls_cert and listen.tls_key):
        raise ConfigError("relay tls_port needs tls_cert and tls_key")
    if (listen.tls_cert or listen.tls_key) and listen.tls_port < 0:
        raise ConfigError("relay tls_cert and tls_key need tls_port (5349, or 443)")
    if listen.tls_port > 0 and listen.tls_port == listen.port and listen.tcp:
        raise ConfigError("relay tls_port must differ from port (TCP listens there)")


def config_from_mapping(table: dict[str, Any]) -> tuple[RelayConfig, ListenOptions]:
    """The protocol settings and the listening options one `[relay]` table sets."""
    listen_names = {f.name for f in dataclasses.fields(ListenOptions)}
    listen = {name: value for name, value in table.items() if name in listen_names}
    metrics_port = listen.pop("metrics_port", None)
    options = options_from_table(listen, ListenOptions(), "relay")
    if metrics_port is not None:
        options = dataclasses.replace(
            options, metrics_port=typed_option("relay", "metrics_port", metrics_port, 0)
        )
    check_listen(options)
    relay = {name: value for name, value in table.items() if name not in listen_names}
    config: RelayConfig = options_from_table(relay, RelayConfig(), "relay")
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
    return config, options


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
