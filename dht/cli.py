"""`pagemesh dht ...`: run a DHT node, and put or get records against a running one."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .config import SERVER_DEFAULTS, ConfigError, load_config
from .core import DHTConfig, LocalProtocolError
from .identity import Identity
from .ids import key_for, node_id_for
from .node import DHTNode
from .records import Record
from .wire import Address

log = logging.getLogger("pagemesh.dht")


def default_data_dir() -> Path:
    """`$PAGEMESH_DATA_DIR`, else `$XDG_DATA_HOME/pagemesh`, else ~/.local/share/pagemesh."""
    if env := os.environ.get("PAGEMESH_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "pagemesh"


def parse_address(text: str) -> Address:
    """`HOST:PORT` or `[V6]:PORT` as an address tuple."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1", int(port))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dht = commands.add_parser("dht", help="run a DHT node or query one")
    sub = dht.add_subparsers(dest="dht_command", required=True, metavar="ACTION")

    serve = sub.add_parser("serve", help="run a DHT node until SIGINT/SIGTERM")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=4000, help="UDP port (default 4000)")
    serve.add_argument(
        "--bootstrap", type=parse_address, action="append", default=[], metavar="HOST:PORT"
    )
    serve.add_argument("--data-dir", type=Path, default=None, help="key and routing table")
    serve.add_argument("--config", type=Path, default=None, help="TOML file with a [dht] table")
    serve.set_defaults(run=_run_serve)

    for name, helptext in (("put", "sign and store a record"), ("get", "read a key's records")):
        action = sub.add_parser(name, help=helptext)
        action.add_argument(
            "key",
            help="any name (what `put` stored under, e.g. greeting); the DHT key is its "
            "hash, so a room's page URL does not find the room (docs/protocol.md)",
        )
        if name == "put":
            action.add_argument("value", help="the value (UTF-8, at most 1000 bytes)")
            action.add_argument("--ttl", type=float, default=3600.0, help="seconds (max 3600)")
        action.add_argument(
            "--node", type=parse_address, action="append", required=True, metavar="HOST:PORT"
        )
        action.add_argument("--data-dir", type=Path, default=None, help="the publisher's key")
        action.add_argument("--timeout", type=float, default=10.0)
        action.set_defaults(run=_run_put if name == "put" else _run_get)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, SERVER_DEFAULTS)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"pagemesh dht serve: bad config: {exc}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or default_data_dir() / "dht"
    asyncio.run(serve(args.host, args.port, data_dir, args.bootstrap, config))
    return 0


async def serve(
    host: str, port: int, data_dir: Path, bootstrap: list[Address], config: DHTConfig
) -> None:
    node = await DHTNode.start(host, port, data_dir, bootstrap=bootstrap, config=config)
    reach = ""
    if config.reach.check:
        # Others dial it back first (docs/protocol.md 1.9); unreachable, it only asks.
        verdict = await node.check_reach("")
        reach = f"; reachable: {verdict.dht.value} ({verdict.confirmed} of {verdict.helpers})"
        if node.core.client:
            reach += f", running as a DHT client: open UDP port {node.address[1]}"
    log.info(
        "dht node %s listening on %s:%d with %d contacts%s",
        node.node_id.hex(),
        *node.address,
        len(node.core.table),
        reach,
    )
    try:
        await until_stop_signal()
    finally:
        log.info("stopping; routing table saved to %s", data_dir)
        await node.stop()


async def until_stop_signal() -> None:
    """Return on SIGINT or SIGTERM (a service's way to stop cleanly)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()


def _client_identity(data_dir: Path | None) -> Identity:
    return Identity.load_or_create((data_dir or default_data_dir()) / "client.key")


async def _client(args: argparse.Namespace) -> DHTNode:
    """A read-only node: it asks the mesh but never joins anyone's routing table."""
    node = await DHTNode.start(
        "0.0.0.0" if any(":" not in h for h, _ in args.node) else "::",
        0,
        identity=_client_identity(args.data_dir),
        config=DHTConfig(read_only=True, rpc_timeout=min(2.0, args.timeout / 2)),
    )
    contacts = await asyncio.wait_for(node.bootstrap(args.node), args.timeout)
    if not contacts:
        node.abort()
        raise ConnectionError(f"no DHT node answered at {', '.join(map(_fmt, args.node))}")
    return node


def _fmt(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


def _run_put(args: argparse.Namespace) -> int:
    return asyncio.run(_client_action(args, _put))


def _run_get(args: argparse.Namespace) -> int:
    return asyncio.run(_client_action(args, _get))


async def _client_action(args: argparse.Namespace, action: Any) -> int:
    try:
        node = await _client(args)
    except (ConnectionError, TimeoutError, OSError) as exc:
        print(f"pagemesh dht: {exc}", file=sys.stderr)
        return 1
    try:
        return int(await asyncio.wait_for(action(node, args), args.timeout))
    except TimeoutError:
        print("pagemesh dht: timed out", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            node.abort()


async def _put(node: DHTNode, args: argparse.Namespace) -> int:
    value = args.value.encode("utf-8")
    try:
        stored = await node.put_record(key_for(args.key), value, ttl=args.ttl)
    except LocalProtocolError as exc:
        print(f"pagemesh dht put: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"key": key_for(args.key).hex(), "stored_at_nodes": stored}))
    return 0 if stored else 1


async def _get(node: DHTNode, args: argparse.Namespace) -> int:
    found = await node.find_records(key_for(args.key))
    for record in found.records:
        print(json.dumps(record_json(record)))
    if not found.records:
        asked = f"{found.queries} node{'' if found.queries == 1 else 's'}"
        print(f"pagemesh dht get: no record for {args.key!r} (asked {asked})", file=sys.stderr)
        return 1
    return 0


def record_json(record: Record) -> dict[str, Any]:
    try:
        value: dict[str, str] = {"text": record.value.decode("utf-8")}
    except UnicodeDecodeError:
        value = {"base64": base64.b64encode(record.value).decode()}
    return {
        "publisher": record.publisher.hex(),
        "publisher_id": node_id_for(record.publisher).hex(),
        "seq": record.seq,
        "expires_in": round(record.expires_at - time.time()),
        **value,
    }
