"""Simulator throughput and memory at growing N; prints ONE JSON object.

Workload: the growth scenario with a warm start (every node but `joins` gets
an oracle-filled routing table), then `joins` real joins and `lookups` real
find_node lookups at `lookup_rate` per simulated second, scored against the
oracle. Each size runs in a child process of its own, so its peak RSS is its
own. Reported per size: wall seconds (setup included), the setup's share,
events (engine callbacks: datagram deliveries, timers), events/s and
messages/s over the whole wall time, peak RSS and bytes per simulated node
(peak RSS less the interpreter's RSS before the run, divided by N), lookup
success and hops. `cost_growth` compares consecutive sizes: how wall time,
events and memory scale with N (exponent b in cost ~ N^b).

The baseline runs the same workload at the smallest size through the datagram
path (`receive` / `datagrams_to_send`, msgpack each way, fresh contacts),
which is how the unit tests' in-memory network drives cores, in the same
invocation, so the comparison is made on the same machine under the same load.

`--reference TREE` also runs every size from another source tree (a git
worktree of an older commit, say), in the same invocation, and reports the
ratios: how much faster and smaller this tree's simulator is, on the same
workload, the same machine and the same load. Results must be identical
(tests/simulations/test_golden.py); `same_results` says whether events,
messages and lookup scores agree. CPU seconds are reported beside wall
seconds: on a shared machine they move less with the load.

`--compiled` runs every size twice, interpreted (as the reference) and then with
`dht/`'s hot modules compiled by mypyc (PAGEMESH_COMPILED=1, dht/compiled.py;
built first if missing or stale), and reports the same ratios. With `--reference
TREE` as well, both trees run compiled (each its own build, made first): what a
change to the compiled code, or to the set of modules compiled, is worth.

    .venv/bin/python benchmarks/sim_scale.py                # 10^4 and 10^5 nodes, 10^5 lookups
    .venv/bin/python benchmarks/sim_scale.py --sizes 1000000 --no-baseline
    git worktree add /tmp/before OLD_COMMIT
    .venv/bin/python benchmarks/sim_scale.py --sizes 100000 --no-baseline --reference /tmp/before
    .venv/bin/python benchmarks/sim_scale.py --sizes 30000,100000 --no-baseline --compiled
    .venv/bin/python benchmarks/sim_scale.py --sizes 30000,100000 --no-baseline --compiled \
        --reference /tmp/before

Targets (issue M6): 10^5 nodes with 10^5 lookups in under 10 minutes on 2 cores
and 24 GiB (`target_wall_seconds`), and 300,000 events/s. Events are engine
callbacks, each of which runs the real core's request or reply path; see
docs/simulation.md, "Scale and cost", for what is met and what is not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def peak_rss_bytes() -> int:
    """VmHWM of this process: its peak resident set."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(nodes: int, joins: int, lookups: int, rate: float, transport: str) -> dict[str, Any]:
    """One size, in this process (called in a child by `run_child`)."""
    from simulations.scenario import make_scenario, run

    before = rss_bytes()
    scenario = make_scenario(
        "growth",
        {
            "nodes": nodes,
            "prefill": nodes - joins,
            "lookups": lookups,
            "lookup_rate": rate,
            "settle": 10.0,
            "transport": transport,
            "fill_sample": 50,
        },
    )
    first_report: list[float] = []

    def progress(done: float, planned: float, events: int) -> None:
        if not first_report:
            first_report.extend((time.perf_counter(), time.process_time()))

    started = time.perf_counter()
    cpu_started = time.process_time()
    result = run(scenario, progress)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    peak = peak_rss_bytes()
    summary = result.summary
    from dht.compiled import loaded

    return {
        "nodes": nodes,
        "transport": transport,
        "compiled": all(loaded().values()),
        "lookups": lookups,
        "events": result.events,
        "messages": summary["messages"]["delivered"],
        "sim_seconds": summary["sim_seconds"],
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "setup_seconds": round(first_report[0] - started, 1) if first_report else None,
        "setup_cpu_seconds": round(first_report[1] - cpu_started, 1) if first_report else None,
        "events_per_second": round(result.events / wall),
        "messages_per_second": round(summary["messages"]["delivered"] / wall),
        "peak_rss_bytes": peak,
        "bytes_per_node": round((peak - before) / nodes),
        "lookup_success_rate": summary["lookup"]["success_rate"],
        "lookup_hops_mean": summary["lookup"]["hops"]["mean"],
        "huge_page_bytes": huge_page_bytes(),
    }


def huge_page_bytes() -> int | None:
    """Resident memory in transparent huge pages (simulations/memory.py), Linux only."""
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_child(
    nodes: int,
    joins: int,
    lookups: int,
    rate: float,
    transport: str,
    tree: str | None = None,
    compiled: bool = False,
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", transport]
    command += ["--sizes", str(nodes), "--joins", str(joins)]
    command += ["--lookups", str(lookups), "--lookup-rate", str(rate)]
    if tree:
        command += ["--tree", tree]
    env = {key: value for key, value in os.environ.items() if key != "PAGEMESH_COMPILED"}
    if compiled:
        env["PAGEMESH_COMPILED"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {"nodes": nodes, "transport": transport, "error": done.stderr.strip()[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def exponent(small: dict[str, Any], large: dict[str, Any], key: str) -> float | None:
    """b in cost ~ N^b between two sizes."""
    a, b = small.get(key), large.get(key)
    if not a or not b:
        return None
    return round(math.log(b / a) / math.log(large["nodes"] / small["nodes"]), 2)


def cost_growth(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    steps = []
    for small, large in itertools.pairwise(runs):
        if "error" in small or "error" in large:
            continue
        steps.append(
            {
                "from_nodes": small["nodes"],
                "to_nodes": large["nodes"],
                "wall_exponent": exponent(small, large, "wall_seconds"),
                "setup_exponent": exponent(small, large, "setup_seconds"),
                "events_exponent": exponent(small, large, "events"),
                "peak_rss_exponent": exponent(small, large, "peak_rss_bytes"),
                "events_per_second_ratio": round(
                    large["events_per_second"] / small["events_per_second"], 2
                ),
            }
        )
    return steps


SAME_FIELDS = ("events", "messages", "sim_seconds", "lookup_success_rate", "lookup_hops_mean")


def against_reference(run: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """This tree's run over the reference tree's, at one size."""
    if "error" in run or "error" in reference:
        return {"nodes": run["nodes"], "error": "a run failed"}

    def ratio(key: str) -> float:
        value: float = reference[key] / run[key]
        return round(value, 2)

    return {
        "nodes": run["nodes"],
        "same_results": all(run[key] == reference[key] for key in SAME_FIELDS),
        "wall_speedup": ratio("wall_seconds"),
        "cpu_speedup": ratio("cpu_seconds") if "cpu_seconds" in reference else None,
        "setup_speedup": ratio("setup_seconds"),
        "events_per_second": [reference["events_per_second"], run["events_per_second"]],
        "peak_rss_bytes": [reference["peak_rss_bytes"], run["peak_rss_bytes"]],
        "peak_rss_ratio": round(run["peak_rss_bytes"] / reference["peak_rss_bytes"], 3),
    }


def wall_target_met(runs: list[dict[str, Any]], lookups: int) -> bool | None:
    """Whether 10^5 nodes and 10^5 lookups ran in under 10 minutes; None if not measured."""
    for run in runs:
        if run["nodes"] == 100_000 and lookups >= 100_000 and "error" not in run:
            return bool(run["wall_seconds"] < 600)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--lookup-rate", type=float, default=1000.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--reference", default=None, help="another source tree to run the same sizes from"
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="run every size interpreted (the reference) and with dht/ compiled by mypyc",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        if args.tree:
            sys.path.insert(0, str(Path(args.tree).resolve()))
        result = measure(sizes[0], args.joins, args.lookups, args.lookup_rate, args.child)
        print(json.dumps(result), flush=True)
        # The child's answer is out: end without freeing the simulated network object by
        # object (7% of a 3*10^4-node run's process time, more with N).
        os._exit(0)
    if args.compiled:
        from dht.compiled import build

        build()  # before the runs, so that no run's time includes it
        if args.reference:  # the reference tree's own build, from its own sources
            subprocess.run(
                [sys.executable, "-c", "from dht.compiled import build; build()"],
                cwd=args.reference,
                env={key: value for key, value in os.environ.items() if key != "PAGEMESH_COMPILED"},
                check=True,
            )
    workload = (args.joins, args.lookups, args.lookup_rate)
    baseline = None if args.no_baseline else run_child(sizes[0], *workload, "bytes")
    runs: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    for n in sizes:  # reference and this tree one after the other, under the same load
        if args.reference or args.compiled:
            compiled_reference = args.compiled and args.reference is not None
            references.append(
                run_child(n, *workload, "message", args.reference, compiled_reference)
            )
        runs.append(run_child(n, *workload, "message", compiled=args.compiled))
    same = runs[0]
    speedup = None
    if baseline and "error" not in baseline and "error" not in same:
        speedup = round(same["events_per_second"] / baseline["events_per_second"], 2)
    out = {
        "benchmark": "sim_scale",
        "workload": (
            f"growth warm start, {args.joins} joins, {args.lookups} lookups "
            f"at {args.lookup_rate:g}/s simulated"
        ),
        "runs": runs,
        "cost_growth": cost_growth(runs),
        "baseline": baseline,
        "reference_tree": (
            args.reference
            if args.reference
            else "this tree, interpreted"
            if args.compiled
            else None
        ),
        "compiled": args.compiled,
        "reference": references,
        "against_reference": [
            against_reference(r, ref) for r, ref in zip(runs, references, strict=False)
        ],
        "speedup_vs_datagram_path": speedup,
        "target_events_per_second": 300_000,
        "target_wall_seconds": {"nodes": 100_000, "lookups": 100_000, "seconds": 600},
        "meets_wall_target": wall_target_met(runs, args.lookups),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
