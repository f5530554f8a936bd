"""`pagemesh demo`: a local mesh on loopback that a person can chat in.

Three signaling nodes (the first with an embedded TURN relay) form a DHT on
127.0.0.1; a greeter peer sits in the room of https://example.org/ and says
hello to whoever joins. The demo prints the commands to join from other
terminals and runs until Ctrl-C (or `--duration`). Its data lives in one
folder that `make clean` removes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
from pathlib import Path

from dht.core import DHTConfig
from peer.peer import MemberJoined, Message, Peer, Room
from peer.webrtc import restrict_host_candidates
from signaling.config import NodeConfig
from signaling.node import SignalingNode

from .embedded_relay import start_embedded_relay

ROOM_URL = "https://example.org/"
DEMO_RELAY = '[relay]\nallow_peers = ["127.0.0.0/8"]  # loopback peers, for the demo only\n'


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run a local mesh on loopback that you can chat in")
    demo.add_argument("--nodes", type=int, default=3, help="signaling nodes to start (default 3)")
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: Ctrl-C)",
    )
    demo.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    shutil.rmtree(args.data_dir, ignore_errors=True)  # a fresh mesh every time
    args.data_dir.mkdir(parents=True)
    return asyncio.run(run_demo(args))


def say(text: str) -> None:
    print(text, flush=True)


async def start_nodes(count: int, data_dir: Path) -> list[SignalingNode]:
    relay_toml = data_dir / "relay.toml"
    relay_toml.write_text(DEMO_RELAY)
    dht_config = DHTConfig(maintenance_interval=10.0)
    nodes: list[SignalingNode] = []
    for i in range(count):
        seeds = (f"127.0.0.1:{nodes[0].dht.address[1]}",) if nodes else ()
        config = NodeConfig(
            port=0,
            dht_port=0,
            data_dir=str(data_dir / f"node-{i}"),
            bootstrap=seeds,
            relay_port=0 if i == 0 else -1,
        )
        relay = await start_embedded_relay(config, relay_toml) if i == 0 else None
        nodes.append(await SignalingNode.start(config, dht_config, relay))
    return nodes


async def greet(room: Room) -> None:
    """The greeter: hello to newcomers, and an echo for lines starting with `!echo`."""
    names = room.names
    async for event in room.events():
        if isinstance(event, MemberJoined):
            await room.send(f"hello {event.key.hex()[:8]}, welcome to the room of {ROOM_URL}")
        elif isinstance(event, Message) and not event.mine and event.text.startswith("!echo"):
            who = names.get(event.author, event.author.hex()[:8])
            await room.send(f"{who} said: {event.text.removeprefix('!echo').strip()}")


async def run_demo(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    restrict_host_candidates(["127.0.0.1"])
    say(f"starting {args.nodes} signaling nodes on 127.0.0.1 (data in {data_dir})")
    nodes = await start_nodes(args.nodes, data_dir)
    greeter: Peer | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        for i, node in enumerate(nodes):
            relay = node.relay.urls[1] if node.relay is not None else "no relay"
            say(
                f"  node {i}  {node.url}  DHT 127.0.0.1:{node.dht.address[1]}  "
                f"id {node.node_id.hex()[:12]}  {relay}"
            )
        greeter = Peer(data_dir / "greeter", [n.url for n in nodes], name="greeter")
        await greeter.__aenter__()
        room = await greeter.join(ROOM_URL)
        tasks.append(asyncio.create_task(greet(room)))
        say(f"\na greeter sits in the room of {ROOM_URL}. Join it from other terminals:\n")
        for who, node in (("alice", nodes[0]), ("bob", nodes[-1])):
            say(
                f"  .venv/bin/pagemesh chat {ROOM_URL} --node {node.url} --name {who} "
                f"--data-dir {data_dir}/{who} --ice-host 127.0.0.1"
            )
        say(
            f"\n  health: curl {nodes[0].url.replace('ws://', 'http://')}/healthz"
            f"   metrics: curl {nodes[0].url.replace('ws://', 'http://')}/metrics"
        )
        say("\nCtrl-C stops everything.")
        await _wait(args.duration)
    finally:
        for task in tasks:
            task.cancel()
        if greeter is not None:
            await greeter.close()
        for node in nodes:
            await node.stop()
        say("stopped")
    return 0


async def _wait(duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
