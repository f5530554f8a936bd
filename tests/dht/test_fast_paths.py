"""The DHT's fast paths (docs/protocol.md 1.10), each on virtual time against the
behaviour without it: the final sweep, quorum reads, parallel pages, per-contact
deadlines, proximity neighbour selection, the closest-set cache, majority stores."""

from __future__ import annotations

import random
from dataclasses import replace

from dht.core import DHTConfig, DHTCore, LookupCompleted, RecordsFound, RecordsStored
from dht.identity import Identity
from dht.ids import key_for, to_int
from dht.lookup import Lookup
from dht.reads import FULL, MAJORITY, RecordRead
from dht.records import Record
from dht.routing import Contact, RoutingTable

from .memnet import MemoryNetwork, true_closest

BASE = DHTConfig(maintenance_interval=5.0, republish_interval=60.0, bucket_refresh_interval=60.0)
FAST = BASE.with_fast_paths()
LEGACY = BASE.without_fast_paths()


def contact(i: int, host: str | None = None) -> Contact[tuple[str, int]]:
    node_id = i.to_bytes(20, "big")
    return Contact.make(node_id, (host or f"10.{i >> 8 & 255}.{i & 255}.1", 4000))


def record(publisher: Identity, key: bytes, seq: int, now: float, value: bytes = b"v") -> Record:
    return Record.create(publisher, key, value, seq, int(now + 600))


def timed(net: MemoryNetwork, core: DHTCore, op: int) -> tuple[object, float]:
    start = net.now
    event = net.wait(core, op)
    return event, net.now - start


# --- the final sweep (dht/lookup.py) ----------------------------------------------------


def test_a_lookup_that_stops_getting_nearer_asks_its_k_closest_at_once() -> None:
    def run(sweep_after: int) -> list[int]:
        lookup: Lookup[tuple[str, int]] = Lookup(0, 8, 2, b"\xff" * 20, sweep_after=sweep_after)
        lookup.add(contact(i) for i in range(1, 31))
        widths = [len(lookup.next_queries())]
        for asked in (1, 2):  # two answers that bring nothing nearer
            lookup.answered(asked.to_bytes(20, "big"), [contact(40 + asked)])
            widths.append(len(lookup.next_queries()))
        return widths

    assert run(0) == [2, 1, 1]  # alpha at a time
    assert run(2) == [2, 1, 5]  # converged: the rest of the 8 nearest (4..8) at once


def test_the_final_sweep_asks_no_one_beyond_the_k_nearest() -> None:
    lookup: Lookup[tuple[str, int]] = Lookup(0, 4, 1, b"\xff" * 20, sweep_after=1)
    lookup.add(contact(i) for i in range(1, 21))
    (first,) = lookup.next_queries()
    lookup.answered(first.node_id, [])
    asked = {c.node_id for c in lookup.next_queries()}
    assert asked == {i.to_bytes(20, "big") for i in (2, 3, 4)}


def test_a_slow_contact_nearer_than_the_kth_answer_holds_a_sweeping_lookup() -> None:
    def run(sweep_after: int) -> tuple[bool, bool]:
        lookup: Lookup[tuple[str, int]] = Lookup(0, 3, 3, b"\xff" * 20, sweep_after=sweep_after)
        lookup.add(contact(i) for i in (2, 3, 4))
        lookup.next_queries()
        lookup.answered((2).to_bytes(20, "big"), [contact(1)])  # a nearer one
        assert [c.node_id for c in lookup.next_queries()] == [(1).to_bytes(20, "big")]
        lookup.slow((1).to_bytes(20, "big"))  # the nearest: its datagram was lost
        for i in (3, 4):
            lookup.answered(i.to_bytes(20, "big"), [])
        done_while_slow = lookup.finished
        lookup.abandoned((1).to_bytes(20, "big"))
        return done_while_slow, lookup.finished

    assert run(0) == (True, True)  # before: the nearest node dropped from the result
    assert run(1) == (False, True)  # waits for its retransmission, not past abandonment


def test_the_sweep_finds_the_true_closest_in_fewer_round_trips() -> None:
    results = {}
    for name, config in (("legacy", LEGACY), ("fast", FAST)):
        net = MemoryNetwork(seed=21)
        nodes = net.build_mesh(60, config)
        rng = random.Random(5)
        times = []
        for _ in range(10):
            source, target = rng.choice(nodes), rng.randbytes(20)
            event, elapsed = timed(net, source, source.find_node(target, net.now))
            assert isinstance(event, LookupCompleted)
            assert [c.node_id for c in event.contacts] == true_closest(nodes, target, 20, source)
            times.append(elapsed)
        results[name] = sum(times) / len(times)
    # 20 ms round trips: about k / alpha rounds before, two or three with the sweep.
    assert results["fast"] < 0.5 * results["legacy"]


# --- quorum reads (dht/reads.py) -------------------------------------------------------


def answer(read: RecordRead, node: int, host: str, shown: dict[bytes, int]) -> bytes:
    node_id = node.to_bytes(20, "big")
    read.first_page(node_id, host, shown, lied=False, more=False)
    return node_id


def test_answers_showing_an_older_seq_never_make_a_quorum() -> None:
    alice = Identity.from_seed(b"a" * 32)
    key = key_for("k")
    newest = {alice.public_key: record(alice, key, 2, 0.0)}
    read = RecordRead(3, 1)
    nearest = {answer(read, i, f"192.0.2.{i}", {alice.public_key: 1}) for i in range(5)}
    assert not read.agreed(newest, nearest, converged=True)
    nearest |= {answer(read, 10 + i, f"192.0.2.{10 + i}", {alice.public_key: 2}) for i in range(2)}
    assert not read.agreed(newest, nearest, converged=True)
    nearest.add(answer(read, 20, "192.0.2.20", {alice.public_key: 2}))
    assert read.agreed(newest, nearest, converged=True)


def test_one_host_under_many_ids_is_one_vote() -> None:
    alice = Identity.from_seed(b"a" * 32)
    found = {alice.public_key: record(alice, key_for("k"), 1, 0.0)}
    read = RecordRead(3, 1)
    nearest = {answer(read, i, "198.51.100.7", {alice.public_key: 1}) for i in range(6)}
    assert not read.agreed(found, nearest, converged=True)


def test_only_answers_from_the_k_nearest_count() -> None:
    alice = Identity.from_seed(b"a" * 32)
    found = {alice.public_key: record(alice, key_for("k"), 1, 0.0)}
    read = RecordRead(3, 1)
    far = {answer(read, i, f"192.0.2.{i}", {alice.public_key: 1}) for i in range(3)}
    assert not read.agreed(found, set(), converged=True)
    assert read.agreed(found, far, converged=True)


def test_an_empty_key_is_answered_early_only_when_asked_and_once_converged() -> None:
    read = RecordRead(3, 1)
    nearest = {answer(read, i, f"192.0.2.{i}", {}) for i in range(3)}
    assert not read.agreed({}, nearest, converged=True)  # by default: the full lookup
    quick = RecordRead(3, 1, empty_early=True)
    nearest = {answer(quick, i, f"192.0.2.{i}", {}) for i in range(3)}
    assert not quick.agreed({}, nearest, converged=False)  # the nearest may be far away
    assert quick.agreed({}, nearest, converged=True)


def test_empty_answers_never_vouch_for_a_paged_key() -> None:
    """Nodes that swallow stores answer "nothing, and that is all": three first pages
    that agree with what is known so far still end nothing until the key is whole."""
    alice = Identity.from_seed(b"a" * 32)
    found = {alice.public_key: record(alice, key_for("k"), 1, 0.0)}
    read = RecordRead(3, 1)
    nearest = set()
    for i in range(5):
        node_id = (100 + i).to_bytes(20, "big")
        read.first_page(node_id, f"198.51.100.{i}", {}, lied=False, more=False)
        nearest.add(node_id)
    for i in range(3):  # first pages of a paged key, each agreeing up to where it reached
        node_id = i.to_bytes(20, "big")
        read.first_page(node_id, f"192.0.2.{i}", {alice.public_key: 1}, lied=False, more=True)
        nearest.add(node_id)
    assert not read.agreed(found, nearest, converged=True)
    read.complete = True  # a holder paged to the end
    assert read.agreed(found, nearest, converged=True)


def test_a_read_is_not_fooled_by_near_nodes_that_swallowed_the_records() -> None:
    net = MemoryNetwork(seed=30)
    nodes = net.build_mesh(40, FAST)
    key = key_for("swallowed")
    items = [record(Identity.from_seed(bytes([i]) * 32), key, 1, net.now) for i in range(10)]
    reader = nodes[33]
    holders = sorted(
        (n for n in nodes if n is not reader), key=lambda n: to_int(n.node_id) ^ to_int(key)
    )
    publish_everywhere(holders[9:], items, net.now)  # the 9 nearest kept nothing
    event = net.wait(reader, reader.get_records(key, net.now))
    assert isinstance(event, RecordsFound)
    assert event.records == tuple(sorted(items, key=lambda r: r.publisher))


def test_a_liar_never_counts_and_full_and_majority_ask_for_more() -> None:
    alice = Identity.from_seed(b"a" * 32)
    found = {alice.public_key: record(alice, key_for("k"), 1, 0.0)}
    read = RecordRead(3, 1)
    liars = set()
    for i in range(3):
        node_id = i.to_bytes(20, "big")
        read.first_page(node_id, f"192.0.2.{i}", {alice.public_key: 1}, lied=True, more=False)
        liars.add(node_id)
    assert not read.agreed(found, liars, converged=True)
    full, majority = RecordRead(FULL, 1), RecordRead(MAJORITY, 1)
    nearest = {answer(full, i, f"192.0.2.{i}", {alice.public_key: 1}) for i in range(20)}
    for i in range(10):
        answer(majority, i, f"192.0.2.{i}", {alice.public_key: 1})
    assert not full.agreed(found, nearest, converged=True)
    assert not majority.agreed(found, nearest, converged=True)  # 10 of 20 is not over half
    answer(majority, 10, "192.0.2.10", {alice.public_key: 1})
    assert majority.agreed(found, nearest, converged=True)


def publish_everywhere(nodes: list[DHTCore], records: list[Record], now: float) -> None:
    for node in nodes:
        for item in records:
            node.records.put(item, now)


def test_a_read_answers_once_three_holders_agree() -> None:
    times = {}
    for name, config in (("legacy", LEGACY), ("fast", FAST)):
        net = MemoryNetwork(seed=22)
        nodes = net.build_mesh(50, config)
        key = key_for("agreed")
        item = record(nodes[3].identity, key, 1, net.now)
        publish_everywhere(nodes, [item], net.now)
        event, times[name] = timed(net, nodes[30], nodes[30].get_records(key, net.now))
        assert isinstance(event, RecordsFound) and event.records == (item,)
    assert times["fast"] < 0.5 * times["legacy"]


def test_a_forged_record_never_comes_back_from_a_quick_read() -> None:
    net = MemoryNetwork(seed=23)
    nodes = net.build_mesh(40, FAST)
    key = key_for("forged")
    item = record(nodes[3].identity, key, 1, net.now)
    publish_everywhere(nodes, [item], net.now)
    mallory = Identity.from_seed(b"m" * 32)
    good = record(mallory, key, 5, net.now)
    forged = Record(key, mallory.public_key, 5, good.expires_at, b"x", good.signature)
    for liar in nodes[:10]:  # a store that skips the checks: liars serve what they like
        liar.records._by_key.setdefault(key, {})[mallory.public_key] = forged
    event = net.wait(nodes[30], nodes[30].get_records(key, net.now))
    assert isinstance(event, RecordsFound) and event.records == (item,)


def test_a_majority_store_is_seen_by_a_majority_read_while_the_rest_is_in_flight() -> None:
    net = MemoryNetwork(seed=24)
    nodes = net.build_mesh(50, FAST)
    key = key_for("half way")
    writer, reader = nodes[5], nodes[40]
    holders = [c for c in nodes if c is not writer and c is not reader]
    holders.sort(key=lambda c: to_int(c.node_id) ^ to_int(key))
    for far in holders[:20:2]:  # half of the k closest sit 300 ms further away
        net.far[net.addr_of(far)] = 0.3
    item = record(writer.identity, key, 1, net.now)
    stored = net.wait(writer, writer.put_record(item, net.now, majority=True))
    assert isinstance(stored, RecordsStored) and 11 <= stored.stored < 20
    event = net.wait(reader, reader.get_records(key, net.now, quorum=MAJORITY))
    assert isinstance(event, RecordsFound) and event.records == (item,)


# --- parallel pages ----------------------------------------------------------------------


def test_segments_cover_the_rest_of_the_key_space() -> None:
    read = RecordRead(3, 4)
    last = (2**256 // 16).to_bytes(32, "big")  # a first page covered a sixteenth
    afters = read.plan(b"n" * 20, last)
    assert len(afters) == 4 and afters[0] == last
    starts = [int.from_bytes(a, "big") + 1 for a in afters]
    assert starts == sorted(starts) and read.starts[0] == 0
    for i, after in enumerate(afters):  # each segment's page ends past the next start
        end = starts[i + 1] - 1 if i + 1 < len(starts) else 2**256 - 1
        assert not read.complete
        assert not read.page_done(b"n" * 20, after, end.to_bytes(32, "big"), more=True)
    assert read.complete


def test_a_big_key_is_paged_in_parallel_and_read_whole() -> None:
    times = {}
    for name, config in (("one", FAST.without_fast_paths()), ("parallel", FAST)):
        net = MemoryNetwork(seed=25)
        nodes = net.build_mesh(30, config)
        key = key_for("crowded layer")
        items = [record(Identity.from_seed(bytes([i]) * 32), key, 1, net.now) for i in range(40)]
        publish_everywhere(nodes, items, net.now)
        event, times[name] = timed(net, nodes[20], nodes[20].get_records(key, net.now))
        assert isinstance(event, RecordsFound)
        assert event.records == tuple(sorted(items, key=lambda r: r.publisher))
    assert times["parallel"] < 0.5 * times["one"]


# --- per-contact deadlines ------------------------------------------------------------


def bare_core(config: DHTConfig) -> DHTCore:
    return DHTCore(Identity.from_seed(b"c" * 32), random.Random(1), 1000.0, config)


def first_deadline(core: DHTCore, now: float) -> float:
    core.find_node(b"\x00" * 20, now)
    timer = core.get_timer()
    assert timer is not None
    return timer - now


def test_a_request_to_a_measured_contact_is_late_after_its_own_round_trip() -> None:
    deadlines = {}
    for name, config in (("legacy", LEGACY), ("fast", FAST)):
        core = bare_core(config)
        near = contact(1)
        core.table.add(near)
        for _ in range(10):  # the node's other samples: far hosts
            core.round_trips.add(0.3)
        for rtt in (0.020, 0.022, 0.021, 0.020):
            core.table.observe_rtt(near.node_id, rtt)
        deadlines[name] = first_deadline(core, 1000.0)
    assert 0.3 <= deadlines["legacy"] <= 0.4  # the 0.95 quantile of everyone's
    assert 0.049 <= deadlines["fast"] <= 0.06  # srtt + 4 rttvar, at least slow_min


def test_a_stranger_may_be_far_whatever_the_near_samples_say() -> None:
    core = bare_core(FAST)
    core.table.add(contact(1))  # never measured
    for _ in range(20):
        core.round_trips.add(0.016)
    assert 2 * 0.016 <= first_deadline(core, 1000.0) <= 0.06


# --- proximity neighbour selection (dht/routing.py) ------------------------------------


def full_table(k: int = 4) -> tuple[RoutingTable[tuple[str, int]], list[Contact[tuple[str, int]]]]:
    table: RoutingTable[tuple[str, int]] = RoutingTable(b"\x00" * 20, k)
    top = 1 << 159
    residents = [contact(top + i, f"203.0.{i}.1") for i in range(k)]
    for resident in residents:
        table.add(resident)
    for i, resident in enumerate(residents):
        table.observe_rtt(resident.node_id, 0.1 + 0.1 * i)  # the last one is slowest
    return table, residents


def test_a_much_nearer_node_takes_the_slowest_residents_place() -> None:
    table, residents = full_table()
    newcomer = contact((1 << 159) + 100, "198.51.100.1")
    assert table.proximity_victim(newcomer, 0.3, 0.5) is None  # not twice as near
    assert table.proximity_swap(newcomer, 0.02, 0.5) == residents[-1]
    assert newcomer.node_id in table and residents[-1].node_id not in table
    bucket = table.bucket_for(newcomer.num)
    assert residents[-1].node_id in bucket.replacements  # back if the newcomer fails


def test_proximity_holds_at_most_its_share_and_one_place_per_network() -> None:
    table, _ = full_table(4)
    first = contact((1 << 159) + 100, "198.51.100.1")
    same_net = contact((1 << 159) + 101, "198.51.100.2")
    other = contact((1 << 159) + 102, "192.0.2.1")
    third = contact((1 << 159) + 103, "203.0.113.1")
    assert table.proximity_swap(first, 0.01, 0.5) is not None
    assert table.proximity_victim(same_net, 0.01, 0.5) is None  # one place per /24
    assert table.proximity_swap(other, 0.01, 0.5) is not None
    assert table.proximity_victim(third, 0.01, 0.5) is None  # half of 4 places taken


def test_an_unmeasured_resident_is_never_displaced() -> None:
    table: RoutingTable[tuple[str, int]] = RoutingTable(b"\x00" * 20, 2)
    for i in range(2):
        table.add(contact((1 << 159) + i, f"203.0.{i}.1"))
    assert table.proximity_victim(contact((1 << 159) + 9, "192.0.2.1"), 0.001, 1.0) is None


def test_a_full_bucket_fills_with_near_nodes_through_lookups() -> None:
    far_share = {}
    small = DHTConfig(k=4, maintenance_interval=5.0, bucket_refresh_interval=60.0)
    for name, config in (("legacy", small), ("fast", small.with_fast_paths())):
        net = MemoryNetwork(seed=26)
        rng = random.Random(8)
        nodes = [net.add_node(config) for _ in range(60)]
        for node in nodes[1:]:
            if rng.random() < 0.5:
                net.far[net.addr_of(node)] = 0.15
            net.wait(node, node.bootstrap([net.addr_of(nodes[0])], net.now))
        observer = nodes[1]
        net.far.pop(net.addr_of(observer), None)  # the observer itself sits near
        for _ in range(30):
            net.wait(observer, observer.find_node(rng.randbytes(20), net.now))
        held = observer.table.contacts()
        far_share[name] = sum(net.addr_of_id(c.node_id) in net.far for c in held) / len(held)
        if name == "fast":
            assert observer.counters["table.proximity"] > 0
    assert far_share["fast"] < far_share["legacy"]


# --- the closest-set cache and direct stores ---------------------------------------------


def test_a_put_right_after_a_read_of_its_key_stores_without_a_lookup() -> None:
    sent = {}
    for name, config in (("legacy", LEGACY), ("fast", FAST)):
        net = MemoryNetwork(seed=27)
        nodes = net.build_mesh(40, config)
        writer, key = nodes[8], key_for("read then write")
        net.wait(writer, writer.get_records(key, net.now, quorum=FULL))
        before = writer.counters["rpc.out.FindNode"] + writer.counters["rpc.out.FindRecords"]
        item = record(writer.identity, key, 1, net.now)
        stored = net.wait(writer, writer.put_record(item, net.now))
        assert isinstance(stored, RecordsStored) and stored.stored >= 20
        after = writer.counters["rpc.out.FindNode"] + writer.counters["rpc.out.FindRecords"]
        sent[name] = after - before
        holders = {n.node_id for n in nodes if item in n.local_records(key, net.now)}
        assert set(true_closest(nodes, key, 20, writer)) <= holders | {writer.node_id}
    assert sent["legacy"] > 0 and sent["fast"] == 0


def test_a_put_during_a_read_of_its_key_follows_that_reads_walk() -> None:
    net = MemoryNetwork(seed=28)
    nodes = net.build_mesh(40, FAST)
    writer, key = nodes[9], key_for("read, then write while it walks")
    publish_everywhere(nodes, [record(nodes[2].identity, key, 1, net.now)], net.now)
    net.wait(writer, writer.get_records(key, net.now))  # answered at its quorum
    assert any(op.target == key for op in writer._operations.values())  # still walking
    asked = writer.counters["rpc.out.FindNode"] + writer.counters["rpc.out.FindRecords"]
    item = record(writer.identity, key, 1, net.now)
    stored = net.wait(writer, writer.put_record(item, net.now))
    assert isinstance(stored, RecordsStored) and stored.stored >= 20
    assert writer.counters["put.follows"] == 1
    # The read's walk went on as it would have; the put added no walk of its own.
    walked = writer.counters["rpc.out.FindNode"] + writer.counters["rpc.out.FindRecords"]
    assert walked - asked < 20
    holders = {n.node_id for n in nodes if item in n.local_records(key, net.now)}
    assert set(true_closest(nodes, key, 20, writer)) <= holders | {writer.node_id}


def walk_with_far_holders(seed: int, name: str) -> tuple[MemoryNetwork, list[DHTCore], bytes]:
    """A mesh where a third of the key's k closest sit 300 ms further away, and a read of
    the key at `nodes[9]` that answered at its quorum and still walks."""
    net = MemoryNetwork(seed=seed)
    nodes = net.build_mesh(50, FAST)
    writer, key = nodes[9], key_for(name)
    holders = [c for c in nodes if c is not writer]
    holders.sort(key=lambda c: to_int(c.node_id) ^ to_int(key))
    for far in holders[1:20:3]:
        net.far[net.addr_of(far)] = 0.3
    publish_everywhere(nodes, [record(nodes[2].identity, key, 1, net.now)], net.now)
    net.wait(writer, writer.get_records(key, net.now))  # answered at its quorum
    assert any(op.target == key for op in writer._operations.values())  # still walking
    return net, nodes, key


def test_a_majority_put_following_a_walk_is_not_held_by_it_and_a_full_read_sees_it() -> None:
    """1.10.1: counted in the set the walk converged on, as a direct put is in the cached
    one; any other put waits for the walk's end."""
    times: dict[bool, float] = {}
    for majority in (False, True):
        net, nodes, key = walk_with_far_holders(41, "follow, then check")
        writer = nodes[9]
        walk = next(op for op in writer._operations.values() if op.target == key)
        net.run_until(lambda w=walk: w.lookup is not None and w.lookup.converged)
        item = record(writer.identity, key, 2, net.now, b"w")
        started = net.now
        put = writer.put_record(item, net.now, majority)
        assert writer._operations[put].walk_open is not majority  # held by the walk or not
        stored = net.wait(writer, put)
        times[majority] = net.now - started
        assert isinstance(stored, RecordsStored) and writer.counters["put.follows"] == 1
        if majority:
            assert 11 <= stored.stored < 20  # done, the far holders' stores still on the way
        else:
            assert stored.stored >= 20
            assert not [op for op in writer._operations.values() if op.target == key]
        reader = next(n for n in nodes[30:] if net.addr_of(n) not in net.far)
        event = net.wait(reader, reader.get_records(key, net.now, quorum=FULL))
        assert isinstance(event, RecordsFound) and item in event.records
        net.run_for(2.0)  # the rest arrives: every one of the k closest holds it
        holders = {n.node_id for n in nodes if item in n.local_records(key, net.now)}
        assert set(true_closest(nodes, key, 20, writer)) <= holders | {writer.node_id}
    assert times[True] < times[False] - 0.25


def test_a_read_of_a_key_whose_walk_converged_sweeps_its_k_nearest_at_once() -> None:
    """1.10.2: another lookup of a key a converged walk is still on starts from that walk's
    k nearest (none of its answers reused) instead of walking there itself."""
    first: dict[str, int] = {}
    for name, config in (("walk", FAST), ("alone", replace(FAST, closest_ttl=0.0))):
        net = MemoryNetwork(seed=42)
        nodes = net.build_mesh(50, config)
        reader, key = nodes[9], key_for("read twice")
        publish_everywhere(nodes, [record(nodes[2].identity, key, 1, net.now)], net.now)
        net.wait(reader, reader.get_records(key, net.now))
        walking = [op for op in reader._operations.values() if op.target == key]
        assert bool(walking) == (name == "walk")
        if walking:
            walk = walking[0]
            net.run_until(lambda w=walk: w.lookup is not None and w.lookup.converged)
        item = record(nodes[3].identity, key, 1, net.now)
        publish_everywhere(nodes, [item], net.now)  # stored after the walk's answers
        op = reader.get_records(key, net.now, quorum=FULL)
        first[name] = sum(p.op == op for p in reader._pending.values())
        event = net.wait(reader, op)
        assert isinstance(event, RecordsFound) and item in event.records  # asked afresh
    assert first["alone"] == FAST.read_alpha and first["walk"] >= 19  # the k nearest at once


def test_a_put_of_a_key_nobody_walks_to_walks_itself() -> None:
    net = MemoryNetwork(seed=29)
    nodes = net.build_mesh(30, FAST)
    writer, key = nodes[4], key_for("a fresh key")
    stored = net.wait(writer, writer.put_record(record(writer.identity, key, 1, net.now), net.now))
    assert isinstance(stored, RecordsStored) and stored.stored >= 20
    assert writer.counters["put.follows"] == 0


def test_every_fast_path_is_off_by_default_and_on_together() -> None:
    assert DHTConfig() == DHTConfig().without_fast_paths()
    fast = DHTConfig().with_fast_paths()
    assert fast.sweep_after and fast.read_quorum and fast.pns and fast.contact_timeouts
    assert fast.closest_ttl > 0 and fast.store_quorum and fast.parallel_pages > 1
