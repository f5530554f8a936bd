"""`pagemesh demo`: a local mesh on loopback that a person can chat in.

Three signaling nodes (the first with an embedded TURN relay) form a DHT on
127.0.0.1; two bots sit in the room of https://example.org/: a greeter that
says hello to whoever joins (and answers `!echo`), and a file bot that sends
back every file it is given. The demo prints the browser client's address and
the commands to join from other terminals, and runs until Ctrl-C (or
`--duration`). Its data lives in one folder that `make clean` removes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
from pathlib import Path

from dht.core import DHTConfig
from peer.peer import FileDone, MemberJoined, Message, Peer, Room
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


async def echo_files(room: Room) -> None:
    """The file bot: every file it receives goes back to the room, renamed `echo-<name>`."""
    async for event in room.events():
        if isinstance(event, FileDone) and event.path is not None:
            echoed = event.path.with_name(f"echo-{event.path.name}")
            event.path.rename(echoed)
            await room.send(f"got {event.path.name}; sending it back as {echoed.name}")
            await room.send_file(echoed)


async def start_bot(
    name: str, data_dir: Path, nodes: list[str], files: Path | None = None
) -> tuple[Peer, Room]:
    bot = Peer(data_dir / name, nodes, name=name, accept_files_to=files)
    await bot.__aenter__()
    return bot, await bot.join(ROOM_URL)


async def run_demo(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    restrict_host_candidates(["127.0.0.1"])
    say(f"starting {args.nodes} signaling nodes on 127.0.0.1 (data in {data_dir})")
    nodes = await start_nodes(args.nodes, data_dir)
    bots: list[Peer] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for i, node in enumerate(nodes):
            relay = node.relay.urls[1] if node.relay is not None else "no relay"
            say(
                f"  node {i}  {node.url}  DHT 127.0.0.1:{node.dht.address[1]}  "
                f"id {node.node_id.hex()[:12]}  {relay}"
            )
        urls = [n.url for n in nodes]
        greeter, room = await start_bot("greeter", data_dir, urls)
        bots.append(greeter)
        tasks.append(asyncio.create_task(greet(room)))
        filebot, room = await start_bot("filebot", data_dir, urls[::-1], data_dir / "filebot-in")
        bots.append(filebot)
        tasks.append(asyncio.create_task(echo_files(room)))
        say(
            f"\ntwo bots sit in the room of {ROOM_URL}: a greeter and a file bot that echoes files."
        )
        page = nodes[0].url.replace("ws://", "http://")
        say(f"\nOpen it in a browser:\n\n  {page}/?room={ROOM_URL}\n")
        say("or join from other terminals:\n")
        for who, node in (("alice", nodes[0]), ("bob", nodes[-1])):
            say(
                f"  .venv/bin/pagemesh chat {ROOM_URL} --node {node.url} --name {who} "
                f"--data-dir {data_dir}/{who} --ice-host 127.0.0.1"
            )
        say(
            f"  .venv/bin/pagemesh send {ROOM_URL} FILE --node {nodes[1].url} "
            f"--data-dir {data_dir}/carol --ice-host 127.0.0.1"
        )
        say(f"\n  health: curl {page}/healthz   metrics: curl {page}/metrics")
        say("\nCtrl-C stops everything.")
        await _wait(args.duration)
    finally:
        for task in tasks:
            task.cancel()
        for bot in bots:
            await bot.close()
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
