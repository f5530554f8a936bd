"""What runs inside the emulated-link lab's namespaces (tests/nat/netem.py); JSON lines.

python -m tests.nat.netem_host node SPEC_JSON
    one real signaling node (`signaling.node.SignalingNode`: its aiohttp WebSocket
    server, room core and UDP DHT node) at the spec's address, key and bootstrap; says
    `started` once it has joined. Commands on stdin, one JSON object a line:
    {"op": "lookup", "target": HEX, "id": N}   the DHT's `find_node(target)`, timed
    {"op": "stop"}                            stop and exit
python -m tests.nat.netem_host clients
    real clients (`peer.signaling.SignalingClient`):
    {"op": "join", "id": N, "url": WS_URL, "seed": HEX, "room": PAGE_URL}
        connect to the node at WS_URL with the key of SEED (hello and welcome), then time
        the `join` frame sent to `joined` received; the client stays seated.

Answers are one JSON line each on stdout, `{"event": ..., "id": N, ...}`. Times are
the event loop's monotonic clock, in seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from dht.core import DHTConfig
from peer.signaling import SignalingClient
from signaling.admission import AdmissionLimits
from signaling.config import NodeConfig
from signaling.node import SignalingNode
from signaling.rooms import room_key

HTTP_PORT, DHT_PORT = 8000, 4000
LAB_ADMISSION = AdmissionLimits(
    unauthenticated=1000, connections=100_000, per_second=1000.0, burst=10_000.0
)
"""The lab's clients all come from one address: per-source limits must not bind."""


def dht_config(fast: bool) -> DHTConfig:
    """The simulator's DHT settings (k 20, alpha 3, rpc_timeout 2 s), fast paths or not."""
    config = DHTConfig()
    return config.with_fast_paths() if fast else config


def room_settings(fast: bool) -> dict[str, Any]:
    """The lab nodes' `NodeConfig` room settings (the simulator builds its `RoomConfig` from
    the same): defaults but the fast paths, and per-source join limits that cannot bind
    (the clients share one address)."""
    return {"fast_paths": fast, "joins_per_minute": 10_000.0, "seats_per_source": 10_000}


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def commands() -> Any:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield json.loads(line)


def prepare(spec: dict[str, Any]) -> Path:
    """The node's data directory, holding the key of the plan's seed (mode 0600)."""
    data_dir = Path(spec["data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir / "node.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bytes.fromhex(spec["seed"]))
    return data_dir


async def run_node(spec: dict[str, Any], data_dir: Path) -> None:
    fast = bool(spec["fast"])
    config = NodeConfig(
        host=spec["ip"],
        port=HTTP_PORT,
        dht_port=DHT_PORT,
        bootstrap=tuple(spec["bootstrap"]),
        data_dir=str(data_dir),
        admission=LAB_ADMISSION,
        metrics_from=(),
        **room_settings(fast),
    )
    node = await SignalingNode.start(config, dht_config(fast))
    emit(event="started", contacts=len(node.dht.core.table))
    tasks: set[asyncio.Task[None]] = set()

    async def lookup(target: bytes, ident: int) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            contacts = await asyncio.wait_for(node.dht.find_node(target), 30)
        except (TimeoutError, OSError) as exc:
            emit(event="lookup", id=ident, error=repr(exc))
            return
        emit(
            event="lookup",
            id=ident,
            s=loop.time() - began,
            closest=contacts[0].node_id.hex() if contacts else None,
        )

    async for command in commands():
        if command["op"] == "lookup":
            task = asyncio.create_task(lookup(bytes.fromhex(command["target"]), command["id"]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif command["op"] == "stop":
            break
    node.dht.abort()
    emit(event="stopped")


async def run_clients() -> None:
    clients: list[SignalingClient] = []
    tasks: set[asyncio.Task[None]] = set()

    async def join(command: dict[str, Any]) -> None:
        ident = command["id"]
        loop = asyncio.get_running_loop()
        try:
            client = await SignalingClient.connect(
                command["url"], SigningKey(bytes.fromhex(command["seed"])), within=30
            )
            clients.append(client)
            began = loop.time()
            joined = await client.join(room_key(command["room"]))
        except Exception as exc:  # reported to the controller, which fails the run
            emit(event="join", id=ident, error=repr(exc))
            return
        emit(event="join", id=ident, s=loop.time() - began, layer=joined.layer)

    async for command in commands():
        if command["op"] == "join":
            task = asyncio.create_task(join(command))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif command["op"] == "stop":
            break
    for client in clients:
        await client.close()
    emit(event="stopped")


def main() -> None:
    role, *args = sys.argv[1:]
    if role == "node":
        spec = json.loads(args[0])
        asyncio.run(run_node(spec, prepare(spec)))
    else:
        asyncio.run(run_clients())


if __name__ == "__main__":
    main()
