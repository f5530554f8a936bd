"""Lookup latency of our DHT against the stock `kademlia` package, 10% of nodes silently dead.

What it measures, in one process and one run:

1. Build a loopback mesh of our `DHTNode`s (127.0.0.1, port 0, k=20, alpha=3),
   each joining through the first node, then settle it: wait for the joins'
   background traffic, and let every node look up random ids (`--settle-rounds`)
   so the routing tables fill. Memory per node is the tracemalloc growth over
   build + settle divided by the node count (Python allocations only). One more
   untraced round follows: tracemalloc slows everything several times over,
   and our adaptive RPC deadline would otherwise start the timed lookups tuned
   to that slowness.
2. Silence 10% of the nodes: the node is stopped (ours `abort()`, stock
   `Server.stop()`), and a plain UDP socket that never reads is bound to its
   port at once. Datagrams to a dead node are then dropped with no ICMP
   "port unreachable", as when a host vanishes; a dead node sends nothing
   (no retransmissions, no refreshes).
3. Time `--lookups` lookups for random 160-bit targets from random live nodes
   (a seeded `random.Random`; the i-th lookup has the same source index and
   target in both meshes), at most `--concurrency` at a time.
   Ours: `DHTNode.find_node`. Stock: a `NodeSpiderCrawl` from the node's own
   closest contacts, as `Server.set_digest` does before it stores.
4. The same for a mesh of stock `kademlia.network.Server`s. Its RPC timeout is
   rpcudp's 5 s and a crawl round waits for all alpha answers, so a lookup
   that meets a dead node costs 5 s per such round: only `--stock-lookups`
   (default 200) are timed, at the same concurrency.

With concurrency, a latency includes queueing behind other lookups on the one
event loop that runs all 100 nodes; `--sequential` more lookups of ours, one
at a time, show the latency without that queueing.

It prints one JSON object on stdout (progress goes to stderr); `pass` holds the
verdicts against `targets`. Run from the repository root:

    .venv/bin/python benchmarks/dht_lookup.py [--nodes 100] [--lookups 1000]
        [--stock-lookups 200] [--concurrency 20] [--sequential 200] [--seed 1]

(`--uvloop` is offered only when uvloop is installed.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import logging
import platform
import random
import socket
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node

from dht.core import DHTConfig, LookupCompleted
from dht.identity import Identity
from dht.node import DHTNode

K, ALPHA = 20, 3
T = TypeVar("T")
HOST = "127.0.0.1"
TARGETS = {"ratio_p50_max": 0.5, "p99_ms_max": 1000}
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
# Our counters summed over live nodes during the timed lookups (the RPC cost of a lookup).
OUR_COUNTERS = (
    "rpc.out.FindNode",
    "rpc.out.Identify",
    "rpc.out.Ping",
    "rpc.retransmit",
    "lookup.abandoned",
    "rpc.timeout",
    "socket.error",
    "refresh",
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1])."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def true_closest(ids: Iterable[bytes], target: bytes) -> list[bytes]:
    num = int.from_bytes(target, "big")
    return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ num)[:K]


@dataclass(slots=True)
class Outcome:
    """One timed lookup."""

    ms: float
    found: int  # contacts returned
    exact: bool  # they are exactly the true k closest live nodes
    dead: int  # dead nodes among them
    queries: int  # find_node RPCs the lookup sent


@dataclass(slots=True)
class Plan:
    """The i-th lookup: which live node asks (an index), for which target."""

    source: int
    target: bytes


def plans(count: int, live: int, seed: int) -> list[Plan]:
    rng = random.Random(seed)
    return [Plan(rng.randrange(live), rng.randbytes(20)) for _ in range(count)]


async def timed_lookups(
    todo: list[Plan], concurrency: int, lookup: Callable[[Plan], Awaitable[Outcome]]
) -> list[Outcome]:
    """Run the plans, at most `concurrency` at once; outcomes in plan order."""
    done = 0

    async def one(plan: Plan) -> Outcome:
        nonlocal done
        outcome = await lookup(plan)
        done += 1
        if done % max(1, len(todo) // 5) == 0:
            log(f"  {done}/{len(todo)}")
        return outcome

    return await bounded((one(plan) for plan in todo), concurrency)


async def bounded(aws: Iterable[Awaitable[Any]], limit: int) -> list[Any]:
    """Await them all, at most `limit` at once."""
    gate = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[Any]) -> Any:
        async with gate:
            return await aw

    return list(await asyncio.gather(*(one(aw) for aw in aws)))


async def quiet(pending: Callable[[], int], patience: float) -> float:
    """Wait until no RPC is pending anywhere (at most `patience` s); returns the seconds waited."""
    start = time.perf_counter()
    # Polling: neither DHT signals "nothing pending".
    while pending() and time.perf_counter() - start < patience:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


# --- dead nodes -------------------------------------------------------------


async def bury(addrs: list[tuple[str, int]]) -> list[socket.socket]:
    """Bind a never-read UDP socket to each (just closed) address: a silent dead host."""
    await asyncio.sleep(0.05)  # asyncio closes a transport's socket on a later loop turn
    graves = []
    for addr in addrs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(addr)
        graves.append(sock)
    return graves


async def probe_closed_port() -> dict[str, Any]:
    """What a sender sees from a dead node whose port was simply closed (no grave socket).

    Sends one datagram from an unconnected asyncio UDP endpoint (as both DHTs use)
    to a closed loopback port, and reports whether any error came back.
    """
    loop = asyncio.get_running_loop()
    errors: list[str] = []

    class Sender(asyncio.DatagramProtocol):
        def error_received(self, exc: Exception) -> None:
            errors.append(type(exc).__name__)

    victim, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(HOST, 0))
    addr = victim.get_extra_info("sockname")
    victim.close()
    await asyncio.sleep(0.05)
    sender, _ = await loop.create_datagram_endpoint(Sender, local_addr=(HOST, 0))
    sender.sendto(b"\x00" * 32, addr)
    await asyncio.sleep(0.2)
    sender.sendto(b"\x00" * 32, addr)
    await asyncio.sleep(0.2)
    sender.close()
    return {"closed_port_error_seen": bool(errors), "errors": errors}


# --- our mesh ---------------------------------------------------------------


async def traced_per_node(
    build: Awaitable[list[T]], settle: Callable[[list[T]], Awaitable[Any]]
) -> tuple[list[T], float]:
    """Build and settle a mesh under tracemalloc; returns it and its growth per node."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    mesh = await build
    await settle(mesh)
    gc.collect()
    memory = (tracemalloc.get_traced_memory()[0] - before) / len(mesh)
    tracemalloc.stop()
    return mesh, memory


async def build_ours(args: argparse.Namespace, rng: random.Random) -> list[DHTNode]:
    config = DHTConfig(k=K, alpha=ALPHA)

    async def start(bootstrap: list[tuple[str, int]]) -> DHTNode:
        identity = Identity.from_seed(rng.randbytes(32))
        sub = random.Random(rng.getrandbits(64))
        return await DHTNode.start(
            HOST, 0, bootstrap=bootstrap, config=config, identity=identity, rng=sub
        )

    nodes = [await start([])]
    for _ in range(args.nodes - 1):
        nodes.append(await start([nodes[0].address]))
    return nodes


async def settle_ours(
    nodes: list[DHTNode], rounds: int, concurrency: int, rng: random.Random
) -> None:
    """Let the joins finish, then every node looks up `rounds` random ids."""
    waited = await quiet(lambda: sum(n.core.pending_rpcs for n in nodes), 10.0)
    for _ in range(rounds):
        await bounded((n.find_node(rng.randbytes(20)) for n in nodes), concurrency)
    waited += await quiet(lambda: sum(n.core.pending_rpcs for n in nodes), 10.0)
    sizes = [len(n.core.table) for n in nodes]
    slow = statistics.median(n.core._slow_after() for n in nodes) * 1000
    log(
        f"ours: settled, table sizes {min(sizes)}..{max(sizes)}, quiet after {waited:.1f}s, "
        f"median slow deadline {slow:.0f} ms"
    )


async def bench_ours(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    log(f"ours: building {args.nodes} nodes")
    nodes, memory = await traced_per_node(
        build_ours(args, rng),
        lambda built: settle_ours(built, args.settle_rounds, args.concurrency, rng),
    )
    # tracemalloc slows everything several times over, and our adaptive 'slow' deadline
    # remembers it (a quantile of recent round trips, which fade after 64 samples): one
    # untraced round brings it back to real speed.
    await settle_ours(nodes, 1, args.concurrency, rng)

    dead = rng.sample(nodes, round(args.nodes * args.dead_fraction))
    addrs = [n.address for n in dead]
    for node in dead:
        node.abort()
    graves = await bury(addrs)
    live = [n for n in nodes if n not in dead]
    live_ids = [n.node_id for n in live]
    dead_ids = {n.node_id for n in dead}
    counters_before = Counter({c: sum(n.core.counters[c] for n in live) for c in OUR_COUNTERS})

    async def lookup(plan: Plan) -> Outcome:
        source = live[plan.source]
        start = time.perf_counter()
        # DHTNode.find_node returns the contacts only; the event also says how many it asked.
        event = await source._run(source.core.find_node(plan.target, time.time()))
        ms = (time.perf_counter() - start) * 1000
        assert isinstance(event, LookupCompleted)
        ids = [c.node_id for c in event.contacts]
        truth = true_closest((i for i in live_ids if i != source.node_id), plan.target)
        return Outcome(ms, len(ids), ids == truth, len(dead_ids.intersection(ids)), event.queries)

    todo = plans(args.lookups, len(live), args.seed + 1)
    log(f"ours: {len(todo)} lookups from {len(live)} live of {len(nodes)} nodes")
    started = time.perf_counter()
    outcomes = await timed_lookups(todo, args.concurrency, lookup)
    elapsed = time.perf_counter() - started
    counters = Counter({c: sum(n.core.counters[c] for n in live) for c in OUR_COUNTERS})
    counters.subtract(counters_before)
    rtts = [q for n in live if (q := n.core.round_trips.quantile(0.5)) is not None]
    sequential: list[Outcome] = []
    if args.sequential:
        log(f"ours: {args.sequential} more lookups one at a time (no event-loop contention)")
        sequential = await timed_lookups(
            plans(args.sequential, len(live), args.seed + 2), 1, lookup
        )
    for node in live:
        node.abort()
    for grave in graves:
        grave.close()
    return {
        "outcomes": outcomes,
        "seconds": elapsed,
        "memory": memory,
        "counters": dict(counters),
        "rtt_ms": statistics.median(rtts) * 1000 if rtts else None,
        "sequential": sequential,
    }


# --- the stock mesh ---------------------------------------------------------


class CountingCrawl(NodeSpiderCrawl):
    """The stock node lookup, counting the find_node RPCs it sends and those that time out
    (each unanswered one holds its whole round for rpcudp's 5 s)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.queries = 0
        self.timeouts = 0

    async def find(self) -> list[Node]:
        return await self._find(self._call)

    async def _call(self, peer: Node, target: Node) -> tuple[bool, Any]:
        self.queries += 1
        result = await self.protocol.call_find_node(peer, target)
        self.timeouts += not result[0]
        return result


def crawl(server: Server, target: bytes) -> CountingCrawl:
    node = Node(target)
    nearest = server.protocol.router.find_neighbors(node, K)
    return CountingCrawl(server.protocol, node, nearest, K, ALPHA)


def stock_port(server: Server) -> int:
    return server.transport.get_extra_info("sockname")[1]


async def build_stock(args: argparse.Namespace, rng: random.Random) -> list[Server]:
    servers = []
    for _ in range(args.nodes):
        server = Server(ksize=K, alpha=ALPHA, node_id=rng.randbytes(20))
        await server.listen(0, interface=HOST)
        servers.append(server)
    first = (HOST, stock_port(servers[0]))
    for server in servers[1:]:
        await server.bootstrap([first])
    return servers


async def settle_stock(
    servers: list[Server], rounds: int, concurrency: int, rng: random.Random
) -> None:
    """As `settle_ours`: every server crawls `rounds` random ids."""

    def pending() -> int:
        return sum(len(s.protocol._outstanding) for s in servers)

    waited = await quiet(pending, 10.0)
    for _ in range(rounds):
        await bounded((crawl(s, rng.randbytes(20)).find() for s in servers), concurrency)
    waited += await quiet(pending, 10.0)
    sizes = [sum(len(b) for b in s.protocol.router.buckets) for s in servers]
    log(f"stock: settled, table sizes {min(sizes)}..{max(sizes)} (quiet after {waited:.1f}s)")


async def bench_stock(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    rng = random.Random(args.seed)
    log(f"stock: building {args.nodes} nodes")
    servers, memory = await traced_per_node(
        build_stock(args, rng),
        lambda built: settle_stock(built, args.settle_rounds, args.concurrency, rng),
    )
    await settle_stock(servers, 1, args.concurrency, rng)  # untraced, as ours

    dead = rng.sample(servers, round(args.nodes * args.dead_fraction))
    addrs = [(HOST, stock_port(s)) for s in dead]
    for server in dead:
        server.stop()
    graves = await bury(addrs)
    live = [s for s in servers if s not in dead]
    live_ids = [s.node.id for s in live]
    dead_ids = {s.node.id for s in dead}
    timeouts = 0

    async def lookup(plan: Plan) -> Outcome:
        nonlocal timeouts
        source = live[plan.source]
        spider = crawl(source, plan.target)
        start = time.perf_counter()
        found = await spider.find()
        ms = (time.perf_counter() - start) * 1000
        timeouts += spider.timeouts
        ids = [n.id for n in found]
        truth = true_closest((i for i in live_ids if i != source.node.id), plan.target)
        return Outcome(ms, len(ids), ids == truth, len(dead_ids.intersection(ids)), spider.queries)

    todo = plans(args.lookups, len(live), args.seed + 1)[: args.stock_lookups]
    log(f"stock: {len(todo)} lookups from {len(live)} live of {len(servers)} nodes")
    started = time.perf_counter()
    outcomes = await timed_lookups(todo, args.concurrency, lookup)
    elapsed = time.perf_counter() - started
    for server in live:
        server.stop()
    for grave in graves:
        grave.close()
    return {
        "outcomes": outcomes,
        "seconds": elapsed,
        "memory": memory,
        "timeouts_per_lookup": timeouts / len(outcomes),
    }


# --- the report -------------------------------------------------------------


def describe(outcomes: list[Outcome]) -> dict[str, float]:
    ms = [o.ms for o in outcomes]
    return {
        "p50_ms": round(percentile(ms, 0.5), 2),
        "p90_ms": round(percentile(ms, 0.9), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "success_rate": sum(o.found == K for o in outcomes) / len(outcomes),
        "exact_rate": sum(o.exact for o in outcomes) / len(outcomes),
        "dead_returned_per_lookup": round(statistics.fmean(o.dead for o in outcomes), 3),
        "queries_per_lookup": round(statistics.fmean(o.queries for o in outcomes), 2),
    }


def summary(
    args: argparse.Namespace, probe: dict[str, Any], ours: dict[str, Any], stock: dict[str, Any]
) -> dict[str, Any]:
    mine, theirs = describe(ours["outcomes"]), describe(stock["outcomes"])
    # The same first lookups (same sources, same targets) on both sides.
    mine_same = describe(ours["outcomes"][: len(stock["outcomes"])])
    ratio = mine["p50_ms"] / theirs["p50_ms"]
    lookups = len(ours["outcomes"])
    per_lookup = {name: round(v / lookups, 3) for name, v in ours["counters"].items()}
    return {
        "benchmark": "dht_lookup",
        "nodes": args.nodes,
        "dead_fraction": round(args.nodes * args.dead_fraction) / args.nodes,
        "k": K,
        "alpha": ALPHA,
        "lookups": lookups,
        "stock_lookups": len(stock["outcomes"]),
        "concurrency": args.concurrency,
        "settle_rounds": args.settle_rounds,
        "ours_p50_ms": mine["p50_ms"],
        "ours_p99_ms": mine["p99_ms"],
        "stock_p50_ms": theirs["p50_ms"],
        "stock_p99_ms": theirs["p99_ms"],
        "ratio_p50": round(ratio, 4),
        "ours_success_rate": mine["success_rate"],
        "stock_success_rate": theirs["success_rate"],
        "ours": mine,
        "ours_first_stock_lookups": mine_same,
        "ours_sequential": describe(ours["sequential"]) if ours["sequential"] else None,
        "stock": theirs,
        "ours_counters_per_lookup": per_lookup,
        "stock_timeouts_per_lookup": round(stock["timeouts_per_lookup"], 3),
        "ours_median_rtt_ms": ours["rtt_ms"] and round(ours["rtt_ms"], 3),
        "ours_lookups_seconds": round(ours["seconds"], 1),
        "stock_lookups_seconds": round(stock["seconds"], 1),
        "memory_per_node_bytes_ours": round(ours["memory"]),
        "memory_per_node_bytes_stock": round(stock["memory"]),
        "dead_nodes": {
            "mode": "silent: stopped (ours abort(), stock Server.stop()), port then held by a "
            "never-read socket, so datagrams to it are dropped",
            "closed_port_note": "closed_port_error_seen says whether a port merely closed "
            "would have answered with ICMP port unreachable that asyncio reports",
            **probe,
        },
        "targets": TARGETS,
        "pass": {
            "ratio_p50": ratio <= TARGETS["ratio_p50_max"],
            "p99_ms": mine["p99_ms"] <= TARGETS["p99_ms_max"],
        },
        "python": platform.python_version(),
        "uvloop": bool(getattr(args, "uvloop", False)),
        "notes": (
            "success_rate: share of lookups returning k contacts; exact_rate: share returning "
            "exactly the true k closest live nodes (source excluded); dead_returned_per_lookup: "
            "dead nodes among the contacts returned; queries_per_lookup: "
            "find_node RPCs sent by one lookup (ours: LookupCompleted.queries, retransmissions "
            "not counted; stock: calls made by the crawl). ours_counters_per_lookup: our "
            "counters summed over live nodes during the timed lookups, per lookup (includes "
            "identify/ping traffic the lookups triggered). Memory: tracemalloc growth over "
            "build + settle / nodes, Python allocations only (C-level key objects excluded), "
            "same method for both. Stock lookups are fewer because each dead contact met "
            "costs a 5 s rpcudp timeout; ours_first_stock_lookups compares the same plans. "
            "ours_sequential: further lookups of ours after the timed ones, one at a time, "
            "so without queueing behind other lookups on the shared event loop."
        ),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    probe = await probe_closed_port()
    log(f"closed port probe: {probe}")
    ours = await bench_ours(args)
    stock = await bench_stock(args)
    return summary(args, probe, ours, stock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--stock-lookups", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--dead-fraction", type=float, default=0.1)
    parser.add_argument("--settle-rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sequential", type=int, default=200, help="extra lookups of ours, one at a time"
    )
    if HAVE_UVLOOP:
        parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    started = time.perf_counter()
    if getattr(args, "uvloop", False):
        import uvloop

        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
