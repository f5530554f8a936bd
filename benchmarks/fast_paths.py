"""Lookups, reads and joins on the five-region model, with the fast paths and without;
prints ONE JSON object.

Both behaviours run in the same invocation on the same seeds (`fast = true` and
`fast = false` of the simulator's scenarios; docs/protocol.md 1.10 and 2.5 for the
rules, docs/simulation.md "Fast paths" for the model):

* `lookup`: the growth scenario with a warm start of `--nodes` nodes (oracle-filled
  routing tables; with the fast paths, proximity tables too), then `--lookups`
  find_node lookups and `--reads` record reads (of `read_keys` records stored before)
  from random nodes. Latency percentiles beside the floor: the round trips along the
  chain of queries each lookup ended on (`simulations/observe.py`).
* `join`: the rooms scenario on `--nodes` nodes: `--users` people join Zipf-popular
  pages (`--pages`) at `--join-rate` per second through random home nodes; with
  WebRTC setup modelled (`simulations.roomnet.WebRtcModel`, NAT mix of the scenario).
  `seated`: the join sent to `joined` received; `first_peer`: the join sent to the
  first data channel open with a member (joins into a layer with members only).

  Beside each, its floor: the client's round trip plus, walking back from the answer,
  the floor of each operation the join waited on in turn (its DHT reads, stores and
  home checks: the round trips along the chain of queries each ended on; the client's
  signature: its round trip), and `critical_path`: how many such operations in a row
  and the mean seconds per kind (`client`, `read`, `store`, `check`, `sign`, `wait`).
  With 2.5.5 a join's seat store is also its check (one `store` span, no check read):
  its floor is a read's, the round trip to the nearest holder whose reply had records;
  with 2.5.6 the span ends when a majority of the holders had replied (the join is
  seated then), its floor counted from those replies.
  A first peer's floor is the join's plus the modelled offer/answer and connection;
  for a first peer that answered an offer made before `joined` (docs/protocol.md
  2.5.3), the floor of what the join needed before the node named that member, plus
  the modelled signature, offer/answer and connection.

Joins run five times: `fast`, `store_read` (every fast path but 2.5.6 and 2.5.7: seated
once every holder replied to the seat store, placed from proven lists only; the
scenario's `seat_at_majority = false`, `hopeful_placement = false`), `check_read` (nor
2.5.5: the check reads the layer after the seat store instead of taking the store's
replies, `store_reads = false`), `before` (the fast paths without the pipelined joins of
2.5.3 and 2.5.4 nor 2.5.5 to 2.5.7, `pipelined_joins = false` too) and `baseline`.

Each run is a child process of its own (`--jobs` at a time). Targets (benchmarks, not
tests): lookup p50 <= 0.5 s and p99 <= 1.2 s; join-to-seated p50 <= 0.5 s and p99 <=
1.5 s; newcomer to first connected peer p50 <= 1.2 s; `pass` says which are met, and
`table` gives each beside the baseline's figure and both floors.

    .venv/bin/python benchmarks/fast_paths.py                  # 10^4 nodes (about 3 min)
    .venv/bin/python benchmarks/fast_paths.py --nodes 2000 --users 300 --pages 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {
    "lookup_p50_s": 0.5,
    "lookup_p99_s": 1.2,
    "seated_p50_s": 0.5,
    "seated_p99_s": 1.5,
    "first_peer_p50_s": 1.2,
}
PERCENTILES = ("p50", "p90", "p99", "mean")


def pick(block: dict[str, Any]) -> dict[str, Any]:
    return {p: block.get(p) for p in PERCENTILES}


def lookup_run(args: argparse.Namespace, fast: bool) -> dict[str, Any]:
    from simulations.scenario import make_scenario, run

    params = {
        "nodes": args.nodes,
        "prefill": args.nodes - 20,
        "lookups": args.lookups,
        "lookup_rate": args.rate,
        "reads": args.reads,
        "read_rate": args.rate,
        "settle": 10.0,
        "seed": args.seed,
        "fill_sample": 50,
        "fast": fast,
    }
    started = time.perf_counter()
    summary = run(make_scenario("growth", params)).summary
    lookup, reads = summary["lookup"], summary.get("reads", {})
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "find": {
            "count": lookup["count"],
            "success_rate": lookup["success_rate"],
            "closest_k_overlap": lookup["closest_k_overlap"],
            "latency_s": pick(lookup["latency_s"]),
            "floor_s": pick(lookup["floor_s"]),
            "over_floor_s": pick(lookup["over_floor_s"]),
            "hops_mean": lookup["hops"]["mean"],
            "queries": pick(lookup["queries"]),
        },
        "get": {
            "count": reads.get("count"),
            "success_rate": reads.get("success_rate"),
            "latency_s": pick(reads.get("latency_s", {})),
            "floor_s": pick(reads.get("floor_s", {})),
            "queries": pick(reads.get("queries", {})),
        },
        "rpc": summary["rpc"],
    }


def join_run(
    args: argparse.Namespace,
    fast: bool,
    pipelined: bool = True,
    store_reads: bool = True,
    majority: bool = True,
) -> dict[str, Any]:
    """One join run; `majority` turns 2.5.6 and 2.5.7 on together (the newest rules)."""
    from simulations.scenario import make_scenario, run

    params = {
        "nodes": args.nodes,
        "users": args.users,
        "pages": args.pages,
        "join_rate": args.join_rate,
        "seed": args.seed,
        "webrtc": True,
        "drain": 20.0,
        "fast": fast,
        "pipelined_joins": pipelined,
        "store_reads": store_reads,
        "seat_at_majority": majority,
        "hopeful_placement": majority,
    }
    started = time.perf_counter()
    summary = run(make_scenario("rooms", params)).summary
    join, layers = summary["join"], summary["layers"]
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "joins": join["count"],
        "seated": join["seated"],
        "refused": join["refused"],
        "unanswered": join["unanswered"],
        "seated_s": pick(join["latency_s"]),
        "with_members": join.get("with_members"),
        "first_peer_connected": join.get("first_peer_connected"),
        "first_peer_relayed_share": join.get("first_peer_relayed_share"),
        "first_peer_s": pick(join.get("to_first_peer_s", {})),
        "first_peer_offered_early": join.get("first_peer_offered_early"),
        "seated_floor_s": pick(join.get("floor_s", {})),
        "seated_over_floor_s": pick(join.get("over_floor_s", {})),
        "first_peer_floor_s": pick(join.get("first_peer_floor_s", {})),
        "critical_path": join.get("critical_path"),
        "dht_reads_p50": join["dht_reads"]["p50"],
        "dht_messages_per_join": pick(join["dht_messages"]),
        "layers_over_size": layers["over_size"],
        "largest_layer_seen": layers["largest_seen"],
        "estimate_median_error": summary["estimate"]["median_error"],
    }


RUNS = {"lookup": lookup_run, "join": join_run}
MODES = ("fast", "store_read", "check_read", "before", "baseline")
"""`fast`: every fast path; `store_read`: every fast path but seating at a majority of
the seat store's replies and placing on lists still being proven (docs/protocol.md 2.5.6
and 2.5.7, `seat_at_majority = false`, `hopeful_placement = false`: seated once every
holder replied, placed from proven lists); `check_read`: none of that nor the check made
from the seat store's replies (docs/protocol.md 2.5.5, `store_reads = false`: the check reads
after the store); `before`: the fast paths without the pipelined joins of 2.5.3 and 2.5.4
nor 2.5.5 (`pipelined_joins = false`, `store_reads = false`); both joins only, lookups do
not use them; `baseline`: no fast path (`fast = false`)."""


def child(args: argparse.Namespace) -> None:
    kind, mode = args.child.split(":")
    if kind == "join":
        fast, pipelined = mode != "baseline", mode in ("fast", "store_read", "check_read")
        store_reads = mode in ("fast", "store_read")
        print(json.dumps(join_run(args, fast, pipelined, store_reads, mode == "fast")))
    else:
        print(json.dumps(RUNS[kind](args, mode != "baseline")))


def spawn(argv: list[str], kind: str, mode: str) -> dict[str, Any]:
    command = [sys.executable, __file__, *argv, "--child", f"{kind}:{mode}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


FIGURES = {
    "lookup_p50_s": (("lookup", "find", "latency_s", "p50"), ("lookup", "find", "floor_s", "p50")),
    "lookup_p99_s": (("lookup", "find", "latency_s", "p99"), ("lookup", "find", "floor_s", "p99")),
    "seated_p50_s": (("join", "seated_s", "p50"), ("join", "seated_floor_s", "p50")),
    "seated_p99_s": (("join", "seated_s", "p99"), ("join", "seated_floor_s", "p99")),
    "first_peer_p50_s": (("join", "first_peer_s", "p50"), ("join", "first_peer_floor_s", "p50")),
}
"""Target -> where its figure and its floor sit in a run's results."""


def value(results: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = results
    for step in path:
        node = node.get(step) if isinstance(node, dict) else None
    return node if isinstance(node, int | float) else None


def verdicts(fast: dict[str, Any]) -> dict[str, bool | None]:
    measured = {name: value(fast, figure) for name, (figure, _) in FIGURES.items()}
    return {name: (None if got is None else got <= TARGETS[name]) for name, got in measured.items()}


def table(out: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each target beside the figure with the fast paths, the same before the pipelined
    joins (2.5.3, 2.5.4; the switch off), the baseline's, and the floor of each: for a
    lookup the round trips along the chain of queries it ended on, for a join
    the client's round trip plus the floors of the operations it waited on one after the
    other (`simulations/scenarios/rooms.py`, `critical_path`), for a first peer the join's
    floor plus the modelled offer, answer and connection rounds."""
    rows = {}
    for name, (figure, floor) in FIGURES.items():
        rows[name] = {
            "target": TARGETS[name],
            "fast": value(out["fast"], figure),
            "fast_floor": value(out["fast"], floor),
            "store_read": value(out["store_read"], figure) if figure[0] == "join" else None,
            "store_read_floor": value(out["store_read"], floor) if figure[0] == "join" else None,
            "check_read": value(out["check_read"], figure) if figure[0] == "join" else None,
            "check_read_floor": value(out["check_read"], floor) if figure[0] == "join" else None,
            "before": value(out["before"], figure) if figure[0] == "join" else None,
            "before_floor": value(out["before"], floor) if figure[0] == "join" else None,
            "baseline": value(out["baseline"], figure),
            "baseline_floor": value(out["baseline"], floor),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0, help="lookups and reads per s")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--join-rate", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    parser.add_argument("--only", choices=sorted(RUNS), help="one of the two workloads")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    argv, skip = [], False
    for arg in sys.argv[1:]:  # the children run one at a time: drop --jobs N / --jobs=N
        if skip or arg.startswith("--jobs"):
            skip = arg == "--jobs" and not skip
            continue
        argv.append(arg)
    kinds = [args.only] if args.only else list(RUNS)
    plan = [(k, m) for k in kinds for m in MODES if k == "join" or m in ("fast", "baseline")]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda job: spawn(argv, *job), plan))
    out: dict[str, Any] = {mode: {} for mode in MODES}
    for (kind, mode), result in zip(plan, results, strict=True):
        out[mode][kind] = result
    print(
        json.dumps(
            {
                "benchmark": "fast_paths",
                "model": "five regions (simulations/network.py), one-way 8..160 ms",
                "params": {k: v for k, v in vars(args).items() if k != "child"},
                **out,
                "targets": TARGETS,
                "table": table(out),
                "pass": verdicts(out["fast"]),
                "wall_seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
