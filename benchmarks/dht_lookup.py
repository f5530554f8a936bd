"""Lookup latency of our DHT against the stock `kademlia` package, 10% of nodes silently dead.

Builds a 100-node loopback mesh of ours and one of stock `kademlia.network.Server`
in the same run, lets each settle, silences 10% of each (the socket stays open,
every datagram is ignored and nothing is sent: a host that vanished, not one
that answers with ICMP), then times 1000 lookups for random ids from random
live nodes in each, at the same bounded concurrency. Prints one JSON object.

    .venv/bin/python benchmarks/dht_lookup.py [--nodes 100] [--lookups 1000] [--uvloop]

Memory per node is the tracemalloc growth while a mesh is built and settled,
divided by its node count (Python objects only, same method for both).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node

from dht.core import DHTConfig
from dht.node import DHTNode

K, ALPHA = 20, 3


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_lookups(
    count: int, concurrency: int, lookup: Callable[[random.Random], Awaitable[bool]], seed: int
) -> tuple[list[float], int]:
    """Run `count` lookups, at most `concurrency` at once; returns latencies (ms) and successes."""
    rng = random.Random(seed)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    successes = 0

    async def one(sub: random.Random) -> None:
        nonlocal successes
        async with gate:
            start = time.perf_counter()
            ok = await lookup(sub)
            latencies.append((time.perf_counter() - start) * 1000)
            successes += ok

    await asyncio.gather(*(one(random.Random(rng.getrandbits(64))) for _ in range(count)))
    return latencies, successes


def silence(transport: asyncio.BaseTransport) -> None:
    """The host vanished: keep the port bound, ignore everything that arrives."""
    transport.get_protocol().datagram_received = lambda data, addr: None  # type: ignore[attr-defined]


def true_closest(ids: list[bytes], target: bytes) -> list[bytes]:
    num = int.from_bytes(target, "big")
    return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ num)[:K]


async def bench_ours(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    config = DHTConfig(k=K, alpha=ALPHA)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    first = await DHTNode.start("127.0.0.1", 0, config=config)
    nodes = [first]
    for _ in range(args.nodes - 1):
        nodes.append(await DHTNode.start("127.0.0.1", 0, bootstrap=[first.address], config=config))
    for node in nodes:  # settle: every node looks around once
        await node.find_node(rng.randbytes(20))
    gc.collect()
    memory = (tracemalloc.get_traced_memory()[0] - before) / len(nodes)
    tracemalloc.stop()

    dead = rng.sample(nodes[1:], args.nodes // 10)
    for node in dead:
        silence(node._transport)  # type: ignore[arg-type]
        node.core.handle_timer = lambda now: None  # type: ignore[method-assign]
    live = [n for n in nodes if n not in dead]
    live_ids = [n.node_id for n in live]
    sent_before = sum(n.core.counters["rpc.out.FindNode"] for n in live)
    exact = 0

    async def lookup(sub: random.Random) -> bool:
        nonlocal exact
        source, target = sub.choice(live), sub.randbytes(20)
        found = await source.find_node(target)
        ids = [c.node_id for c in found]
        exact += ids == true_closest([i for i in live_ids if i != source.node_id], target)
        return len(found) == K

    log(f"ours: {args.lookups} lookups on {len(live)} live of {len(nodes)} nodes")
    latencies, successes = await timed_lookups(args.lookups, args.concurrency, lookup, args.seed)
    sent = sum(n.core.counters["rpc.out.FindNode"] for n in live) - sent_before
    for node in nodes:
        node.abort()
    return {
        "latencies": latencies,
        "success_rate": successes / args.lookups,
        "exact_rate": exact / args.lookups,
        "rpcs_per_lookup": sent / args.lookups,
        "memory_per_node_bytes": round(memory),
    }


async def bench_stock(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    rng = random.Random(args.seed)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    servers = []
    for _ in range(args.nodes):
        server = Server(ksize=K, alpha=ALPHA, node_id=rng.randbytes(20))
        await server.listen(0, interface="127.0.0.1")
        servers.append(server)
    first = ("127.0.0.1", servers[0].transport.get_extra_info("sockname")[1])
    for server in servers[1:]:
        await server.bootstrap([first])

    async def crawl(server: Server, target: bytes) -> list[Node]:
        node = Node(target)
        nearest = server.protocol.router.find_neighbors(node, K)
        return await NodeSpiderCrawl(server.protocol, node, nearest, K, ALPHA).find()

    for server in servers:  # settle: the same single look around as ours
        await crawl(server, rng.randbytes(20))
    gc.collect()
    memory = (tracemalloc.get_traced_memory()[0] - before) / len(servers)
    tracemalloc.stop()

    dead = rng.sample(servers[1:], args.nodes // 10)
    for server in dead:
        silence(server.transport)
        if server.refresh_loop:
            server.refresh_loop.cancel()
    live = [s for s in servers if s not in dead]
    live_ids = [s.node.id for s in live]
    exact = 0

    async def lookup(sub: random.Random) -> bool:
        nonlocal exact
        source, target = sub.choice(live), sub.randbytes(20)
        found = await crawl(source, target)
        ids = [n.id for n in found]
        exact += ids == true_closest([i for i in live_ids if i != source.node.id], target)
        return len(found) == K

    count = args.stock_lookups or args.lookups
    log(f"stock: {count} lookups on {len(live)} live of {len(servers)} nodes")
    latencies, successes = await timed_lookups(count, args.concurrency, lookup, args.seed)
    for server in servers:
        server.stop()
    return {
        "latencies": latencies,
        "success_rate": successes / count,
        "exact_rate": exact / count,
        "memory_per_node_bytes": round(memory),
        "lookups": count,
    }


def summary(args: argparse.Namespace, ours: dict[str, Any], stock: dict[str, Any]) -> dict:
    ours_p50, ours_p99 = percentile(ours["latencies"], 0.5), percentile(ours["latencies"], 0.99)
    stock_p50 = percentile(stock["latencies"], 0.5)
    ratio = ours_p50 / stock_p50
    return {
        "benchmark": "dht_lookup",
        "nodes": args.nodes,
        "dead_fraction": (args.nodes // 10) / args.nodes,
        "lookups": args.lookups,
        "stock_lookups": stock["lookups"],
        "concurrency": args.concurrency,
        "ours_p50_ms": round(ours_p50, 2),
        "ours_p99_ms": round(ours_p99, 2),
        "ours_mean_ms": round(statistics.fmean(ours["latencies"]), 2),
        "stock_p50_ms": round(stock_p50, 2),
        "stock_p99_ms": round(percentile(stock["latencies"], 0.99), 2),
        "ratio_p50": round(ratio, 4),
        "ours_success_rate": ours["success_rate"],
        "ours_exact_rate": ours["exact_rate"],
        "stock_success_rate": stock["success_rate"],
        "stock_exact_rate": stock["exact_rate"],
        "ours_rpcs_per_lookup": round(ours["rpcs_per_lookup"], 1),
        "memory_per_node_bytes_ours": ours["memory_per_node_bytes"],
        "memory_per_node_bytes_stock": stock["memory_per_node_bytes"],
        "targets": {"ratio_p50_max": 0.5, "p99_ms_max": 1000},
        "pass": {"ratio_p50": ratio <= 0.5, "p99": ours_p99 < 1000},
        "python": platform.python_version(),
        "event_loop": "uvloop" if args.uvloop else "asyncio",
        "notes": "exact_rate: share of lookups returning exactly the true k closest live nodes",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--stock-lookups", type=int, default=0, help="default: --lookups")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true", help="run both meshes on uvloop")
    args = parser.parse_args()
    runner: Callable[[Awaitable[Any]], Any] = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    started = time.perf_counter()
    ours = runner(bench_ours(args))
    stock = runner(bench_stock(args))
    result = summary(args, ours, stock)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
