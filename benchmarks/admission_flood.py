"""A flood of connections from one address, against a node with and without admission.

Prints one JSON object. An outside probe opened 2,853 connections in 15 s from
one IP and pushed a node's CPU to 97 % and its /healthz to 76 ms median. Here
a `pagemesh node` process runs with its default per-address limits
(`[node.admission]`), and, as the baseline in the same run, with the limits
opened wide (what a node did before them). For each, an honest client in a
process of its own pings every 50 ms, while this process floods from
127.0.0.1 with `--concurrency` connectors for `--seconds`: each opens a
WebSocket and holds it without a hello, as the probe did. All three share
the machine's cores, as they would a small VPS.

    python benchmarks/admission_flood.py [--seconds 15] [--concurrency 64]

Targets, against the baseline: the honest client's ping p99 under the flood
at most a fifth of the baseline's, the node's memory growth at most a
fiftieth, and the node's CPU per flood connection at most a third.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from signaling_load import NODE, Proc, cpu_seconds, rss_kib, start, stop

ROOT = str(Path(__file__).resolve().parent.parent)
CONFIGS = {
    "admission": "",  # the defaults
    "open": """
[node.admission]
unauthenticated = 1000000
connections = 1000000
per_second = 1000000.0
burst = 1000000.0
""",
}
PINGER = """
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[3])
from nacl.signing import SigningKey
from peer.signaling import SignalingClient
async def main(url, flooded):
    client = await SignalingClient.connect(url, SigningKey.generate())
    print("ready", flush=True)
    phases = []
    for seconds in (2.0, flooded):
        sys.stdin.readline()
        samples, until = [], time.monotonic() + seconds
        while time.monotonic() < until:
            samples.append(await client.ping())
            await asyncio.sleep(0.05)
        phases.append(samples)
    print(json.dumps(phases), flush=True)
    await client.close()
asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
    }


async def honest_pinger(url: str, seconds: float) -> asyncio.subprocess.Process:
    """An honest client in its own process, so the flood's event loop does not time it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PINGER,
        url,
        str(seconds),
        ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    return proc


async def next_phase(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()


async def flood(url: str, seconds: float, concurrency: int) -> dict[str, int]:
    counts = {"attempts": 0, "upgraded": 0, "refused_429": 0, "failed": 0}
    held: list[Any] = []
    until = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def connector() -> None:
            while time.monotonic() < until:
                counts["attempts"] += 1
                try:
                    ws = await http.ws_connect(url + "/v1/ws", timeout=aiohttp.ClientWSTimeout(5))
                except aiohttp.WSServerHandshakeError as exc:
                    counts["refused_429" if exc.status == 429 else "failed"] += 1
                    continue
                except (aiohttp.ClientError, OSError, TimeoutError):
                    counts["failed"] += 1
                    continue
                counts["upgraded"] += 1
                held.append(ws)

        await asyncio.gather(*(connector() for _ in range(concurrency)))
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    return counts


async def run(workdir: Path, label: str, seconds: float, concurrency: int) -> dict[str, Any]:
    config = workdir / f"{label}.toml"
    config.write_text('[node]\nhost = "127.0.0.1"\nport = 0\ndht_port = 0\n' + CONFIGS[label])
    proc: Proc = await start(NODE, "node", "--config", str(config), "--data-dir", str(workdir))
    try:
        honest = await honest_pinger(proc.url, seconds)
        await next_phase(honest)  # quiet: 2 s of pings
        await asyncio.sleep(2.2)
        cpu_before, rss_before = cpu_seconds(proc.proc.pid), rss_kib(proc.proc.pid)
        started = time.monotonic()
        await next_phase(honest)  # flooded
        counts = await flood(proc.url, seconds, concurrency)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(proc.proc.pid) - cpu_before
        rss_growth = rss_kib(proc.proc.pid) - rss_before
        assert honest.stdout is not None
        quiet, loaded = json.loads(await asyncio.wait_for(honest.stdout.readline(), 30))
        await honest.wait()
        return {
            "flood": counts,
            "connections_per_second": round(counts["attempts"] / elapsed, 1),
            "node_cpu_share": round(cpu / elapsed, 3),
            "node_cpu_us_per_connection": round(cpu / max(counts["attempts"], 1) * 1e6, 1),
            "node_rss_growth_kib": rss_growth,
            "honest_ping_quiet": quantiles(quiet),
            "honest_ping_flooded": quantiles(loaded),
        }
    finally:
        await stop(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in CONFIGS:
            workdir = Path(tempfile.mkdtemp(dir=tmp))
            results[label] = await run(workdir, label, args.seconds, args.concurrency)
    ours, baseline = results["admission"], results["open"]
    p99 = ours["honest_ping_flooded"]["p99_ms"] / baseline["honest_ping_flooded"]["p99_ms"]
    rss = max(ours["node_rss_growth_kib"], 1) / max(baseline["node_rss_growth_kib"], 1)
    cpu = ours["node_cpu_us_per_connection"] / baseline["node_cpu_us_per_connection"]
    print(
        json.dumps(
            {
                "benchmark": "admission_flood",
                "seconds": args.seconds,
                "concurrency": args.concurrency,
                "with_admission": ours,
                "baseline_without": baseline,
                "honest_p99_flooded_over_baseline": round(p99, 3),
                "node_rss_growth_over_baseline": round(rss, 4),
                "node_cpu_per_connection_over_baseline": round(cpu, 3),
                "targets": {"p99_ratio_max": 0.2, "rss_ratio_max": 0.02, "cpu_ratio_max": 0.34},
                "meets_targets": p99 <= 0.2 and rss <= 0.02 and cpu <= 0.34,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
