"""`pagemesh demo`: a local mesh on loopback that a person can chat in.

Three signaling nodes (the first with an embedded TURN relay) form a DHT on
127.0.0.1; two bots sit in the room of https://example.org/: a greeter that
says hello to whoever joins (and answers `!echo`), and a file bot that sends
back every file it is given. Once the mesh is up (the bots linked to each
other), the demo prints every way in: the browser client's address, the commands
to join from other terminals, a sample site on another port that embeds the chat
widget (`/embed.js`), and the browser extension it built for these nodes. It
listens on the same ports every run (`DEMO_PORT` on, or `--port BASE`), so its
addresses, the extension it built and what a browser keeps per origin (its
identity, name, contacts) outlive a restart; a port in use gets a free one instead,
and the demo says so. It runs until Ctrl-C (or `--duration`). Library logs
stay off unless `-v` asks for them, so nothing scrolls those instructions
away. Its data lives in one folder that `make clean` removes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from dht.core import DHTConfig
from signaling.config import NodeConfig
from signaling.node import SignalingNode

from . import extension
from .embedded_relay import start_embedded_relay

if TYPE_CHECKING:
    from peer.peer import Peer

VERBOSE_HINT = "make demo V=1 (or .venv/bin/pagemesh -v demo)"
"""How to see the libraries' logs, from `make demo` (the Makefile passes -v on) or not."""
DEMO_PORT = 8471
"""The first of the demo's fixed ports on 127.0.0.1 (8471-8478 for three nodes: their
HTTP ports, then their DHT ports, the relay's, the sample site's)."""
GREETED = "greeted"
"""The folder of the demo's data where the greeter keeps the keys it greeted, one file
a room (`GREETED_FILES`), kept when a new run wipes the rest."""
GREETED_FILES = ("example.org.txt", "site.txt")
DEMO_RELAY = '[relay]\nallow_peers = ["127.0.0.0/8"]  # loopback peers, for the demo only\n'


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run a local mesh on loopback that you can chat in")
    demo.add_argument("--nodes", type=int, default=3, help="signaling nodes to start (default 3)")
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    demo.add_argument(
        "--port",
        type=int,
        default=DEMO_PORT,
        metavar="BASE",
        help=f"first of the ports it listens on (default {DEMO_PORT}; 0: any free ports)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: Ctrl-C)",
    )
    demo.set_defaults(run=_run, quiet_logs=True)


def _run(args: argparse.Namespace) -> int:
    if not (args.port == 0 or 1024 <= args.port <= 65535 - 2 * args.nodes - 1):
        print(f"pagemesh demo: --port {args.port}: no room for its ports", file=sys.stderr)
        return 2
    fresh_data_dir(args.data_dir)
    return asyncio.run(run_demo(args))


def fresh_data_dir(data_dir: Path) -> None:
    """A fresh mesh every time, but the greeter's memory of whom it greeted stays: the
    demo keeps its ports, so a browser comes back with the key it had (GREETED)."""
    memory = data_dir / GREETED
    kept = {
        name: (memory / name).read_bytes() for name in GREETED_FILES if (memory / name).is_file()
    }
    shutil.rmtree(data_dir, ignore_errors=True)
    memory.mkdir(parents=True)
    for name, content in kept.items():
        (memory / name).write_bytes(content)


def say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True, slots=True)
class DemoPorts:
    """Where the demo listens on 127.0.0.1; 0 where any free port does."""

    http: tuple[int, ...]
    """Each node's HTTP (and WebSocket) port, TCP."""
    dht: tuple[int, ...]
    """Each node's DHT port, UDP."""
    relay: int
    """The first node's TURN relay, UDP and TCP."""
    site: int
    """The sample site that embeds the widget, TCP."""
    taken: tuple[int, ...] = ()
    """The fixed ports something else held: these got a free port instead."""


def _free(port: int, kinds: tuple[socket.SocketKind, ...]) -> bool:
    """Nothing listens on 127.0.0.1:`port` (for each of `kinds`): a trial bind says."""
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as trial:
            if kind == socket.SOCK_STREAM:  # as the servers bind: TIME_WAIT is no hold
                trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                trial.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def choose_ports(base: int, nodes: int) -> DemoPorts:
    """The fixed ports from `base` on (`base` 0: free ports throughout): the nodes' HTTP
    ports, their DHT ports, the relay's, the sample site's; each one in use is 0 in its
    place (a free port) and named in `taken`."""
    if base == 0:
        return DemoPorts((0,) * nodes, (0,) * nodes, 0, 0)
    tcp, udp = (socket.SOCK_STREAM,), (socket.SOCK_DGRAM,)
    wanted = [
        *((base + i, tcp) for i in range(nodes)),
        *((base + nodes + i, udp) for i in range(nodes)),
        (base + 2 * nodes, tcp + udp),
        (base + 2 * nodes + 1, tcp),
    ]
    ports = [port if _free(port, kinds) else 0 for port, kinds in wanted]
    taken = tuple(port for (port, _), got in zip(wanted, ports, strict=True) if got == 0)
    return DemoPorts(
        tuple(ports[:nodes]), tuple(ports[nodes : 2 * nodes]), ports[-2], ports[-1], taken
    )


async def start_nodes(count: int, data_dir: Path, ports: DemoPorts) -> list[SignalingNode]:
    relay_toml = data_dir / "relay.toml"
    relay_toml.write_text(DEMO_RELAY)
    dht_config = DHTConfig(maintenance_interval=10.0)
    nodes: list[SignalingNode] = []
    for i in range(count):
        seeds = (f"127.0.0.1:{nodes[0].dht.address[1]}",) if nodes else ()
        config = NodeConfig(
            port=ports.http[i],
            dht_port=ports.dht[i],
            data_dir=str(data_dir / f"node-{i}"),
            bootstrap=seeds,
            relay_port=ports.relay if i == 0 else -1,
        )
        relay = await start_embedded_relay(config, relay_toml) if i == 0 else None
        nodes.append(await SignalingNode.start(config, dht_config, relay))
    return nodes


SAMPLE_SITE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>A sample site with the pagemesh widget</title><link rel="icon" href="data:,">
<style>
body {{ font: 17px/1.5 system-ui, sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em }}
pre {{ white-space: pre-wrap; overflow-wrap: anywhere; background: #f3f1ec; padding: .5em }}
</style></head>
<body>
<h1>Brewing oolong</h1>
<p>This page stands for any site: its owner added one line, and its readers can talk
with whoever else is reading it. Press the round button in the corner.</p>
<pre>&lt;script src="{embed}" referrerpolicy="no-referrer" async&gt;&lt;/script&gt;</pre>
<script src="{embed}" referrerpolicy="no-referrer" async></script>
</body>
</html>
"""


def join_commands(room: str, nodes: list[str], data_dir: Path) -> list[str]:
    """The commands the demo prints for other terminals: alice and bob chat through the
    first and the last node, carol sends alice a file, named as the chats are."""
    where = "--ice-host 127.0.0.1"
    chats = [
        f".venv/bin/pagemesh chat {room} --node {node} --name {who} "
        f"--data-dir {data_dir}/{who} {where}"
        for who, node in (("alice", nodes[0]), ("bob", nodes[-1]))
    ]
    send = (
        f".venv/bin/pagemesh send FILE {room} --to alice --node {nodes[len(nodes) // 2]} "
        f"--name carol --data-dir {data_dir}/carol {where}"
    )
    return [*chats, send]


async def serve_sample_site(node_page: str, port: int = 0) -> tuple[web.AppRunner, str]:
    """A page on its own origin (another port) that embeds the chat widget of `node_page`."""
    body = SAMPLE_SITE.format(embed=html.escape(f"{node_page}/embed.js"))

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


async def run_demo(args: argparse.Namespace) -> int:
    # The bots are peers: aiortc, imported now rather than whenever `pagemesh` starts.
    from peer.webrtc import restrict_host_candidates

    from .demo_bots import LINK_TIMEOUT, ROOM_URL, echo_files, greet, linked, start_bot

    data_dir: Path = args.data_dir
    restrict_host_candidates(["127.0.0.1"])
    say(f"starting {args.nodes} signaling nodes on 127.0.0.1 (data in {data_dir})")
    ports = choose_ports(args.port, args.nodes)
    if ports.taken:
        taken = ", ".join(map(str, ports.taken))
        say(
            f"  {'ports' if len(ports.taken) > 1 else 'port'} {taken} in use: free ones instead, "
            "so these addresses (and the extension built for them) last this run only; "
            "--port BASE picks other fixed ports"
        )
    nodes = await start_nodes(args.nodes, data_dir, ports)
    bots: list[Peer] = []
    tasks: list[asyncio.Task[None]] = []
    sample: web.AppRunner | None = None
    try:
        for i, node in enumerate(nodes):
            relay = node.relay.urls[1] if node.relay is not None else "no relay"
            say(
                f"  node {i}  {node.url}  DHT 127.0.0.1:{node.dht.address[1]}  "
                f"id {node.node_id.hex()[:12]}  {relay}"
            )
        urls = [n.url for n in nodes]
        greeter, greeting = await start_bot("greeter", data_dir, urls)
        bots.append(greeter)
        filebot, room = await start_bot("filebot", data_dir, urls[::-1], data_dir / "filebot-in")
        bots.append(filebot)
        memory = data_dir / GREETED
        main_memory, site_memory = (memory / name for name in GREETED_FILES)
        tasks.append(asyncio.create_task(greet(greeting, {filebot.public_key}, memory=main_memory)))
        if not await linked(room, greeter.public_key):
            say(f"  (the bots did not link within {LINK_TIMEOUT:g} s; {VERBOSE_HINT} shows why)")
        tasks.append(asyncio.create_task(echo_files(room)))
        say(
            f"\ntwo bots sit in the room of {ROOM_URL}: a greeter and a file bot that echoes files."
        )
        page = nodes[0].url.replace("ws://", "http://")
        say(f"\nOpen it in a browser:\n\n  {page}/#room={ROOM_URL}\n")
        say("or join from other terminals:\n")
        for command in join_commands(ROOM_URL, [n.url for n in nodes], data_dir):
            say(f"  {command}")
        say("\nIn a chat, /help lists what you can do (/who, /get N, /send FILE, /leave).")
        sample, site = await serve_sample_site(page, ports.site)
        at_site = await greeter.join(site)  # the greeter reads the sample site too
        tasks.append(
            asyncio.create_task(greet(at_site, set(), site, file_bot=False, memory=site_memory))
        )
        say(f"\nA site with the chat widget (one <script> line, docs/widget.md):\n\n  {site}")
        folder, _ = extension.build(data_dir / "extension", [nodes[0].url])
        say(
            f"\nThe browser extension, built for these nodes in {folder} (docs/extension.md):\n"
            "  chrome://extensions -> Developer mode -> Load unpacked -> that folder; pin it from\n"
            "  the puzzle-piece (Extensions) menu; its Options -> tick 'Also join on local and\n"
            "  private addresses'; then open the site above and click its button."
        )
        say(f"\n  health: curl {page}/healthz   metrics: curl {page}/metrics")
        say(f"\nCtrl-C stops everything; {VERBOSE_HINT} shows the libraries' logs too.")
        await _wait(args.duration)
    finally:
        if sample is not None:
            await sample.cleanup()
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
