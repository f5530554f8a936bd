"""A TURN relay inside a signaling node (`pagemesh node --relay-port P`).

The node's package does not import the relay server (signaling -> relay is
for credentials only), so the command line wires the two here: start a
`relay.server.RelayServer` with the node's secret, and hand the node what it
needs to advertise it and mint credentials for it.

Addresses. A relay has three, which differ behind the 1:1 NAT of a typical cloud VM
(the machine holds a private address; the provider maps a public one onto it):

- where clients reach it, the host of its `stun:`/`turn:`/`turns:` URLs
  (`advertised_host`): `[node] relay_host`, else `[relay] external_host`, else the host
  of `public_url`, else the address it listens on (`[relay] host`, by default the
  node's `host`) when that is one address;
- where its relayed sockets bind (`[relay] relay_host`): by default the advertised
  address when it is one of this machine's, else the address of the outgoing route;
- what XOR-RELAYED-ADDRESS tells a client (`[relay] external_host`): by default the
  advertised address when it is *not* one of this machine's (a 1:1 NAT maps it onto
  the private address the relayed socket binds), else the bound address itself.

A node on a wildcard address (`host = "0.0.0.0"`) with none of these set does not know
its public address. It then tells each client the address that client reached the node
at (the relay listens on every address too), and never a loopback address to a client
that is not on this machine: such a client gets no relay URLs rather than wrong ones.
`use_public_address` fixes the address later, once it is learned from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.registry import Collector

from relay.config import ConfigError as RelayConfigError
from relay.config import ListenOptions, config_from_mapping
from relay.credentials import load_secret
from relay.metrics import RelayCollector
from relay.server import RelayServer
from relay.tls import RelayTls, TlsError
from signaling.config import ConfigError, NodeConfig

log = logging.getLogger("pagemesh.relay")

RESOLVE_TIMEOUT = 5.0
"""Seconds to resolve the advertised name at start before giving up on deriving from it."""

STANDALONE_ONLY = {
    "port": "relay_port",
    "tcp": "relay_port",
    "metrics_port": "the node's own /metrics",
    "secret_file": "[node.ice] secret_file",
    "tls_port": "relay_tls_port",
    "tls_cert": "relay_tls_cert (or tls_cert)",
    "tls_key": "relay_tls_key (or tls_key)",
}
"""`[relay]` listener options of a standalone relay, and what sets each inside a node.
(`host` applies to both: a node on 127.0.0.1 behind a reverse proxy may run its relay on
a public address.)"""


@dataclass(frozen=True, slots=True)
class RelayPorts:
    """The ports a relay listens on, and the URLs naming them at one host."""

    port: int
    """UDP and TCP."""
    tls_port: int | None = None

    def urls(self, host: str) -> list[str]:
        shown = f"[{host}]" if ":" in host else host
        urls = [
            f"stun:{shown}:{self.port}",
            f"turn:{shown}:{self.port}?transport=udp",
            f"turn:{shown}:{self.port}?transport=tcp",
        ]
        if self.tls_port is not None:
            urls.append(f"turns:{shown}:{self.tls_port}?transport=tcp")
        return urls


class EmbeddedRelay:
    """What a SignalingNode needs of its relay (signaling.node.EmbeddedRelay)."""

    def __init__(
        self,
        server: RelayServer,
        secret: bytes,
        urls: list[str] | None = None,
        *,
        ports: RelayPorts | None = None,
        public_host: str | None = None,
        tls: RelayTls | None = None,
        external_configured: bool = False,
    ) -> None:
        """`urls` fixes what the node advertises; else they are made from `ports` at
        `public_host`, or at each client's own view of the node when that is None."""
        self.server = server
        self.secret = secret
        self.tls = tls
        self.ports = ports or RelayPorts(server.address[1])
        self.listen_host = str(server.address[0])
        """Where it listens (kept: the socket is gone once the server stopped)."""
        self.public_host = public_host
        self._fixed = urls
        self._external_configured = external_configured or urls is not None
        self.collector: Collector = RelayCollector(lambda: server.core)

    @property
    def urls(self) -> list[str]:
        """The URLs anyone may be given (the node directory, the start line); none while
        the public address is not known."""
        if self._fixed is not None:
            return list(self._fixed)
        return self.ports.urls(self.public_host) if self.public_host else []

    def urls_for(self, local_host: str, client_host: str) -> list[str]:
        """The URLs for one client, which reached the node at `local_host` from
        `client_host`: never a loopback or wildcard address unless it is on this machine."""
        if self._fixed is not None:
            return list(self._fixed)
        if self.public_host and (
            _is_loopback_client(client_host) or not _loopback(self.public_host)
        ):
            return self.ports.urls(self.public_host)
        host = reachable_host(local_host, client_host)
        return self.ports.urls(host) if host else []

    def use_public_address(self, address: str) -> None:
        """The node learned its public IPv4 address from outside (what other machines
        see): advertise it where nothing was configured, and put it in
        XOR-RELAYED-ADDRESS unless the relay binds it itself or one was configured."""
        if self._fixed is not None:
            return
        if self.public_host is None or _loopback(self.public_host):
            self.public_host = address
        if not self._external_configured and not is_local_address(address):
            self.server.advertised_host = address

    @property
    def serving(self) -> bool:
        return self.server.serving

    @property
    def on_loopback_only(self) -> bool:
        """It listens on a loopback address while its URLs name an address elsewhere:
        nobody but this machine reaches it (a node on 127.0.0.1 behind a proxy whose
        `[relay] host` was left to the node's)."""
        return _loopback(self.listen_host) and bool(
            self.public_host and not _loopback(self.public_host)
        )

    def reload_tls(self) -> bool:
        """SIGHUP: read the TLS certificate and key again (new handshakes only)."""
        return self.tls.reload() if self.tls is not None else False

    async def stop(self) -> None:
        await self.server.stop()


def advertised_host(config: NodeConfig, listen: ListenOptions, listen_host: str) -> str | None:
    """Where clients reach the relay listening on `listen_host`, as configured (see the
    module's docstring); None when nothing says."""
    if config.relay_host:
        return config.relay_host
    if listen.external_host:
        return listen.external_host
    if config.public_url:
        host = urlsplit(config.public_url).hostname
        if host:
            return host
    if not _unspecified(listen_host):
        return listen_host
    return None


def socket_addresses(
    listen: ListenOptions, public_ip: str | None, public_is_local: bool
) -> tuple[str | None, str | None]:
    """(where relayed sockets bind, what XOR-RELAYED-ADDRESS says), None for the server's
    default, given the advertised address as an IPv4 address and whether this machine
    holds it. A 1:1 NAT: the advertised address is not ours, so the relay binds its own
    (private) address and reports the public one."""
    relay_host = listen.relay_host or None
    external = listen.external_host or None
    if external is None and public_ip is not None:
        if public_is_local:
            relay_host = relay_host or public_ip
        else:
            external = public_ip
    return relay_host, external


def reachable_host(local_host: str, client_host: str) -> str | None:
    """The address a client reached this node at, as a relay host for that client:
    None for a wildcard, or for a loopback address when the client is elsewhere (a
    reverse proxy on this machine: the client itself is not on it)."""
    try:
        local = ipaddress.ip_address(local_host)
    except ValueError:
        return None
    if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped is not None:
        local = local.ipv4_mapped
    if local.is_unspecified or (local.is_loopback and not _is_loopback_client(client_host)):
        return None
    return str(local)


def is_local_address(address: str) -> bool:
    """Whether this machine holds `address` (it can bind a socket to it)."""
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError as exc:
        if exc.errno not in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
            log.info("cannot tell whether %s is this machine's: %s", address, exc)
        return False
    return True


async def _ipv4_of(host: str) -> str | None:
    """`host` as an IPv4 address (XOR-RELAYED-ADDRESS needs one), None if it has none."""
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        return str(address) if address.version == 4 else None
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM),
            RESOLVE_TIMEOUT,
        )
    except (OSError, TimeoutError) as exc:
        log.warning("cannot resolve the relay's advertised host %s: %s", host, exc)
        return None
    return str(infos[0][4][0]) if infos else None


def _relay_table(config_path: Path | None) -> dict[str, object]:
    if config_path is None:
        return {}
    with config_path.open("rb") as handle:
        table = tomllib.load(handle).get("relay", {})
    if not isinstance(table, dict):
        raise ConfigError("[relay] must be a table")
    for name, instead in STANDALONE_ONLY.items():
        if name in table:
            raise ConfigError(f"[relay] {name} is for a standalone relay; in a node use {instead}")
    return table


def _relay_tls(config: NodeConfig) -> RelayTls | None:
    if config.relay_tls_port < 0:
        return None
    cert = config.relay_tls_cert or config.tls_cert
    key = config.relay_tls_key or config.tls_key
    # The node's own pair (no relay_tls_key of its own): the key is the node's, and so is
    # the refusal, which the relay meets first (it starts before the node's listener).
    shared = key == config.tls_key
    try:
        return RelayTls(Path(cert), Path(key), "node" if shared else "relay")
    except TlsError as exc:
        raise ConfigError(
            f"{'node TLS (shared with the relay)' if shared else 'relay TLS'}: {exc}"
        ) from None


async def start_embedded_relay(config: NodeConfig, config_path: Path | None) -> EmbeddedRelay:
    """Start the relay the node config asks for; the `[relay]` table tunes it."""
    table = _relay_table(config_path)
    try:
        relay_config, listen = config_from_mapping(table)
    except RelayConfigError as exc:
        raise ConfigError(str(exc)) from None
    listen_host = listen.host if "host" in table else config.host
    tls = _relay_tls(config)
    # The relay lives in the node's process: without a configured secret, a fresh one
    # per start is enough (nobody else needs to mint for it).
    secret = load_secret(config.ice.secret_file) or os.urandom(32)
    public_host = advertised_host(config, listen, listen_host)
    public_ip = await _ipv4_of(public_host) if public_host else None
    public_is_local = public_ip is not None and is_local_address(public_ip)
    relay_host, external_host = socket_addresses(listen, public_ip, public_is_local)
    server = await RelayServer.start(
        listen_host,
        max(config.relay_port, 0),
        secret,
        relay_config,
        relay_host=relay_host,
        external_host=external_host,
        tls_port=max(config.relay_tls_port, 0) if tls is not None else None,
        tls_context=tls.context if tls is not None else None,
    )
    tls_address = server.tls_address
    ports = RelayPorts(server.address[1], tls_address[1] if tls_address else None)
    if public_host is None:
        log.warning(
            "the relay's public address is not known (no relay_host, external_host or "
            "public_url, host %s): each client is told the address it reached the node at",
            listen_host,
        )
    relay = EmbeddedRelay(
        server,
        secret,
        ports=ports,
        public_host=public_host,
        tls=tls,
        external_configured=bool(listen.external_host),
    )
    if relay.on_loopback_only:
        log.warning(
            "the relay listens on %s (loopback) but tells clients %s: nobody elsewhere can "
            'reach it. Set [relay] host = "0.0.0.0" (or this machine\'s public address) to '
            "listen where clients reach it; the node's HTTP stays on [node] host",
            server.address[0],
            public_host,
        )
    return relay


def _unspecified(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_unspecified
    return host == ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def _is_loopback_client(host: str) -> bool:
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback
    return False
