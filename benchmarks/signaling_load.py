"""Signaling load: memory per idle client, join latency, cross-node signal forwarding.

Prints one JSON object. Nodes run as separate `pagemesh node` processes on
loopback; this process is the load. The baseline, measured the same way in
the same run, is a bare aiohttp WebSocket server that only holds
connections: the floor our protocol state sits on.

    python benchmarks/signaling_load.py [--clients 10000] [--signals 8000]

Targets (issue M2): <= 20 KiB per idle client, join p99 < 100 ms on loopback,
>= 5,000 cross-node signals/s per node process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peer.signaling import SignalFrom, SignalingClient
from signaling.protocol import hello_message
from signaling.rooms import room_key

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
CONFIG = """
[node]
host = "127.0.0.1"
port = 0
dht_port = 0
max_clients = 50000

[node.limits]
idle_timeout = 600.0
frames_per_second = 1000.0
frame_burst = 2000.0

[node.admission]            # every client of the benchmark comes from 127.0.0.1
unauthenticated = 100000
connections = 100000
per_second = 100000.0
burst = 100000.0
"""


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


async def start_node(workdir: Path, name: str, seed: Proc | None = None) -> Proc:
    config = workdir / "node.toml"
    config.write_text(CONFIG)
    args = ["node", "--config", str(config), "--data-dir", str(workdir / name)]
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
        for client in receivers + senders:
            await client.join(room, layer=len(client.rooms))  # one big layer is fine here
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--joins", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--signals", type=int, default=8_000)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        memory = await memory_per_client(workdir, args.clients)
        seed = await start_node(workdir, "n0")
        mesh = [seed, await start_node(workdir, "n1", seed), await start_node(workdir, "n2", seed)]
        try:
            joins = await join_latency(mesh, args.joins)
            signals = await cross_node_signals(mesh, args.pairs, args.signals)
        finally:
            for proc in mesh:
                await stop(proc)
    ours, bare = memory["pagemesh"], memory["bare_aiohttp"]
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
                "targets": {
                    "kib_per_idle_client_max": 20,
                    "join_p99_ms_max": 100,
                    "cross_node_signals_per_second_min": 5000,
                },
                "meets_targets": ours["kib_per_client"] <= 20
                and joins["p99_ms"] < 100
                and signals["per_second"] >= 5000,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
