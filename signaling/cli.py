"""`pagemesh node`: what a volunteer runs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dht.cli import default_data_dir, until_stop_signal
from dht.config import ConfigError

from .config import NodeConfig, load_node_config
from .node import PACKAGE_VERSION, EmbeddedRelay, SignalingNode
from .seeds import SeedError, parse_seed

log = logging.getLogger(__name__)


RelayStarter = Callable[[NodeConfig, Path | None], Awaitable[EmbeddedRelay]]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    relay_starter: RelayStarter | None = None,
) -> None:
    """`relay_starter` runs `--relay-port`'s relay (given by the console command, which
    may import the relay server; this package may not)."""
    node = commands.add_parser(
        "node",
        help="run a signaling node (DHT + client WebSocket API) until SIGINT/SIGTERM",
        description="Every option can also be set in the [node] table of --config; "
        "the command line wins. The relay secret comes from [node.ice] secret_file "
        "or the environment variable PAGEMESH_RELAY_SECRET. SIGHUP reloads the TLS "
        "certificate and key (connected clients stay).",
    )
    node.add_argument("--host", help="address for HTTP/WebSocket and DHT (default 127.0.0.1)")
    node.add_argument("--port", type=int, help="HTTP/WebSocket port (default 8000; 0 picks one)")
    node.add_argument("--dht-port", type=int, help="UDP port of the DHT (default 4000)")
    node.add_argument(
        "--bootstrap",
        type=_seed,
        action="append",
        metavar="URL|HOST:PORT",
        help="a running node to join through: its URL (https://NAME) or DHT address",
    )
    node.add_argument("--data-dir", type=Path, help="node key and routing table")
    node.add_argument(
        "--public-url", help="base URL others dial (default ws://HOST:PORT, wss:// with TLS)"
    )
    node.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="serve HTTPS/WSS with this PEM chain"
    )
    node.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="its PEM key (mode 0600, else refused)"
    )
    node.add_argument(
        "--relay-port", type=int, help="also run a TURN relay on this UDP+TCP port (0: any)"
    )
    node.add_argument(
        "--relay-tls-port",
        type=int,
        metavar="PORT",
        help="and TURN over TLS (turns:) on this TCP port, e.g. 443 (certificate: --tls-cert)",
    )
    node.add_argument(
        "--relay-tls-cert", type=Path, metavar="FILE", help="the relay's own PEM chain"
    )
    node.add_argument("--relay-tls-key", type=Path, metavar="FILE", help="its PEM key (mode 0600)")
    node.add_argument("--config", type=Path, help="TOML file with [node], [dht], [relay] tables")
    node.set_defaults(run=lambda args: _run_node(args, relay_starter))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "dht_port": args.dht_port,
        "bootstrap": args.bootstrap or None,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "public_url": args.public_url,
        "tls_cert": str(args.tls_cert) if args.tls_cert else None,
        "tls_key": str(args.tls_key) if args.tls_key else None,
        "relay_port": args.relay_port,
        "relay_tls_port": args.relay_tls_port,
        "relay_tls_cert": str(args.relay_tls_cert) if args.relay_tls_cert else None,
        "relay_tls_key": str(args.relay_tls_key) if args.relay_tls_key else None,
    }


def _seed(text: str) -> str:
    """A `--bootstrap` entry, checked (signaling/seeds.py) and kept as written."""
    try:
        parse_seed(text)
    except SeedError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _run_node(args: argparse.Namespace, relay_starter: RelayStarter | None) -> int:
    try:
        config, dht_config = load_node_config(args.config, _overrides(args))
    except (ConfigError, OSError, ValueError) as exc:
        print(f"pagemesh node: bad config: {exc}", file=sys.stderr)
        return 2
    if not config.data_dir:
        config = _with_data_dir(config, default_data_dir() / "node")
    if config.relay_port >= 0 and relay_starter is None:
        print("pagemesh node: this build has no relay for --relay-port", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, dht_config, relay_starter, args.config))
    except ConfigError as exc:
        print(f"pagemesh node: bad config: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pagemesh node: {exc}", file=sys.stderr)
        return 1
    return 0


def _with_data_dir(config: Any, path: Path) -> Any:
    return dataclasses.replace(config, data_dir=str(path))


async def serve(
    config: NodeConfig,
    dht_config: Any,
    relay_starter: RelayStarter | None = None,
    config_path: Path | None = None,
) -> None:
    relay = None
    if config.relay_port >= 0 and relay_starter is not None:
        relay = await relay_starter(config, config_path)
    node = await SignalingNode.start(config, dht_config, relay)
    host, port = node.dht.address
    line = f"pagemesh node {node.node_id.hex()} at {node.url} dht {host}:{port}"
    listen = config.host if ":" not in config.host else f"[{config.host}]"
    line += f" listen {listen}:{node.port}"  # where it binds, whatever `url` (a proxy) says
    if relay is not None:
        line += " relay " + (" ".join(relay.urls) or "(at the address each client reaches)")
    elif not (config.ice.stun_urls or config.ice.turn_urls):
        log.warning(
            "no STUN or TURN servers for clients (no --relay-port, no [node.ice]): "
            "peers behind NATs will rarely connect"
        )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, node.reload_tls)  # before anyone learns we run
    print(line + f" page {node.page_url}/ version {PACKAGE_VERSION}", flush=True)
    try:
        await until_stop_signal()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        log.info("stopping: telling %d clients where to go", len(node.clients))
        await node.stop()
