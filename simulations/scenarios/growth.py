"""growth: N nodes join through one bootstrap node; then random lookups are measured.

Nodes arrive as a Poisson process at `join_rate` per second and bootstrap
through node 0 with the real join (identify, self-lookup, bucket refresh).
`prefill` nodes (node 0 included) start with routing tables filled by the
oracle instead, which lets a 10^5-node network be measured without replaying
every join. After the last join and `settle` seconds, `lookups` find_node
lookups for random targets from random nodes are scored against the truth.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from simulations.lookups import LookupProbe
from simulations.metrics import Series, describe, histogram, ratio, rnd
from simulations.oracle import IdSpace, fill_routing_tables
from simulations.overlay import EPOCH, SimNode
from simulations.scenario import Plot, Progress, Result, World

DEFAULTS: dict[str, Any] = {
    "join_rate": 20.0,
    "prefill": 1,
    "settle": 60.0,
    "lookups": 500,
    "lookup_rate": 20.0,
    "fill_sample": 200,
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
        fill_routing_tables(warm, IdSpace(warm), overlay.nodes, k, rng)
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
    lookup_end = settle_end + count / params["lookup_rate"] + 3 * params["rpc_timeout"]
    world.every(params["sample_every"], sample, lookup_end)

    probe = LookupProbe(overlay, EPOCH, k)

    def start_lookups(_: Any) -> None:
        probe.space = IdSpace(overlay.nodes)
        gap = 1.0 / params["lookup_rate"]
        for i in range(count):
            origin = overlay.nodes[rng.randrange(len(overlay.nodes))]
            target = rng.randbytes(20)
            world.at(settle_end + i * gap, lambda arg: probe.find(*arg), (origin, target))

    world.at(settle_end, start_lookups)
    world.run_until(lookup_end)
    return summarise(world, params, joins, join_tables, probe, growth)


def rpc_counts(nodes: list[SimNode]) -> dict[str, int]:
    """The cores' own counts of requests by kind and of what happened to them."""
    totals: Counter[str] = Counter()
    for node in nodes:
        totals.update(node.core.counters)
    wanted = ("rpc.out.", "rpc.retransmit", "rpc.timeout", "lookup.abandoned")
    return {name: totals[name] for name in sorted(totals) if name.startswith(wanted)}


def summarise(
    world: World,
    params: dict[str, Any],
    joins: list[float],
    join_tables: list[int],
    probe: LookupProbe,
    growth: Series,
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
