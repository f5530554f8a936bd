"""Simulator throughput and memory at growing N; prints ONE JSON object.

Workload: the growth scenario with a warm start (every node but `joins` gets
an oracle-filled routing table), then `joins` real joins and `lookups` real
lookups. Reported per size: events/s (engine callbacks: deliveries and
timers), messages/s, bytes per simulated node (RSS growth while the network
is built and run, divided by N), lookup success. The baseline runs the same
workload at the smallest size through the datagram path (`receive` /
`datagrams_to_send`, msgpack each way, fresh contacts), which is how the unit
tests' in-memory network drives cores.

    .venv/bin/python benchmarks/sim_scale.py [--sizes 10000,100000] [--joins 20] [--lookups 100]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulations.scenario import make_scenario, run


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def measure(nodes: int, joins: int, lookups: int, transport: str) -> dict[str, object]:
    gc.collect()
    before = rss_bytes()
    scenario = make_scenario(
        "growth",
        {
            "nodes": nodes,
            "prefill": nodes - joins,
            "lookups": lookups,
            "settle": 10.0,
            "transport": transport,
            "fill_sample": 50,
        },
    )
    started = time.perf_counter()
    result = run(scenario)
    wall = time.perf_counter() - started
    grown = rss_bytes() - before
    summary = result.summary
    return {
        "nodes": nodes,
        "transport": transport,
        "events": result.events,
        "wall_seconds": round(wall, 2),
        "events_per_second": round(result.events / wall),
        "messages_per_second": round(summary["messages"]["delivered"] / wall),
        "bytes_per_node": round(grown / nodes),
        "lookup_success_rate": summary["lookup"]["success_rate"],
        "lookup_hops_mean": summary["lookup"]["hops"]["mean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--lookups", type=int, default=100)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    baseline = None
    if not args.no_baseline:
        baseline = measure(sizes[0], args.joins, args.lookups, "bytes")
    runs = [measure(n, args.joins, args.lookups, "message") for n in sizes]
    same = runs[0]
    out = {
        "benchmark": "sim_scale",
        "workload": f"growth warm start, {args.joins} joins, {args.lookups} lookups",
        "runs": runs,
        "baseline": baseline,
        "speedup_vs_datagram_path": (
            round(same["events_per_second"] / baseline["events_per_second"], 2)  # type: ignore[operator]
            if baseline
            else None
        ),
        "target_events_per_second": 300_000,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
