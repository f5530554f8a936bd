"""churn: a network in steady state under churn; lookups and record reads over time.

`nodes` nodes start with oracle-filled routing tables (a network that has
been running) and residual sessions drawn from the Weibull session model;
each departure is a crash (no goodbye), and Poisson arrivals at the steady
rate join through a random live node. `records` keys are published at the
start; the cores republish them as the protocol says. Lookups and record
reads from random live nodes are scored per window of `sample_every` seconds.
"""

from __future__ import annotations

from typing import Any

from simulations.lookups import LookupProbe, LookupSample
from simulations.metrics import Series, describe, histogram, percentile, ratio, rnd
from simulations.oracle import IdSpace
from simulations.overlay import EPOCH, SimNode
from simulations.scenario import Plot, Progress, Result, World
from simulations.workload import Weibull, steady_arrival_rate

DEFAULTS: dict[str, Any] = {
    "duration": 1200.0,
    "session_shape": 0.59,
    "session_scale": 1800.0,
    "records": 20,
    "record_ttl": 3600,
    "republish_interval": 600.0,
    "lookup_rate": 5.0,
    "read_rate": 5.0,
    "warmup": 30.0,
}


def run(params: dict[str, Any], progress: Progress | None) -> Result:
    world = World(params, progress)
    overlay = world.overlay
    config = type(world.config)(
        k=params["k"],
        alpha=params["alpha"],
        rpc_timeout=params["rpc_timeout"],
        republish_interval=params["republish_interval"],
    )
    overlay.config = world.config = config.with_fast_paths() if world.fast else config
    rng = world.rng
    k = params["k"]
    sessions = Weibull(params["session_shape"], params["session_scale"])
    duration = params["duration"]

    nodes = [overlay.add_node() for _ in range(params["nodes"])]
    world.warm_tables(nodes)
    live: list[SimNode] = list(nodes)
    position = {n.index: i for i, n in enumerate(live)}
    departures = 0
    arrivals = 0

    def depart(node: SimNode) -> None:
        nonlocal departures
        if not node.alive:
            return
        departures += 1
        overlay.kill(node)
        i = position.pop(node.index)
        last = live.pop()
        if last is not node:
            live[i] = last
            position[last.index] = i

    def arrive(_: Any) -> None:
        nonlocal arrivals
        arrivals += 1
        seed = live[rng.randrange(len(live))]
        node = overlay.add_node()
        position[node.index] = len(live)
        live.append(node)
        overlay.join(node, [seed])
        world.at(world.t + sessions.sample(rng), depart, node)
        world.at(world.t + rng.expovariate(rate), arrive)

    for node in nodes:
        world.at(sessions.residual(rng), depart, node)
    rate = steady_arrival_rate(params["nodes"], sessions)
    world.at(rng.expovariate(rate), arrive)

    keys = [rng.randbytes(20) for _ in range(params["records"])]

    def publish(_: Any) -> None:
        for i, key in enumerate(keys):
            publisher = live[rng.randrange(len(live))]
            core = publisher.core
            record = core.create_record(key, b"v%d" % i, params["record_ttl"], 1, overlay.now)
            overlay.call(publisher, core.put_record(record, overlay.now), None)

    world.at(0.0, publish)

    probe = LookupProbe(overlay, EPOCH, k)
    reads = LookupProbe(overlay, EPOCH, k)
    start = params["warmup"]

    def refresh_truth(t: float) -> None:
        probe.space = IdSpace(live)

    world.every(params["sample_every"], refresh_truth, duration)

    def lookup(_: Any) -> None:
        probe.find(live[rng.randrange(len(live))], rng.randbytes(20))
        world.at(world.t + rng.expovariate(params["lookup_rate"]), lookup)

    def read(_: Any) -> None:
        reads.get(live[rng.randrange(len(live))], keys[rng.randrange(len(keys))])
        world.at(world.t + rng.expovariate(params["read_rate"]), read)

    if params["lookup_rate"] > 0:
        world.at(start, lookup)
    if params["read_rate"] > 0 and keys:
        world.at(start, read)

    population = Series("population", ["t", "live"])
    world.every(params["sample_every"], lambda t: population.add(t=t, live=len(live)), duration)
    world.run_until(duration + 3 * params["rpc_timeout"])

    return summarise(world, params, probe.samples, reads.samples, population, arrivals, departures)


def _window(samples: list[LookupSample], start: float, end: float) -> list[LookupSample]:
    return [s for s in samples if start <= s.started < end]


def summarise(
    world: World,
    params: dict[str, Any],
    lookups: list[LookupSample],
    reads: list[LookupSample],
    population: Series,
    arrivals: int,
    departures: int,
) -> Result:
    duration = params["duration"]
    period = params["sample_every"]
    lookups = [s for s in lookups if s.started < duration]
    reads = [s for s in reads if s.started < duration]
    series = Series(
        "over_time",
        ["t", "live", "lookups", "lookup_success", "lookup_p50_s", "reads", "availability"],
    )
    live_at = dict(zip(population.column("t"), population.column("live"), strict=True))
    t = 0.0
    while t < duration:
        window = _window(lookups, t, t + period)
        read_window = _window(reads, t, t + period)
        series.add(
            t=t,
            live=live_at.get(t),
            lookups=len(window),
            lookup_success=ratio(sum(s.success for s in window), len(window), 4),
            lookup_p50_s=rnd(percentile([s.latency for s in window], 50), 4),
            reads=len(read_window),
            availability=ratio(sum(s.success for s in read_window), len(read_window), 4),
        )
        t += period
    stats = world.overlay.stats
    sessions = Weibull(params["session_shape"], params["session_scale"])
    summary = {
        "nodes": params["nodes"],
        "churn": {
            "arrivals": arrivals,
            "departures": departures,
            "mean_session_s": rnd(sessions.mean, 3),
            "live_at_end": population.column("live")[-1] if population.rows else None,
        },
        "lookup": {
            "count": len(lookups),
            "success_rate": ratio(sum(s.success for s in lookups), len(lookups)),
            "closest_k_overlap": rnd(
                sum(s.overlap for s in lookups) / len(lookups) if lookups else None
            ),
            "latency_s": describe([s.latency for s in lookups]),
            "hops": describe([s.hops for s in lookups if s.hops is not None]),
            "hops_histogram": histogram(s.hops for s in lookups if s.hops is not None),
        },
        "records": {
            "keys": params["records"],
            "reads": len(reads),
            "availability": ratio(sum(s.success for s in reads), len(reads)),
            "latency_s": describe([s.latency for s in reads]),
        },
        "messages": {
            "sent": stats.sent,
            "delivered": stats.delivered,
            "undeliverable": stats.undeliverable,
            "lost": stats.lost,
        },
    }
    ts = series.column("t")
    plots = [
        Plot(
            "success_over_time",
            "Lookup success and record availability under churn",
            "simulated seconds",
            "share",
            [
                ("lookup success", ts, series.column("lookup_success")),  # type: ignore[list-item]
                ("record availability", ts, series.column("availability")),  # type: ignore[list-item]
            ],
        ),
        Plot(
            "latency_over_time",
            "Median lookup latency under churn",
            "simulated seconds",
            "seconds",
            [("p50", ts, series.column("lookup_p50_s"))],  # type: ignore[list-item]
        ),
    ]
    return Result(summary, [series, population], plots, world.engine.events)
