"""A TURN relay inside a signaling node (`pagemesh node --relay-port P`).

The node's package does not import the relay server (signaling -> relay is
for credentials only), so the command line wires the two here: start a
`relay.server.RelayServer` with the node's secret, and hand the node what it
needs to advertise it and mint credentials for it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.registry import Collector

from relay.config import ConfigError as RelayConfigError
from relay.config import config_from_mapping
from relay.credentials import load_secret
from relay.metrics import RelayCollector
from relay.server import RelayServer
from signaling.config import ConfigError, NodeConfig


class EmbeddedRelay:
    """What a SignalingNode needs of its relay (signaling.node.EmbeddedRelay)."""

    def __init__(self, server: RelayServer, secret: bytes, urls: list[str]) -> None:
        self.server = server
        self.secret = secret
        self.urls = urls
        self.collector: Collector = RelayCollector(lambda: server.core)

    async def stop(self) -> None:
        await self.server.stop()


def _advertised_host(config: NodeConfig) -> str:
    if config.relay_host:
        return config.relay_host
    if config.public_url:
        host = urlsplit(config.public_url).hostname
        if host:
            return host
    return config.host if config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"


async def start_embedded_relay(config: NodeConfig, config_path: Path | None) -> EmbeddedRelay:
    """Start the relay the node config asks for; the `[relay]` table tunes it."""
    table = {}
    if config_path is not None:
        with config_path.open("rb") as handle:
            table = tomllib.load(handle).get("relay", {})
    try:
        relay_config, _listen = config_from_mapping(table)
    except RelayConfigError as exc:
        raise ConfigError(str(exc)) from None
    # The relay lives in the node's process: without a configured secret, a fresh one
    # per start is enough (nobody else needs to mint for it).
    secret = load_secret(config.ice.secret_file) or os.urandom(32)
    server = await RelayServer.start(config.host, max(config.relay_port, 0), secret, relay_config)
    host = _advertised_host(config)
    shown = f"[{host}]" if ":" in host else host
    port = server.address[1]
    urls = [
        f"stun:{shown}:{port}",
        f"turn:{shown}:{port}?transport=udp",
        f"turn:{shown}:{port}?transport=tcp",
    ]
    return EmbeddedRelay(server, secret, urls)
