"""Signaling load: memory per idle client, join latency, cross-node signal forwarding,
what presence renewal costs a node per client, and join latency by room size.

Prints one JSON object. Nodes run as separate `pagemesh node` processes on
loopback; this process is the load. Baselines, measured the same way in the
same run: a bare aiohttp WebSocket server that only holds connections (the
floor our protocol state sits on); the node's CPU with the same clients
connected but in no room (what renewal adds to); a room of 10 people (what
joins into rooms of 1,000 and 10,000 are compared with).

    python benchmarks/signaling_load.py [--clients 10000] [--signals 8000]
        [--renewal-clients 1000] [--spread-clients 1000] [--refresh 2] [--rounds 4]
        [--sizes 10 1000 10000] [--size-joins 150]

Renewal: one node (of three) carries `--renewal-clients` clients with
`presence_ttl` 60 s but a refresh every `--refresh` seconds, so that several
renewal rounds fall in the run; its CPU per round (from /proc, minus the idle
baseline; rounds counted from the presence signatures the clients are asked
for) gives the CPU per client per round and the clients one core renews at
the default refresh (20 s). Two layouts bracket a real node: "packed" (all
its clients fill whole layers of 24: one seat list renews 24 people) and
"spread" (`--spread-clients` of them, each alone in a room of its own: a seat
list, a store and a few reads per client and round, as when a client's
layer-mates all have other homes).

Room sizes: 10, 1,000 and 10,000 people are seated by four helper nodes (real
nodes in this process, whose DHT answers the identify that makes their seat
lists count) that store seat lists of members who are not connected: each
layer of 24 as four lists of six, stored once with a 15-minute lifetime. Fresh
clients then join through the three nodes, one at a time, and leave again
(the room keeps its size); each node first makes one untimed join per room,
so the samples are of nodes that already know the room (a cold node reads
layer 0 once more).

Targets (issue M2): <= 20 KiB per idle client, join p99 < 100 ms on loopback,
>= 5,000 cross-node signals/s per node process; join p99 into 10,000 people
at most 1.5 times that into 10.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dht.core import DHTConfig
from dht.records import Record
from peer.signaling import SignalFrom, SignalingClient
from signaling.config import NodeConfig
from signaling.node import SignalingNode
from signaling.protocol import HomeNode, SignRequest, hello_message
from signaling.rooms import layer_key, room_key, seat_list_value

STARTED = re.compile(r"at (ws://\S+) dht (\S+)")
RAISE_FDS = (
    "import resource; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)); "
)
NODE = RAISE_FDS + "import sys; from pagemesh.cli import main; sys.exit(main(sys.argv[1:]))"
BARE = (
    RAISE_FDS
    + """
from aiohttp import web
held = []
async def ws(request):
    sock = web.WebSocketResponse(compress=False)
    await sock.prepare(request)
    held.append(sock)
    async for _ in sock:
        pass
    return sock
app = web.Application()
app.add_routes([web.get('/v1/ws', ws)])
print('at ws://127.0.0.1:%d dht -' % PORT, flush=True)
web.run_app(app, host='127.0.0.1', port=PORT, print=None)
"""
)
NODE_TOML = """
[node]
host = "127.0.0.1"
port = 0
dht_port = 0
max_clients = 50000
joins_per_minute = 1000000.0
seats_per_source = 1000000
{extra}
[node.limits]
idle_timeout = 600.0
frames_per_second = 1000.0
frame_burst = 2000.0

# Every client and node of the benchmark is on 127.0.0.1: the limits per source
# address (client admission, joins and seats per room, DHT requests) are opened wide.
[node.admission]
unauthenticated = 100000
connections = 100000
per_second = 100000.0
burst = 100000.0

[dht]
request_rate = 1000000.0
request_burst = 1000000.0
"""
CONFIG = NODE_TOML.format(extra="")
RENEWAL = """layer_size = 24
presence_ttl = 60.0
refresh_interval = {refresh}
"""
DEFAULT_REFRESH = NodeConfig().refresh
"""The renewal period of a node left at its defaults (presence_ttl / 3)."""
LAYER = NodeConfig().layer_size
HELPERS = 4


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, dht: str) -> None:
        self.proc, self.url, self.dht = proc, url, dht


async def start(code: str, *args: str) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    match = STARTED.search(line)
    if not match:
        raise RuntimeError(f"node did not start: {line!r}")
    return Proc(proc, match.group(1), match.group(2))


async def start_node(
    workdir: Path, name: str, seed: Proc | None = None, config: str = CONFIG
) -> Proc:
    path = workdir / f"{name}.toml"
    path.write_text(config)
    args = ["node", "--config", str(path), "--data-dir", str(workdir / name)]
    if seed is not None:
        args += ["--bootstrap", seed.dht]
    return await start(NODE, *args)


async def stop(proc: Proc) -> None:
    proc.proc.terminate()
    try:
        await asyncio.wait_for(proc.proc.wait(), 20)
    except TimeoutError:
        proc.proc.kill()
        await proc.proc.wait()


async def hold_clients(url: str, count: int, authenticate: bool) -> tuple[list[Any], float]:
    """Open `count` WebSockets (with hello when `authenticate`), 200 at a time."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets: list[Any] = []

    async def one() -> None:
        ws = await http.ws_connect(url + "/v1/ws", compress=0)
        if authenticate:  # each client its own key: a second hello with a key replaces the first
            key = SigningKey.generate()
            challenge = json.loads((await ws.receive()).data)
            nonce, node = bytes.fromhex(challenge["nonce"]), bytes.fromhex(challenge["node"])
            sig = key.sign(hello_message(nonce, node)).signature
            hello = {
                "type": "hello",
                "key": bytes(key.verify_key).hex(),
                "sig": base64.b64encode(sig).decode(),
            }
            await ws.send_str(json.dumps(hello))
            welcome = json.loads((await ws.receive()).data)
            assert welcome["type"] == "welcome", welcome
        sockets.append(ws)

    started = time.perf_counter()
    for offset in range(0, count, 200):
        await asyncio.gather(*(one() for _ in range(min(200, count - offset))))
    return [http, sockets], time.perf_counter() - started


async def release(held: list[Any]) -> None:
    http, sockets = held
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await http.close()


async def memory_per_client(workdir: Path, count: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label in ("pagemesh", "bare_aiohttp"):
        if label == "pagemesh":
            proc = await start_node(workdir, "mem")
        else:
            proc = await start(BARE.replace("PORT", "18765"))
        await asyncio.sleep(1.0)
        before = rss_kib(proc.proc.pid)
        held, seconds = await hold_clients(proc.url, count, authenticate=label == "pagemesh")
        await asyncio.sleep(1.0)
        after = rss_kib(proc.proc.pid)
        results[label] = {
            "clients": count,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_client": round((after - before) / count, 2),
            "connect_seconds": round(seconds, 2),
        }
        await release(held)
        await stop(proc)
    return results


async def join_latency(mesh: list[Proc], joins: int) -> dict[str, Any]:
    clients = [
        await SignalingClient.connect(mesh[i % 3].url, SigningKey.generate()) for i in range(60)
    ]
    samples = []
    try:
        for i in range(joins):
            # Every sample is a whole join: layer scan, presence signature, store.
            client = clients[i % len(clients)]
            room = room_key(f"https://example.org/bench/{i % 40}")
            started = time.perf_counter()
            await client.join(room)
            samples.append(time.perf_counter() - started)
            await client.leave(room)
    finally:
        for client in clients:
            await client.close()
    samples.sort()
    return {
        "joins": len(samples),
        "p50_ms": round(statistics.median(samples) * 1000, 2),
        "p99_ms": round(samples[int(0.99 * (len(samples) - 1))] * 1000, 2),
        "max_ms": round(samples[-1] * 1000, 2),
    }


async def cross_node_signals(mesh: list[Proc], pairs: int, total: int) -> dict[str, Any]:
    """Senders on node A signal receivers on node B; A forwards every signal over its link."""
    a, b = mesh[0], mesh[1]
    room = room_key("https://example.org/bench-signals")
    senders = [await SignalingClient.connect(a.url, SigningKey.generate()) for _ in range(pairs)]
    receivers = [await SignalingClient.connect(b.url, SigningKey.generate()) for _ in range(pairs)]
    try:
        for i, (sender, receiver) in enumerate(zip(senders, receivers, strict=True)):
            # Signals stay within a layer: each pair shares one, twelve pairs to a layer.
            await receiver.join(room, layer=i // (LAYER // 2))
            await sender.join(room, layer=i // (LAYER // 2))
        per_sender = total // pairs
        latencies: list[float] = []
        done = asyncio.Event()
        expected = per_sender * pairs

        async def receive(client: SignalingClient) -> None:
            async for event in client.events():
                if isinstance(event, SignalFrom) and isinstance(event.payload, dict):
                    sent = event.payload.get("t")
                    if isinstance(sent, float):
                        latencies.append(time.perf_counter() - sent)
                        if len(latencies) >= expected:
                            done.set()

        readers = [asyncio.create_task(receive(c)) for c in receivers]
        cpu_before = cpu_seconds(a.proc.pid)
        started = time.perf_counter()

        async def send(sender: SignalingClient, target: bytes) -> None:
            for seq in range(per_sender):
                await sender.signal(target, {"t": time.perf_counter(), "seq": seq}, room)
                if seq % 50 == 49:
                    await asyncio.sleep(0)

        await asyncio.gather(*(send(s, r.key) for s, r in zip(senders, receivers, strict=True)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 60)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(a.proc.pid) - cpu_before
        for task in readers:
            task.cancel()
    finally:
        for client in senders + receivers:
            await client.close()
    latencies.sort()
    return {
        "signals_sent": expected,
        "signals_received": len(latencies),
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2)
        if latencies
        else None,
        "forwarding_node_cpu_us_per_signal": round(cpu / max(1, len(latencies)) * 1e6, 1),
    }


# --- what renewal costs a node, per client ------------------------------------------------


async def start_mesh(workdir: Path, prefix: str, config: str = CONFIG) -> list[Proc]:
    seed = await start_node(workdir, f"{prefix}0", config=config)
    rest = [await start_node(workdir, f"{prefix}{i}", seed, config) for i in (1, 2)]
    return [seed, *rest]


class CountingClient(SignalingClient):
    """A client that counts the presence signatures its node asks for: one per round
    while it is seated, so the signatures counted over a window are the rounds in it."""

    signs = 0

    async def _sign(self, frame: SignRequest) -> None:
        self.signs += 1
        await super()._sign(frame)


async def connect_clients(url: str, count: int, at_once: int = 100) -> list[SignalingClient]:
    gate = asyncio.Semaphore(at_once)

    async def one() -> SignalingClient:
        async with gate:
            return await CountingClient.connect(url, SigningKey.generate())

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_clients(clients: list[SignalingClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def cpu_over(procs: list[Proc], seconds: float) -> list[float]:
    """CPU seconds each process used over the next `seconds`."""
    before = [cpu_seconds(p.proc.pid) for p in procs]
    await asyncio.sleep(seconds)
    return [cpu_seconds(p.proc.pid) - b for p, b in zip(procs, before, strict=True)]


async def room_events(proc: Proc) -> dict[str, float]:
    """The node's room core counters, from /metrics."""
    url = proc.url.replace("ws://", "http://", 1) + "/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as reply:
        text = await reply.text()
    events = {}
    for match in re.finditer(r'^pagemesh_room_events_total\{event="([^"]+)"\} (\S+)$', text, re.M):
        events[match.group(1)] = float(match.group(2))
    return events


async def seat(
    clients: list[SignalingClient], rooms: list[bytes], at_once: int
) -> Counter[tuple[bytes, int]]:
    """Client i joins rooms[i]; returns how many of them sit in each (room, layer)."""
    gate = asyncio.Semaphore(at_once)

    async def one(client: SignalingClient, room: bytes) -> tuple[bytes, int]:
        async with gate:
            return room, (await client.join(room)).layer

    return Counter(await asyncio.gather(*(one(c, r) for c, r in zip(clients, rooms, strict=True))))


def layout_rooms(layout: str, count: int) -> list[bytes]:
    if layout == "packed":  # rooms of 240: ten layers of 24, every seat this node's
        return [room_key(f"https://example.org/packed/{i // 240}") for i in range(count)]
    # each client the only one of this node in its layer (a room of its own)
    return [room_key(f"https://example.org/spread/{i}") for i in range(count)]


async def renewal_round(
    mesh: list[Proc],
    clients: list[SignalingClient],
    rooms: list[bytes],
    refresh: float,
    rounds: int,
) -> dict[str, Any]:
    """Seat `clients` in `rooms`, let the joins settle, then measure `rounds` refreshes."""
    home = mesh[0]
    cpu_before = cpu_seconds(home.proc.pid)
    started = time.perf_counter()
    places = await seat(clients, rooms, at_once=10)
    join_seconds = time.perf_counter() - started
    join_cpu = cpu_seconds(home.proc.pid) - cpu_before
    await asyncio.sleep(refresh)  # the joins' own stores and reads are over
    events = await room_events(home)
    signs = sum(c.signs for c in clients if isinstance(c, CountingClient))
    cpu = await cpu_over(mesh, rounds * refresh)
    signed = sum(c.signs for c in clients if isinstance(c, CountingClient)) - signs
    after = await room_events(home)
    counted = {k: v - events.get(k, 0) for k, v in after.items() if v > events.get(k, 0)}
    return {
        "clients": len(clients),
        "layers": len(places),
        "most_in_a_layer": max(places.values()),
        "join_seconds": round(join_seconds, 2),
        "node_cpu_ms_per_join": round(join_cpu / len(clients) * 1000, 3),
        "rounds": round(signed / len(clients), 2),
        "node_cpu_s": cpu[0],
        "dht_peers_cpu_s": sum(cpu[1:]),
        "room_events_in_window": counted,
    }


async def renewal_cost(
    workdir: Path, count: int, refresh: float, rounds: int, spread: int
) -> dict[str, Any]:
    """A node's CPU per renewal round: `count` clients connected; all of them seated in
    layers of 24 ("packed"), then `spread` of them each alone in its layer."""
    config = NODE_TOML.format(extra=RENEWAL.format(refresh=refresh))
    mesh = await start_mesh(workdir, "r", config)
    clients: list[SignalingClient] = []
    window = rounds * refresh
    try:
        clients = await connect_clients(mesh[0].url, count)
        await asyncio.sleep(1.0)
        idle = (await cpu_over(mesh[:1], window / 2))[0] / (window / 2)
        layouts: dict[str, Any] = {}
        for layout, seated in (("packed", clients), ("spread", clients[:spread])):
            rooms = layout_rooms(layout, len(seated))
            measured = await renewal_round(mesh, seated, rooms, refresh, rounds)
            per_round = max(0.0, measured.pop("node_cpu_s") - idle * window) / measured["rounds"]
            peers = measured.pop("dht_peers_cpu_s") / measured["rounds"]
            layouts[layout] = measured | {
                "node_cpu_ms_per_round": round(per_round * 1000, 1),
                "cpu_ms_per_client_per_round": round(per_round / len(seated) * 1000, 4),
                "clients_per_core": round(len(seated) * DEFAULT_REFRESH / per_round)
                if per_round
                else None,
                "dht_peers_cpu_ms_per_round": round(peers * 1000, 1),
            }
            await asyncio.gather(*(c.leave(r) for c, r in zip(seated, rooms, strict=True)))
            await asyncio.sleep(refresh)  # the empty seat lists are stored
    finally:
        await close_clients(clients)
        for proc in mesh:
            await stop(proc)
    return {
        "presence_ttl_s": 60.0,
        "refresh_s": refresh,
        "clients_connected": count,
        "idle_node_cpu_ms_per_s": round(idle * 1000, 2),
        "clients_per_core_at_refresh_s": DEFAULT_REFRESH,
        "how": "the node's CPU (/proc) over the window, minus its CPU with the same clients "
        "connected in no room, divided by the rounds in the window (presence signatures "
        "the clients were asked for, per seated client); clients_per_core = seated clients "
        "x 20 s / CPU per round. Outside the window: keepalive pings (one frame per client "
        "per 20 s) and seat-of records (one store per client per 300 s)",
        **layouts,
    }


# --- join latency by room size -----------------------------------------------------------------


async def start_helpers(workdir: Path, seed: Proc, count: int) -> list[SignalingNode]:
    """Nodes in this process whose keys publish the pre-seated members' seat lists."""
    dht = DHTConfig(request_rate=1e6, request_burst=1e6)
    helpers = []
    for i in range(count):
        config = NodeConfig(
            port=0, dht_port=0, data_dir=str(workdir / f"helper{i}"), bootstrap=(seed.dht,)
        )
        helpers.append(await SignalingNode.start(config, dht))
    return helpers


async def preseat(helpers: list[SignalingNode], room: bytes, people: int) -> tuple[int, int]:
    """Seat `people` members who are not connected in `room`, layer by layer (each layer
    of 24 as one seat list of six from each of the four helpers); returns the layers and
    the seat lists stored."""
    layers = math.ceil(people / LAYER)
    now = time.time()
    since = int(now * 1000) - 3_600_000
    records = []
    for layer in range(layers):
        members = [os.urandom(32) for _ in range(min(LAYER, people - layer * LAYER))]
        for h, helper in enumerate(helpers):
            seats = [(m, since + i) for i, m in enumerate(members) if i % len(helpers) == h]
            if not seats:
                continue
            home = HomeNode(helper.node_id, helper.url)
            value = seat_list_value(
                room, layer, home, helper.dht.address[:2], seats, layers, people
            )
            record = Record.create(
                helper.identity, layer_key(room, layer), value, int(now * 1000), int(now + 900)
            )
            records.append((helper, record))
    gate = asyncio.Semaphore(64)

    async def store(helper: SignalingNode, record: Record) -> int:
        async with gate:
            return await helper.dht.publish(record)

    stored = await asyncio.gather(*(store(h, r) for h, r in records))
    if min(stored) == 0:
        raise RuntimeError("a seat list was stored nowhere")
    return layers, len(records)


async def join_latency_by_size(
    helpers: list[SignalingNode], mesh: list[Proc], sizes: list[int], joins: int
) -> dict[str, Any]:
    """Fresh clients join rooms of each size in turn (so a slower moment of the machine
    falls on every size alike), one at a time, and leave again."""
    rooms = {people: room_key(f"https://example.org/bench-size/{people}") for people in sizes}
    results: dict[int, dict[str, Any]] = {}
    for people, room in rooms.items():
        started = time.perf_counter()
        layers, lists = await preseat(helpers, room, people)
        results[people] = {
            "people": people,
            "layers": layers,
            "seat_lists": lists,
            "preseat_seconds": round(time.perf_counter() - started, 2),
        }
        for proc in mesh:  # each node learns the room once (a cold join reads layer 0 first)
            async with await SignalingClient.connect(proc.url, SigningKey.generate()) as client:
                await client.join(room)
                await client.leave(room)
    samples: dict[int, list[float]] = {people: [] for people in sizes}
    totals: dict[int, list[int]] = {people: [] for people in sizes}
    for i in range(joins):
        for people, room in rooms.items():
            url = mesh[i % len(mesh)].url
            async with await SignalingClient.connect(url, SigningKey.generate()) as client:
                started = time.perf_counter()
                joined = await client.join(room)
                samples[people].append(time.perf_counter() - started)
                totals[people].append(joined.total)
                await client.leave(room)
    for people, taken in samples.items():
        taken.sort()
        results[people] |= {
            "joins": len(taken),
            "p50_ms": round(statistics.median(taken) * 1000, 2),
            "p99_ms": round(taken[int(0.99 * (len(taken) - 1))] * 1000, 2),
            "max_ms": round(taken[-1] * 1000, 2),
            "median_joined_total": statistics.median(totals[people]),
        }
    small, large = results[min(sizes)], results[max(sizes)]
    return {
        "how": "members pre-seated by four helper nodes' seat lists (not connected); fresh "
        "clients join through three nodes one at a time, a room of each size in turn, "
        "then leave",
        **{str(people): result for people, result in results.items()},
        "p50_ratio_largest_smallest": round(large["p50_ms"] / small["p50_ms"], 2),
        "p99_ratio_largest_smallest": round(large["p99_ms"] / small["p99_ms"], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--joins", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--signals", type=int, default=8_000)
    parser.add_argument("--renewal-clients", type=int, default=1_000)
    parser.add_argument("--refresh", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--spread-clients", type=int, default=1_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1_000, 10_000])
    parser.add_argument("--size-joins", type=int, default=150)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        memory = await memory_per_client(workdir, args.clients)
        mesh = await start_mesh(workdir, "n")
        helpers: list[SignalingNode] = []
        try:
            joins = await join_latency(mesh, args.joins)
            signals = await cross_node_signals(mesh, args.pairs, args.signals)
            helpers = await start_helpers(workdir, mesh[0], HELPERS)
            by_size = await join_latency_by_size(helpers, mesh, args.sizes, args.size_joins)
        finally:
            for proc in mesh:
                await stop(proc)
            # After the nodes: a helper's stop waits for the links they opened to it.
            await asyncio.gather(*(helper.stop(moving=False) for helper in helpers))
        renewal = await renewal_cost(
            workdir, args.renewal_clients, args.refresh, args.rounds, args.spread_clients
        )
    ours, bare = memory["pagemesh"], memory["bare_aiohttp"]
    ratio = by_size["p99_ratio_largest_smallest"]
    print(
        json.dumps(
            {
                "benchmark": "signaling_load",
                "idle_client_memory": memory,
                "kib_per_idle_client": ours["kib_per_client"],
                "kib_per_idle_client_over_bare_aiohttp": round(
                    ours["kib_per_client"] - bare["kib_per_client"], 2
                ),
                "join_latency_3_nodes": joins,
                "cross_node_signals": signals,
                "renewal": renewal,
                "clients_per_core": {
                    layout: renewal[layout]["clients_per_core"] for layout in ("packed", "spread")
                },
                "join_latency_by_room_size": by_size,
                "targets": {
                    "kib_per_idle_client_max": 20,
                    "join_p99_ms_max": 100,
                    "cross_node_signals_per_second_min": 5000,
                    "join_p99_ratio_largest_smallest_room_max": 1.5,
                },
                "meets_targets": ours["kib_per_client"] <= 20
                and joins["p99_ms"] < 100
                and signals["per_second"] >= 5000
                and ratio <= 1.5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
