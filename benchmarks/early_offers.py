"""Offers before seated (docs/protocol.md 2.5.3) in the Python client: a newcomer's join
to its first and its last link open, with the client offering once it has signed
(`PeerConfig.early_offers`) and, as the baseline in the same run, after `joined`.

Prints one JSON object. Three signaling nodes run as `pagemesh node` processes on
loopback (the fast paths on, as shipped); a room of `--members` Python peers spread
over them; then `--trials` newcomers per mode, the modes alternating, each joining at
the next node and leaving once linked to everyone. ICE is limited to 127.0.0.1. On
loopback the DHT store and check that the rule takes off the first link's path last
a few milliseconds, so the gain here is a floor of what a real network sees; the
load average is given since the machine is shared.

    python benchmarks/early_offers.py [--members 4] [--trials 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peer_messaging import Inbox, ms, percentile, room_of
from benchmarks.signaling_load import start_mesh, stop
from peer.peer import Peer, PeerConfig
from peer.webrtc import restrict_host_candidates

URL = "https://example.org/bench"


async def one_join(
    node: str, workdir: Path, tag: str, early: bool, members: int
) -> dict[str, float]:
    peer = Peer(workdir / tag, [node], config=PeerConfig(early_offers=early))
    await peer.__aenter__()
    try:
        started = time.perf_counter()
        room = await peer.join(URL)
        seated = time.perf_counter()
        inbox = Inbox(room)
        await inbox.wait(lambda: len(inbox.connected) >= members, 60)
        inbox.task.cancel()
        first, last = min(inbox.connected.values()), max(inbox.connected.values())
        return {
            "seat": seated - started,
            "first": first - started,
            "last": last - started,
            "early_links": float(len(room.early_links)),
        }
    finally:
        await peer.close()


def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"trials": len(samples)}
    for name in ("seat", "first", "last"):
        values = [s[name] for s in samples]
        out[f"join_to_{name}_p50_ms"] = ms(statistics.median(values))
        out[f"join_to_{name}_p90_ms"] = ms(percentile(values, 0.9))
    out["links_open_before_seat_mean"] = round(
        statistics.mean(s["early_links"] for s in samples), 2
    )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    restrict_host_candidates(["127.0.0.1"])
    load_before = os.getloadavg()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        procs = await start_mesh(workdir, "n")
        nodes = [p.url for p in procs]
        try:
            members = await room_of(args.members, nodes, workdir, "m")
            for t in range(2 * args.trials):
                early = t % 2 == 0
                node = nodes[(t // 2) % len(nodes)]
                sample = await one_join(node, workdir, f"new{t}", early, args.members)
                results[early].append(sample)
            for peer, _ in members:
                await peer.close()
        finally:
            for proc in procs:
                await stop(proc)
    on, off = summary(results[True]), summary(results[False])
    print(
        json.dumps(
            {
                "benchmark": "early_offers",
                "members": args.members,
                "nodes": 3,
                "early_offers": on,
                "baseline_after_joined": off,
                "first_link_gain_p50_ms": round(
                    off["join_to_first_p50_ms"] - on["join_to_first_p50_ms"], 2
                ),
                "load_average_1m_before_after": [
                    round(load_before[0], 2),
                    round(os.getloadavg()[0], 2),
                ],
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
