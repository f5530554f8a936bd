"""A signaling node's settings: every command-line option also lives in TOML.

```toml
[node]
host = "0.0.0.0"          # HTTP/WebSocket listener
port = 8000
dht_port = 4000
bootstrap = ["https://seed.example.net"]   # any node's URL, or its DHT address HOST:PORT
public_url = "wss://node.example.net"   # what clients and nodes dial; default ws://host:port
tls_cert = "/etc/pagemesh/tls/fullchain.pem"  # serve TLS itself (reloaded on SIGHUP)
tls_key = "/etc/pagemesh/tls/privkey.pem"     # mode 0600, else the node refuses it
trusted_proxies = ["127.0.0.1", "::1"]       # whose X-Forwarded-For names the client
metrics_from = ["127.0.0.0/8", "::1/128"]    # who may read /metrics (the default); [] turns it off
widget_ancestors = ["https://blog.example"]  # sites that may frame /widget; default ["*"]
layer_size = 24
presence_ttl = 60

[node.limits]             # per client connection, see signaling.session.SessionLimits
frames_per_second = 20

[node.admission]          # per source address (IPv4, or IPv6 /64), see signaling.admission
unauthenticated = 16      # connections waiting for their hello
per_second = 4            # new connections per second, bursts of `burst`
burst = 40
unauthenticated_total = 1024   # waiting for their hello from all addresses together

[node.ice]
stun_urls = ["stun:node.example.net:3478"]
turn_urls = ["turn:node.example.net:3478?transport=udp"]
secret_file = "/etc/pagemesh/turn.secret"   # or env PAGEMESH_RELAY_SECRET

[dht]                     # see dht.config
k = 20
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dht.config import SERVER_DEFAULTS, config_from_mapping
from dht.core import DHTConfig
from dht.options import ConfigError, options_from_table

from .admission import AdmissionLimits, proxy_networks
from .layers import RoomConfig
from .protocol import MIN_CLIENT_VERSION, PROTOCOL_VERSION
from .seeds import SeedError, parse_seed
from .session import SessionLimits
from .widget import frame_ancestors


@dataclass(frozen=True, slots=True)
class IceConfig:
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    secret_file: str = ""
    """Secret shared with the relay for ephemeral TURN credentials (else env, see below)."""
    credential_ttl: float = 3600.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    dht_host: str = ""
    """Defaults to `host`."""
    dht_port: int = 4000
    bootstrap: tuple[str, ...] = ()
    """Seeds: a running node's URL (https://NAME, whose DHT contact is asked at /v1/dht)
    or DHT address (HOST:PORT); none for the first node of a mesh (signaling/seeds.py)."""
    data_dir: str = ""
    public_url: str = ""
    """The base URL clients and other nodes dial; defaults to ws://host:port (wss:// with TLS)."""
    tls_cert: str = ""
    """PEM certificate chain: the node serves HTTPS/WSS itself (reloaded on SIGHUP)."""
    tls_key: str = ""
    """PEM private key of `tls_cert`, readable by the node's user only (mode 0600)."""
    layer_size: int = 24
    presence_ttl: float = 60.0
    """Presence records lapse this long after their home node last refreshed them."""
    refresh_interval: float = 0.0
    """How often presence is re-signed and layers re-read; defaults to presence_ttl / 3."""
    layer_choices: int = 2
    """Random layers a newcomer is offered besides the last and the next (docs/protocol.md 3.1)."""
    fast_paths: bool = True
    """The room core's fast paths (docs/protocol.md 2.5): quick reads on the join path, the
    seat list stored while the client signs, one first round, early decisions, a short
    cache of reads that need not be fresh. False: as before them."""
    joins_per_minute: float = 12.0
    """Joins one source address may make into one room through this node, per minute."""
    seats_per_source: int = 16
    """Seats one source address (IPv4, or IPv6 /64) may hold in one room through this node."""
    records_per_source: float = 16.0
    """put-record and get-record frames per second from one source address (IPv4, or IPv6
    /64), all its connections together (docs/protocol.md 7.3): each is a DHT lookup, and a
    fresh connection must not bring a fresh budget."""
    record_source_burst: float = 256.0
    record_ops_per_source: int = 32
    """put-record and get-record requests of one source address being answered at once
    (the node runs at most half the DHT's `max_operations` lookups in all)."""
    http_per_second: float = 100.0
    """Plain HTTP requests (the page and its files, /healthz, /v1/dht; not the WebSocket
    upgrades, which admission counts) per second from one source address..."""
    http_burst: float = 2000.0
    """...and in a burst: a page load asks for about 35 files, so 50 people behind one
    address may open it at once. Past either: 429, and the connection is closed."""
    max_clients: int = 20_000
    max_view_members: int = 0
    """Members this node keeps of one layer; 0 means 4 x layer_size (a layer may run over
    its size when people ask for a seat in it, but no stranger may make it unbounded)."""
    sign_timeout: float = 10.0
    """How long a client has to sign its presence record."""
    directory_ttl: float = 600.0
    """Lifetime of this node's entry in the DHT's node directory (re-published at half)."""
    relay_port: int = -1
    """An embedded TURN relay on this UDP+TCP port: -1 for none, 0 for any free port."""
    relay_host: str = ""
    """The host clients are told in the embedded relay's URLs (default: [relay] external_host,
    else the host of public_url, else host); behind a 1:1 NAT its public address. Not where the
    relay listens (`[relay] host`), nor `[relay] relay_host`, the address its relayed sockets
    bind (pagemesh/embedded_relay.py, docs/operations.md "Node configuration")."""
    relay_tls_port: int = -1
    """The embedded relay's TURN over TLS (`turns:`) on this TCP port, e.g. 443: -1 for none."""
    relay_tls_cert: str = ""
    """PEM chain of the relay's TLS listener; default: `tls_cert`."""
    relay_tls_key: str = ""
    """PEM key of `relay_tls_cert` (mode 0600); default: `tls_key`."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For names the real
    client; from anyone else the header is ignored."""
    metrics_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Networks (CIDR, or single addresses) whose clients may read `/metrics`; others get
    403, and an empty list turns `/metrics` off (404). The client address is the one after
    `trusted_proxies`: behind a proxy, the address the proxy forwards."""
    widget_ancestors: tuple[str, ...] = ("*",)
    """Sites that may frame the chat widget (CSP frame-ancestors sources, e.g.
    "https://blog.example"); any site by default, none when empty (docs/widget.md)."""
    limits: SessionLimits = field(default_factory=SessionLimits)
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    """Per source address, for client connections before their hello."""
    link_admission: AdmissionLimits = field(
        default_factory=lambda: AdmissionLimits(
            unauthenticated=4, per_second=1.0, burst=20.0, unauthenticated_total=64
        )
    )
    """Per source address, for node links before they prove a reachable node."""
    ice: IceConfig = field(default_factory=IceConfig)

    @property
    def view_cap(self) -> int:
        return self.max_view_members or 4 * self.layer_size

    @property
    def refresh(self) -> float:
        return self.refresh_interval or self.presence_ttl / 3

    def room_config(self, max_value_bytes: int) -> RoomConfig:
        """The room core's settings (`max_value_bytes`: the DHT's record value limit)."""
        config = RoomConfig(
            layer_size=self.layer_size,
            presence_ttl=self.presence_ttl,
            refresh=self.refresh,
            choices=self.layer_choices,
            view_cap=self.view_cap,
            sign_timeout=self.sign_timeout,
            joins_per_minute=self.joins_per_minute,
            seats_per_source=self.seats_per_source,
            max_value_bytes=max_value_bytes,
        )
        return config.with_fast_paths() if self.fast_paths else config


def load_node_config(
    path: Path | None, overrides: dict[str, Any] | None = None
) -> tuple[NodeConfig, DHTConfig]:
    """Read `[node]` and `[dht]` from `path` (if any), then apply command-line overrides.

    A `[relay]` table is left to the embedded relay (pagemesh/embedded_relay.py).
    """
    document: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    unknown = set(document) - {"node", "dht", "relay"}
    if unknown:
        raise ConfigError(f"unknown table(s): {', '.join(sorted(unknown))}")
    table = dict(document.get("node", {}))
    for name, value in (overrides or {}).items():
        if value is not None:
            table[name] = value
    config: NodeConfig = options_from_table(table, NodeConfig(), "node")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("node.tls_cert and node.tls_key go together")
    _check_relay_tls(config)
    for entry in config.bootstrap:
        try:
            parse_seed(entry)
        except SeedError as exc:
            raise ConfigError(f"node.bootstrap: {exc}") from None
    try:
        proxy_networks(config.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"node.trusted_proxies: {exc}") from None
    try:
        proxy_networks(config.metrics_from)
    except ValueError as exc:
        raise ConfigError(f"node.metrics_from: {exc}") from None
    try:
        frame_ancestors(config.widget_ancestors)
    except ValueError as exc:
        raise ConfigError(f"node.widget_ancestors: {exc}") from None
    if config.layer_size < 1 or config.presence_ttl <= 0 or config.max_clients < 1:
        raise ConfigError("node.layer_size, presence_ttl and max_clients must be positive")
    if not MIN_CLIENT_VERSION <= config.limits.min_client_version <= PROTOCOL_VERSION:
        raise ConfigError(
            f"node.limits.min_client_version must be {MIN_CLIENT_VERSION} to "
            f"{PROTOCOL_VERSION} (the versions this node speaks)"
        )
    dht_config = config_from_mapping(document.get("dht", {}), SERVER_DEFAULTS)
    if config.presence_ttl > dht_config.records.max_ttl:
        raise ConfigError("node.presence_ttl exceeds dht.records.max_ttl")
    return config, dht_config


def _check_relay_tls(config: NodeConfig) -> None:
    if bool(config.relay_tls_cert) != bool(config.relay_tls_key):
        raise ConfigError("node.relay_tls_cert and node.relay_tls_key go together")
    if config.relay_tls_port < 0:
        if config.relay_tls_cert:
            raise ConfigError("node.relay_tls_cert needs relay_tls_port (443, or 5349)")
        return
    if config.relay_port < 0:
        raise ConfigError("node.relay_tls_port needs relay_port (the relay it is part of)")
    if not (config.relay_tls_cert or config.tls_cert):
        raise ConfigError("node.relay_tls_port needs relay_tls_cert/relay_tls_key or tls_cert")
    if config.relay_tls_port and config.relay_tls_port == config.relay_port:
        raise ConfigError("node.relay_tls_port must differ from relay_port (TCP listens there)")
