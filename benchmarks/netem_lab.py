"""Real signaling nodes on emulated wide-area links against the simulator; prints ONE JSON
object.

The emulated-link lab (tests/nat/netem.py, docs/simulation.md "Emulated links"):
`--nodes` real signaling nodes, each in a network namespace of its own, spread over
the simulator's five regions by their weights, every packet between them delayed by
the one-way latency of `simulations.network.DEFAULT_LATENCY_MS` (+ its jitter); they
join in waves through the first; `--lookups` DHT lookups from random nodes to random
targets, `--lookup-gap` s apart, then `--joins` room joins by real WebSocket clients
(`--rooms` pages, random home nodes), `--join-gap` s apart. The same plan (ids,
regions, waves, lookups, joins, schedule, k 20, alpha 3, the nodes' DHT and room
settings) then runs on the simulator. For each behaviour (`fast`: the fast paths of
docs/protocol.md 1.10 and 2.5 on, as nodes people run; `baseline`: off), in this
invocation: lookup and join latency percentiles in the lab and the simulator, their
total variation distance over the bins `tests.nat.netem.EDGES_S`, the median
paired difference (the same lookup or join in both worlds), and `noise`: the
distances between two independent simulator samples of the same sizes (different
plan seeds), over `--noise-pairs` pairs, which is what a distance of this sample
size means.

    .venv/bin/python benchmarks/netem_lab.py        # 64 nodes, 200 lookups, 100 joins, both
    .venv/bin/python benchmarks/netem_lab.py --nodes 16 --lookups 40 --joins 30 \\
        --noise-pairs 20 --noise-only --modes fast   # the test's bound (tests/nat/test_netem.py)

Needs root and /dev/net/tun (the lab); about 3 minutes of lab per behaviour at 64 nodes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.nat.netem import (  # noqa: E402
    Plan,
    Samples,
    missing_requirements,
    paired_median,
    percentiles,
    run_lab,
    simulate,
    tvd,
)


def compare(lab: Samples, sim: Samples, count: int, what: str) -> dict[str, Any]:
    a, b = (lab.lookup_s, sim.lookup_s) if what == "lookup" else (lab.join_s, sim.join_s)
    block: dict[str, Any] = {"lab_s": percentiles(a), "sim_s": percentiles(b)}
    block["tvd"] = round(tvd(a, b), 3)
    if len(a) == len(b) == count:
        block["paired_median_s"] = round(paired_median(a, b), 4)
    return block


def noise(args: argparse.Namespace, fast: bool) -> dict[str, Any]:
    lookups: list[float] = []
    joins: list[float] = []
    for pair in range(args.noise_pairs):
        seed = 100 + 2 * pair
        a = simulate(Plan.make(args.nodes, args.lookups, args.joins, fast, seed))
        b = simulate(Plan.make(args.nodes, args.lookups, args.joins, fast, seed + 1))
        lookups.append(tvd(a.lookup_s, b.lookup_s))
        joins.append(tvd(a.join_s, b.join_s))

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        at95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
        return {
            "p50": round(statistics.median(ordered), 3),
            "p95": round(at95, 3),
            "max": round(ordered[-1], 3),
        }

    return {"pairs": args.noise_pairs, "lookup_tvd": summary(lookups), "join_tvd": summary(joins)}


def one(args: argparse.Namespace, fast: bool) -> dict[str, Any]:
    plan = Plan.make(args.nodes, args.lookups, args.joins, fast, args.seed, args.rooms)
    plan = replace(plan, lookup_gap=args.lookup_gap, join_gap=args.join_gap)
    out: dict[str, Any] = {}
    if not args.noise_only:
        load_before = round(os.getloadavg()[0], 1)
        with tempfile.TemporaryDirectory(prefix="netem-") as workdir:
            lab = run_lab(plan, Path(workdir), lambda line: print(line, file=sys.stderr))
        started = time.perf_counter()
        sim = simulate(plan)
        out = {
            "lab_wall_seconds": lab.extra.get("wall_seconds"),
            "sim_wall_seconds": round(time.perf_counter() - started, 1),
            "lab_cpu_seconds": lab.extra.get("cpu_seconds"),
            "delay_line": lab.extra.get("router"),
            "load_average_1min": {"before": load_before, "after": lab.extra.get("load_average")},
            "errors": lab.errors[:10] + sim.errors[:10],
            "lookup": {
                **compare(lab, sim, args.lookups, "lookup"),
                "closest_found": {"lab": lab.lookup_found, "sim": sim.lookup_found},
            },
            "join": compare(lab, sim, args.joins, "join"),
        }
    if args.noise_pairs:
        out["noise"] = noise(args, fast)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--joins", type=int, default=100)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--lookup-gap", type=float, default=0.25)
    parser.add_argument("--join-gap", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise-pairs", type=int, default=10)
    parser.add_argument("--noise-only", action="store_true", help="the simulator's noise only")
    parser.add_argument("--modes", default="fast,baseline")
    args = parser.parse_args()
    reason = None if args.noise_only else missing_requirements()
    result: dict[str, Any] = {
        "benchmark": "netem_lab",
        "model": "five regions (simulations/network.py), one-way 8..160 ms, jitter 5 ms",
        "params": vars(args),
    }
    started = time.perf_counter()
    if reason is not None:
        result["error"] = reason
    else:
        for mode in args.modes.split(","):
            result[mode] = one(args, mode == "fast")
            print(json.dumps({mode: result[mode]}), file=sys.stderr, flush=True)  # so far
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
