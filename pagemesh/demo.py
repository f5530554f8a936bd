"""`pagemesh demo`: a local mesh on loopback that a person can watch and poke at.

Today it runs the DHT that signaling nodes will form: a few nodes join, some
records are published, lookups are timed, and the nodes keep serving so
`pagemesh dht get/put --node ...` from another terminal works against them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import time
from pathlib import Path

from dht.cli import record_json
from dht.core import DHTConfig
from dht.ids import key_for, node_id_for
from dht.node import DHTNode


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run a local mesh on loopback and show it working")
    demo.add_argument("--nodes", type=int, default=12, help="DHT nodes to start (default 12)")
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: Ctrl-C)",
    )
    demo.add_argument("--seed", type=int, default=None, help="seed for the demo's choices")
    demo.set_defaults(run=lambda args: asyncio.run(run_demo(args)))


async def run_demo(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    data_dir: Path = args.data_dir
    shutil.rmtree(data_dir / "dht", ignore_errors=True)
    config = DHTConfig(maintenance_interval=10.0)
    say(f"starting {args.nodes} DHT nodes on 127.0.0.1 (data in {data_dir}/dht)")
    first = await DHTNode.start("127.0.0.1", 0, data_dir / "dht" / "node-0", config=config)
    nodes = [first]
    for i in range(1, args.nodes):
        node = await DHTNode.start(
            "127.0.0.1", 0, data_dir / "dht" / f"node-{i}", bootstrap=[first.address], config=config
        )
        nodes.append(node)
    for i, node in enumerate(nodes):
        say(
            f"  node {i:2d}  {node.address[0]}:{node.address[1]:<5d}  id {node.node_id.hex()[:16]}…"
            f"  knows {len(node.core.table)} others"
        )
    try:
        await show_records(nodes, rng)
        await show_lookups(nodes, rng)
        say("")
        say("the mesh keeps running; from another terminal try:")
        say(
            f"  .venv/bin/pagemesh dht get https://example.org/ --node 127.0.0.1:{first.address[1]}"
        )
        say(f"  .venv/bin/pagemesh dht put hello world --node 127.0.0.1:{nodes[-1].address[1]}")
        say("Ctrl-C stops it")
        await wait_for_stop(args.duration)
    finally:
        for node in nodes:
            await node.stop()
        say("stopped; routing tables saved")
    return 0


async def show_records(nodes: list[DHTNode], rng: random.Random) -> None:
    key = key_for("https://example.org/")
    say("")
    say("three nodes publish signed records under one key (a page's room, later on):")
    for node in rng.sample(nodes, 3):
        text = f"hello from {node.node_id.hex()[:8]}"
        stored = await node.put_record(key, text.encode(), ttl=600)
        say(f"  {node.node_id.hex()[:8]} put {text!r}: stored at {stored} nodes")
    reader = rng.choice(nodes)
    start = time.perf_counter()
    records = await reader.get_records(key)
    took = (time.perf_counter() - start) * 1000
    say(f"node {reader.node_id.hex()[:8]} reads the key back in {took:.1f} ms:")
    for record in records:
        publisher = node_id_for(record.publisher).hex()[:8]
        say(f"  from {publisher}, seq {record.seq}: {record_json(record).get('text')!r}")


async def show_lookups(nodes: list[DHTNode], rng: random.Random) -> None:
    say("")
    say("20 lookups for random ids from random nodes:")
    times = []
    for _ in range(20):
        node = rng.choice(nodes)
        start = time.perf_counter()
        found = await node.find_node(rng.randbytes(20))
        times.append((time.perf_counter() - start) * 1000)
        assert found
    times.sort()
    say(f"  p50 {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms")


async def wait_for_stop(duration: float | None) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), duration)


def say(text: str) -> None:
    print(text, flush=True)
