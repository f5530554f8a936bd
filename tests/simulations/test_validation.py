"""The simulator against a real loopback mesh: same ids, same k and alpha, same lookups.

Nodes get the same Ed25519 seeds in both worlds and join one after another
through the first node; then the same origins look up the same targets. The
hop counts (simulations.observe: depth of the closest contact found, the same
code on both sides) and the success rates (the true closest node was found)
must agree within the stated tolerances. The simulated network is one region
with loopback-like latency, so timing does not favour either side.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from dht.core import DHTConfig, Event, LookupCompleted
from dht.identity import Identity
from dht.ids import to_int
from dht.node import DHTNode
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.observe import HopCounter, attach_to_core
from simulations.overlay import EPOCH, Overlay, SimNode

pytestmark = pytest.mark.integration

CONFIG = DHTConfig()  # k = 20, alpha = 3 in both worlds
LOOKUPS = 100
HOPS_MEAN_TOLERANCE = 0.35
"""Mean hop counts may differ by this much (hops are small integers, mean about 1.5-2.5)."""
HOPS_TV_TOLERANCE = 0.25
"""Total variation distance between the two hop-count distributions."""
SUCCESS_TOLERANCE = 0.05
LOOPBACK = NetworkModel(regions=("lo",), latency_ms=((0.1,),), region_weights=(1.0,), jitter_ms=0.1)


def seeds(count: int) -> list[bytes]:
    rng = random.Random(count)
    return [rng.randbytes(32) for _ in range(count)]


def workload(count: int) -> list[tuple[int, bytes]]:
    rng = random.Random(1000 + count)
    return [(rng.randrange(count), rng.randbytes(20)) for _ in range(LOOKUPS)]


def truth(ids: list[bytes], origin: int, target: bytes) -> bytes:
    goal = to_int(target)
    return min((i for n, i in enumerate(ids) if n != origin), key=lambda i: to_int(i) ^ goal)


def simulate(count: int) -> tuple[list[int], list[bool]]:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(count), LOOPBACK, CONFIG, identities="ed25519")
    keys = seeds(count)
    first = overlay.add_node(identity=Identity.from_seed(keys[0]))

    def join_next(node: SimNode | None, event: Event | None) -> None:
        if len(overlay.nodes) < count:
            nxt = overlay.add_node(identity=Identity.from_seed(keys[len(overlay.nodes)]))
            overlay.join(nxt, [first], join_next)

    join_next(None, None)
    engine.run(until=engine.now + 600)
    assert len(overlay.nodes) == count
    engine.run(until=engine.now + 5)  # let the last refreshes finish, as the mesh sleeps
    counter = HopCounter()
    overlay.observers.append(counter)
    ids = [n.node_id for n in overlay.nodes]
    hops: list[int] = []
    success: list[bool] = []
    for origin, target in workload(count):
        node = overlay.nodes[origin]
        counter.track(node.addr, target)
        found: list[LookupCompleted] = []
        overlay.find_node(node, target, lambda n, e, out=found: out.append(e))  # type: ignore[misc]
        engine.run(until=engine.now + 10)
        (event,) = found
        hop = counter.finish(node.addr, target, event.contacts[0].addr)
        assert hop is not None
        hops.append(hop)
        success.append(event.contacts[0].node_id == truth(ids, origin, target))
    return hops, success


async def loopback(count: int) -> tuple[list[int], list[bool]]:
    keys = seeds(count)
    nodes: list[DHTNode] = []
    try:
        first = await DHTNode.start(
            "127.0.0.1", 0, identity=Identity.from_seed(keys[0]), config=CONFIG
        )
        nodes.append(first)
        for i in range(1, count):
            node = await asyncio.wait_for(
                DHTNode.start(
                    "127.0.0.1",
                    0,
                    bootstrap=[first.address],
                    identity=Identity.from_seed(keys[i]),
                    config=CONFIG,
                    rng=random.Random(i),
                ),
                10,
            )
            nodes.append(node)
        await asyncio.sleep(5)  # the refresh lookups that follow each join
        counter = HopCounter()
        for node in nodes:
            attach_to_core(counter, node.core, node.address)
        ids = [n.node_id for n in nodes]
        hops: list[int] = []
        success: list[bool] = []
        for origin, target in workload(count):
            node = nodes[origin]
            counter.track(node.address, target)
            contacts = await asyncio.wait_for(node.find_node(target), 10)
            hop = counter.finish(node.address, target, contacts[0].addr)
            assert hop is not None
            hops.append(hop)
            success.append(contacts[0].node_id == truth(ids, origin, target))
        return hops, success
    finally:
        for node in nodes:
            node.abort()


def distribution(hops: list[int]) -> dict[int, float]:
    return {h: hops.count(h) / len(hops) for h in set(hops)}


@pytest.mark.parametrize("count", [64, 256])
async def test_simulated_and_real_lookups_agree(count: int) -> None:
    sim_hops, sim_success = simulate(count)
    real_hops, real_success = await loopback(count)
    sim_mean, real_mean = sum(sim_hops) / LOOKUPS, sum(real_hops) / LOOKUPS
    a, b = distribution(sim_hops), distribution(real_hops)
    tv = sum(abs(a.get(h, 0.0) - b.get(h, 0.0)) for h in set(a) | set(b)) / 2
    sim_rate, real_rate = sum(sim_success) / LOOKUPS, sum(real_success) / LOOKUPS
    report = (
        f"n={count} hops sim {sim_mean:.2f} real {real_mean:.2f} tv {tv:.2f}; "
        f"success sim {sim_rate:.2f} real {real_rate:.2f}"
    )
    print(report)
    assert abs(sim_mean - real_mean) <= HOPS_MEAN_TOLERANCE, report
    assert tv <= HOPS_TV_TOLERANCE, report
    assert abs(sim_rate - real_rate) <= SUCCESS_TOLERANCE, report
