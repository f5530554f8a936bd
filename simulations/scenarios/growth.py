"""growth: N nodes join through one bootstrap node; then random lookups are measured.

Nodes arrive as a Poisson process at `join_rate` per second and bootstrap
through node 0 with the real join (identify, self-lookup, bucket refresh).
`prefill` nodes (node 0 included) start with routing tables filled by the
oracle instead, which lets a 10^5-node network be measured without replaying
every join. After the last join and `settle` seconds, `lookups` find_node
lookups for random targets from random nodes are scored against the truth.
With `reads` > 0, `read_keys` records (one per key, from random nodes) are
stored half of `settle` before that, and `reads` record reads of them from
random nodes run beside the lookups at `read_rate` per second.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from simulations.lookups import LookupProbe
from simulations.metrics import Series, describe, histogram, ratio, rnd
from simulations.oracle import IdSpace
from simulations.overlay import EPOCH, SimNode
from simulations.scenario import Plot, Progress, Result, World

DEFAULTS: dict[str, Any] = {
    "join_rate": 20.0,
    "prefill": 1,
    "settle": 60.0,
    "lookups": 500,
    "lookup_rate": 20.0,
    "fill_sample": 200,
    "reads": 0,
    "read_keys": 20,
    "read_rate": 20.0,
}

SAMPLE_TABLES = 500


def run(params: dict[str, Any], progress: Progress | None) -> Result:
    world = World(params, progress)
    overlay = world.overlay
    rng = world.rng
    total = params["nodes"]
    k = params["k"]
    prefill = max(1, min(params["prefill"], total))

    warm = [overlay.add_node() for _ in range(prefill)]
    if prefill > 1:
        world.warm_tables(warm)
        for node in warm:
            node.joined_at = 0.0
    bootstrap = warm[0]
    bootstrap.joined_at = 0.0

    joins: list[float] = []
    join_tables: list[int] = []
    arrivals: list[float] = []
    t = 0.0
    for _ in range(total - prefill):
        t += rng.expovariate(params["join_rate"])
        arrivals.append(t)
    last_arrival = arrivals[-1] if arrivals else 0.0

    def joined(node: SimNode, event: Any) -> None:
        node.joined_at = world.t
        joins.append(world.t - node_arrival[node.index])
        join_tables.append(len(node.core.table))

    node_arrival: dict[int, float] = {}

    def arrive(_: Any) -> None:
        node = overlay.add_node()
        node_arrival[node.index] = world.t
        overlay.join(node, [bootstrap], joined)

    for when in arrivals:
        world.at(when, arrive)

    growth = Series("growth", ["t", "nodes", "joined", "table_mean", "messages"])

    def sample(t: float) -> None:
        nodes = overlay.nodes
        step = max(1, len(nodes) // SAMPLE_TABLES)
        sizes = [len(n.core.table) for n in nodes[::step]]
        growth.add(
            t=t,
            nodes=len(nodes),
            joined=sum(1 for n in nodes if n.joined_at is not None),
            table_mean=rnd(sum(sizes) / len(sizes), 3),
            messages=overlay.stats.sent,
        )

    settle_end = last_arrival + params["settle"]
    count = params["lookups"]
    reading = params["reads"] / params["read_rate"] if params["reads"] > 0 else 0.0
    lookup_end = (
        settle_end + max(count / params["lookup_rate"], reading) + 3 * params["rpc_timeout"]
    )
    world.every(params["sample_every"], sample, lookup_end)

    probe = LookupProbe(overlay, EPOCH, k)
    reads = LookupProbe(overlay, EPOCH, k)
    if params["reads"] > 0:
        _plan_reads(world, params, reads, settle_end)

    def start_lookups(_: Any) -> None:
        probe.space = IdSpace(overlay.nodes)
        gap = 1.0 / params["lookup_rate"]
        for i in range(count):
            origin = overlay.nodes[rng.randrange(len(overlay.nodes))]
            target = rng.randbytes(20)
            world.at(settle_end + i * gap, lambda arg: probe.find(*arg), (origin, target))

    world.at(settle_end, start_lookups)
    world.run_until(lookup_end)
    return summarise(world, params, joins, join_tables, probe, growth, reads)


def _plan_reads(world: World, params: dict[str, Any], reads: LookupProbe, start: float) -> None:
    """Publish `read_keys` records half of `settle` before `start`, then read them."""
    overlay, rng = world.overlay, world.rng
    keys = [rng.randbytes(20) for _ in range(params["read_keys"])]

    def publish(_: Any) -> None:
        for i, key in enumerate(keys):
            node = overlay.nodes[rng.randrange(len(overlay.nodes))]
            record = node.core.create_record(key, b"v%d" % i, 3600.0, 1, overlay.now)
            overlay.call(node, node.core.put_record(record, overlay.now), None)

    def read(arg: tuple[SimNode, bytes]) -> None:
        reads.get(*arg)

    world.at(start - params["settle"] / 2, publish)
    gap = 1.0 / params["read_rate"]
    for i in range(params["reads"]):
        node = overlay.nodes[rng.randrange(len(overlay.nodes))]
        world.at(start + i * gap, read, (node, keys[rng.randrange(len(keys))]))


def rpc_counts(nodes: list[SimNode]) -> dict[str, int]:
    """The cores' own counts of requests by kind and of what happened to them."""
    totals: Counter[str] = Counter()
    for node in nodes:
        totals.update(node.core.counters)
    wanted = (
        "rpc.out.",
        "rpc.retransmit",
        "rpc.timeout",
        "lookup.abandoned",
        "read.",
        "table.prox",
        "put.",
    )
    return {name: totals[name] for name in sorted(totals) if name.startswith(wanted)}


def summarise(
    world: World,
    params: dict[str, Any],
    joins: list[float],
    join_tables: list[int],
    probe: LookupProbe,
    growth: Series,
    reads: LookupProbe | None = None,
) -> Result:
    overlay = world.overlay
    k = params["k"]
    samples = probe.samples
    space = IdSpace(overlay.nodes)
    step = max(1, len(overlay.nodes) // max(1, params["fill_sample"]))
    fills = []
    for node in overlay.nodes[::step]:
        ideal = space.ideal_table_size(int.from_bytes(node.node_id, "big"), k)
        fills.append(len(node.core.table) / ideal if ideal else 1.0)
    sizes = [len(n.core.table) for n in overlay.nodes]
    hops = [s.hops for s in samples if s.hops is not None]
    latencies = [s.latency for s in samples]
    floors = [s.floor for s in samples if s.floor is not None]
    over = [s.latency - s.floor for s in samples if s.floor is not None]
    stats = overlay.stats
    joined_count = len(joins)
    summary = {
        "nodes": len(overlay.nodes),
        "joins": {
            "count": joined_count,
            "latency_s": describe(joins),
            "table_size_at_join": describe(join_tables),
            "messages_per_join": ratio(stats.sent, joined_count, 3),
        },
        "routing_table": {"size": describe(sizes), "fill": describe(fills)},
        "lookup": {
            "count": len(samples),
            "launched": params["lookups"],
            "success_rate": ratio(sum(s.success for s in samples), len(samples)),
            "closest_k_overlap": rnd(
                sum(s.overlap for s in samples) / len(samples) if samples else None
            ),
            "hops": describe(hops),
            "hops_histogram": histogram(hops),
            "queries": describe([s.queries for s in samples]),
            "latency_s": describe(latencies),
            "floor_s": describe(floors),
            "over_floor_s": describe(over),
        },
        "messages": {
            "sent": stats.sent,
            "delivered": stats.delivered,
            "lost": stats.lost,
            "undeliverable": stats.undeliverable,
        },
        "rpc": rpc_counts(overlay.nodes),
        "sim_seconds": rnd(world.t, 3),
    }
    if reads is not None and reads.samples:
        got = reads.samples
        summary["reads"] = {
            "count": len(got),
            "success_rate": ratio(sum(s.success for s in got), len(got)),
            "latency_s": describe([s.latency for s in got]),
            "floor_s": describe([s.floor for s in got if s.floor is not None]),
            "queries": describe([s.queries for s in got]),
        }
    lookups = Series("lookups", ["t", "latency", "hops", "queries", "success", "overlap"])
    for s in samples:
        lookups.add(
            t=rnd(s.started, 6),
            latency=rnd(s.latency, 6),
            hops=s.hops,
            queries=s.queries,
            success=int(s.success),
            overlap=rnd(s.overlap, 4),
        )
    hist = summary["lookup"]["hops_histogram"]
    ordered = sorted(latencies)
    plots = [
        Plot(
            "routing_table",
            "Routing table size while the network grows",
            "nodes in the network",
            "mean contacts per table",
            [("mean", growth.column("nodes"), growth.column("table_mean"))],  # type: ignore[list-item]
        ),
        Plot(
            "lookup_hops",
            "Lookup hops",
            "hops",
            "lookups",
            [("hops", [int(h) for h in hist], list(hist.values()))],
            kind="bar",
        ),
        Plot(
            "lookup_latency_cdf",
            "Lookup latency",
            "seconds",
            "share of lookups",
            [("latency", ordered, [(i + 1) / len(ordered) for i in range(len(ordered))])],
        ),
    ]
    return Result(summary, [growth, lookups], plots, world.engine.events)
