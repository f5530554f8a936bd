"""The real DHT cores on the simulated transport: joins, lookups, both code paths agree."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dht.core import Bootstrapped, DHTConfig, Event, LookupCompleted
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.observe import HopCounter
from simulations.oracle import IdSpace, _bucket_ranges, distinct_indices, fill_routing_tables
from simulations.overlay import EPOCH, Overlay, SimNode

ROOT = Path(__file__).resolve().parents[2]


def build(count: int, transport: str = "message", seed: int = 1) -> Overlay:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(seed), NetworkModel(), DHTConfig(), transport)
    first = overlay.add_node()
    for i in range(1, count):
        node = overlay.add_node()
        engine.schedule(EPOCH + i * 0.3, lambda n: overlay.join(n, [first]), node)
    engine.run(until=EPOCH + count * 0.3 + 30)
    return overlay


def test_nodes_join_and_a_lookup_finds_the_true_closest() -> None:
    overlay = build(40)
    assert all(len(n.core.table) >= 20 for n in overlay.nodes)
    origin = overlay.nodes[5]
    target = random.Random(9).randbytes(20)
    results: list[Event] = []
    overlay.find_node(origin, target, lambda node, event: results.append(event))
    overlay.engine.run(until=overlay.now + 10)
    (event,) = results
    assert isinstance(event, LookupCompleted)
    space = IdSpace(n for n in overlay.nodes if n is not origin)
    truth = [overlay.nodes[i].node_id for i in space.closest(int.from_bytes(target), 20)]
    assert [c.node_id for c in event.contacts] == truth


def test_the_message_path_and_the_datagram_path_give_the_same_simulation() -> None:
    fast, slow = build(25, "message"), build(25, "bytes")
    assert fast.engine.events == slow.engine.events
    assert fast.stats == slow.stats
    for a, b in zip(fast.nodes, slow.nodes, strict=True):
        assert a.node_id == b.node_id
        assert sorted(c.node_id for c in a.core.table.contacts()) == sorted(
            c.node_id for c in b.core.table.contacts()
        )
        assert a.core.counters == b.core.counters


def test_contacts_are_shared_objects_not_copies() -> None:
    overlay = build(30)
    for node in overlay.nodes:
        for contact in node.core.table.contacts():
            assert contact is overlay.by_id[contact.node_id].contact


def test_a_killed_node_stops_answering_and_lookups_route_around_it() -> None:
    overlay = build(30)
    victim = overlay.nodes[3]
    overlay.kill(victim)
    done: list[Event] = []
    overlay.find_node(overlay.nodes[7], victim.node_id, lambda n, e: done.append(e))
    overlay.engine.run(until=overlay.now + 20)
    (event,) = done
    assert isinstance(event, LookupCompleted)
    assert victim.node_id not in {c.node_id for c in event.contacts}
    assert overlay.stats.undeliverable > 0


def test_loss_is_applied_and_the_protocol_retransmits() -> None:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(3), NetworkModel(loss=0.2))
    first = overlay.add_node()
    nodes = [overlay.add_node() for _ in range(10)]
    joined: list[SimNode] = []
    for node in nodes:
        overlay.join(node, [first], lambda n, e: joined.append(n))
    engine.run(until=EPOCH + 60)
    assert overlay.stats.lost > 0
    assert len(joined) == 10


@given(st.integers(0, 10**6), st.integers(1, 10**6), st.integers(1, 40), st.integers(0, 2**32))
def test_distinct_indices_are_distinct_in_range_and_sorted(
    lo: int, span: int, count: int, seed: int
) -> None:
    count = min(count, span)
    got = distinct_indices(random.Random(seed), lo, lo + span, count)
    assert len(got) == len(set(got)) == count
    assert got == sorted(got) and all(lo <= i < lo + span for i in got)


def test_distinct_indices_are_uniform() -> None:
    rng = random.Random(5)
    hits = [0] * 100
    for _ in range(2000):
        for i in distinct_indices(rng, 0, 100, 10):
            hits[i] += 1
    assert min(hits) > 140 and max(hits) < 270  # 200 expected each, 5 sigma is about 70


def test_oracle_tables_hold_k_contacts_per_bucket_up_to_the_population() -> None:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(4))
    nodes = [overlay.add_node() for _ in range(300)]
    space = IdSpace(nodes)
    fill_routing_tables(nodes, space, overlay.nodes, 20, random.Random(5))
    for node in nodes[:20]:
        ideal = space.ideal_table_size(int.from_bytes(node.node_id), 20)
        assert len(node.core.table) == ideal


@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=2**32))
def test_bucket_ranges_walked_up_are_the_bucket_populations(count: int, seed: int) -> None:
    rng = random.Random(seed)
    space = IdSpace([])
    space.ids = sorted({rng.getrandbits(160) >> rng.randrange(4) for _ in range(count)})
    for own in [*space.ids[:5], *space.ids[-5:], rng.getrandbits(160)]:  # members or not
        walked = [(b, lo, hi) for b, lo, hi in _bucket_ranges(space, own)]
        first = space.nearest_bucket(own)
        expected = [(b, *space.bucket_population(own, b)) for b in range(first, 160)]
        assert walked == expected


def test_hop_counts_of_a_lookup() -> None:
    overlay = build(60)
    counter = HopCounter()
    overlay.observers.append(counter)
    origin = overlay.nodes[10]
    target = random.Random(11).randbytes(20)
    counter.track(origin.addr, target)
    got: list[int | None] = []

    def done(node: SimNode, event: Event) -> None:
        assert isinstance(event, LookupCompleted)
        got.append(counter.finish(node.addr, target, event.contacts[0].addr))

    overlay.find_node(origin, target, done)
    overlay.engine.run(until=overlay.now + 10)
    assert got and got[0] is not None and 1 <= got[0] <= 4


def test_a_joining_node_emits_bootstrapped() -> None:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(6))
    first, second = overlay.add_node(), overlay.add_node()
    events: list[Event] = []
    overlay.join(second, [first], lambda n, e: events.append(e))
    engine.run(until=EPOCH + 10)
    assert isinstance(events[0], Bootstrapped) and events[0].contacts == 1


SCRIPT = """
import random
from simulations.scenario import make_scenario, run, summary_json
print(summary_json(run(make_scenario("growth", {"nodes": 60, "lookups": 30, "settle": 5.0}))))
"""


def test_a_summary_is_byte_identical_across_processes_and_hash_seeds() -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    assert b'"success_rate"' in outputs[0]
