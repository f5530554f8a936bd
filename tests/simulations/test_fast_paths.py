"""The fast paths on the five-region model: the floor a lookup is measured against, the
warm start of proximity tables, and fast runs against the baseline in the same test."""

from __future__ import annotations

import random

from dht.core import DHTConfig, Event, LookupCompleted
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.observe import HopCounter
from simulations.oracle import IdSpace, fill_near_contacts, fill_routing_tables
from simulations.overlay import EPOCH, Overlay, SimNode
from simulations.scenario import make_scenario, run


def warm(count: int, config: DHTConfig, seed: int = 3) -> Overlay:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(seed), NetworkModel(jitter_ms=0.0), config)
    nodes = [overlay.add_node() for _ in range(count)]
    fill_routing_tables(nodes, IdSpace(nodes), overlay.nodes, config.k, random.Random(seed))
    return overlay


def test_a_lookups_floor_is_the_round_trips_along_its_query_chain() -> None:
    overlay = warm(400, DHTConfig())
    network = overlay.network
    counter = HopCounter(lambda: overlay.now)
    overlay.observers.append(counter)
    rng = random.Random(4)
    for _ in range(20):
        origin = overlay.nodes[rng.randrange(400)]
        target = rng.randbytes(20)
        hops, floor, latency = measured(overlay, counter, origin, target)
        assert hops is not None and floor is not None
        # No jitter: every round trip is twice a one-way latency of the matrix.
        trips = [2 * network.base_delay(origin.region, r) for r in range(5)]
        assert hops * min(trips) - 1e-6 <= floor <= hops * max(trips) + 1e-6
        assert floor <= latency + 1e-6


def measured(
    overlay: Overlay, counter: HopCounter, origin: SimNode, target: bytes
) -> tuple[int | None, float | None, float]:
    counter.track(origin.addr, target)
    started = overlay.now
    got: list[tuple[int | None, float | None, float]] = []

    def done(node: SimNode, event: Event) -> None:
        assert isinstance(event, LookupCompleted)
        hops, floor = counter.finish_with_floor(node.addr, target, event.contacts[0].addr)
        got.append((hops, floor, overlay.now - started))

    overlay.find_node(origin, target, done)
    overlay.engine.run(until=overlay.now + 10)
    (result,) = got
    return result


def test_the_warm_start_of_proximity_tables_swaps_far_residents_for_near_ones() -> None:
    config = DHTConfig().with_fast_paths()
    overlay = warm(3000, config)
    network = overlay.network
    by_id = {n.node_id: n for n in overlay.nodes}

    def rtt(a: SimNode, b: SimNode) -> float:
        return 2 * network.base_delay(a.region, b.region)

    def mean_far_bucket_rtt(node: SimNode) -> float:
        buckets = [b for b in node.core.table.buckets.values() if len(b.contacts) >= config.k]
        trips = [rtt(node, by_id[c]) for b in buckets for c in b.contacts]
        return sum(trips) / len(trips)

    sample = overlay.nodes[:50]
    before = [mean_far_bucket_rtt(n) for n in sample]
    space = IdSpace(overlay.nodes)
    swaps = fill_near_contacts(
        sample, space, overlay.nodes, config.k, random.Random(5), rtt, config.pns_share
    )
    after = [mean_far_bucket_rtt(n) for n in sample]
    assert swaps > 0 and sum(after) < 0.8 * sum(before)
    for node in sample:
        table = node.core.table
        for bucket in table.buckets.values():
            near = [c for c in bucket.contacts if c in table.near]
            assert len(near) <= int(config.pns_share * config.k)
            assert len(bucket.contacts) <= config.k


def growth(fast: bool) -> dict[str, object]:
    params = {
        "nodes": 600,
        "prefill": 590,
        "lookups": 60,
        "lookup_rate": 50.0,
        "settle": 5.0,
        "reads": 60,
        "read_rate": 50.0,
        "fast": fast,
    }
    summary: dict[str, object] = run(make_scenario("growth", params)).summary
    return summary


def test_fast_lookups_and_reads_beat_the_baseline_on_the_five_region_model() -> None:
    base, fast = growth(False), growth(True)
    for summary in (base, fast):
        assert summary["lookup"]["success_rate"] == 1.0  # type: ignore[index]
        assert summary["reads"]["success_rate"] == 1.0  # type: ignore[index]
    latency = {n: s["lookup"]["latency_s"]["p50"] for n, s in (("base", base), ("fast", fast))}  # type: ignore[index]
    reads = {n: s["reads"]["latency_s"]["p50"] for n, s in (("base", base), ("fast", fast))}  # type: ignore[index]
    assert latency["fast"] < 0.6 * latency["base"]
    assert reads["fast"] < 0.3 * reads["base"]
    floor = fast["lookup"]["floor_s"]["p50"]  # type: ignore[index]
    assert 0 < floor <= latency["fast"]
