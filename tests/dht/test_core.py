"""The DHT core on virtual time: lookups, dead contacts, records, abuse."""

from __future__ import annotations

import random

import pytest

from dht.core import (
    DHTConfig,
    DHTCore,
    LocalProtocolError,
    LookupCompleted,
    NodeVerified,
    RecordsFound,
    RecordsStored,
)
from dht.identity import Identity
from dht.ids import key_for
from dht.records import Record, Refusal
from dht.routing import Contact
from dht.wire import (
    FindNode,
    FindRecords,
    FindRecordsReply,
    FindValue,
    NodesReply,
    Store,
    StoreRecords,
    parse_frame,
    parse_reply,
    serialize_request,
    serialize_response,
)

from .memnet import LinkModel, MemoryNetwork, true_closest

FAST = DHTConfig(maintenance_interval=5.0, republish_interval=20.0, bucket_refresh_interval=30.0)


def lookup(net: MemoryNetwork, core: DHTCore, target: bytes) -> tuple[LookupCompleted, float]:
    start = net.now
    event = net.wait(core, core.find_node(target, net.now))
    assert isinstance(event, LookupCompleted)
    return event, net.now - start


def get(net: MemoryNetwork, core: DHTCore, key: bytes) -> list[Record]:
    event = net.wait(core, core.get_records(key, net.now))
    assert isinstance(event, RecordsFound)
    return list(event.records)


def put(net: MemoryNetwork, core: DHTCore, record: Record) -> RecordsStored:
    event = net.wait(core, core.put_record(record, net.now))
    assert isinstance(event, RecordsStored)
    return event


@pytest.fixture(scope="module")
def mesh_seed() -> int:
    return 11


def test_lookups_converge_to_the_true_k_closest(mesh_seed: int) -> None:
    net = MemoryNetwork(seed=mesh_seed)
    nodes = net.build_mesh(100, FAST)
    rng = random.Random(1)
    for _ in range(40):
        source = rng.choice(nodes)
        target = rng.randbytes(20)
        event, _ = lookup(net, source, target)
        assert [c.node_id for c in event.contacts] == true_closest(nodes, target, 20, source)


def test_lookups_survive_loss_duplication_and_reordering() -> None:
    link = LinkModel(latency=0.02, jitter=0.03, loss=0.05, duplicate=0.05)
    net = MemoryNetwork(seed=5, link=link)
    nodes = net.build_mesh(80, FAST)
    net.run_for(FAST.maintenance_interval)  # a node whose join was lost re-joins from its seed
    rng = random.Random(2)
    overlaps = []
    for _ in range(30):
        source = rng.choice(nodes)
        target = rng.randbytes(20)
        event, elapsed = lookup(net, source, target)
        truth = set(true_closest(nodes, target, 20, source))
        overlaps.append(len({c.node_id for c in event.contacts} & truth))
        # Loss costs at most a hard timeout's worth of waiting, never a hang.
        assert elapsed < 2 * FAST.rpc_timeout
    # ~10% of RPCs lose a datagram; one retransmission recovers most of them.
    assert min(overlaps) >= 17
    assert sum(overlaps) / len(overlaps) >= 19.0


def test_a_30_percent_dead_table_still_finishes_in_bounded_time() -> None:
    net = MemoryNetwork(seed=7)
    nodes = net.build_mesh(100, FAST)
    rng = random.Random(3)
    for victim in rng.sample(nodes, 30):
        net.kill(victim)
    live = net.live()
    live_ids = {n.node_id for n in live}
    elapsed_all = []
    for _ in range(30):
        source = rng.choice(live)
        event, elapsed = lookup(net, source, rng.randbytes(20))
        elapsed_all.append(elapsed)
        assert {c.node_id for c in event.contacts} <= live_ids, "a dead node counted as answering"
        assert len(event.contacts) >= 10
    # A dead contact costs one 'slow' deadline (about 4 RTTs), not a 2 s timeout per
    # round. Only a lookup left with fewer than k answers waits for hard timeouts.
    assert max(elapsed_all) < FAST.rpc_timeout + 0.5
    assert sorted(elapsed_all)[len(elapsed_all) // 2] < 0.5
    # Right after the deaths every reply is polluted with dead contacts; bucket
    # refreshes evict them, and lookups are exact again.
    net.run_for(FAST.bucket_refresh_interval * 2)
    for _ in range(20):
        source = rng.choice(live)
        target = rng.randbytes(20)
        event, elapsed = lookup(net, source, target)
        assert [c.node_id for c in event.contacts] == true_closest(live, target, 20, source)
        assert elapsed < 0.5


def test_records_expire_exactly_at_their_ttl() -> None:
    net = MemoryNetwork(seed=9)
    nodes = net.build_mesh(30, FAST)
    publisher, reader = nodes[3], nodes[17]
    key = key_for("expiring")
    record = publisher.create_record(key, b"v", ttl=100, seq=1, now=net.now)
    assert put(net, publisher, record).stored >= 20
    net.run_for(record.expires_at - net.now - 0.5)
    assert [r.value for r in get(net, reader, key)] == [b"v"]
    net.run_for(record.expires_at - net.now - 1e-6)
    holders = [n for n in nodes if n.local_records(key, net.now)]
    assert len(holders) >= 20
    net.run_for(1e-6)  # now == expires_at: gone everywhere, at once
    assert all(not n.local_records(key, net.now) for n in nodes)
    assert get(net, reader, key) == []


def test_a_key_holds_one_record_per_publisher_and_the_newest_seq_wins() -> None:
    net = MemoryNetwork(seed=13)
    nodes = net.build_mesh(40, FAST)
    key = key_for("room")
    for seq, core in enumerate(nodes[:5], start=1):
        put(net, core, core.create_record(key, b"first", ttl=600, seq=seq, now=net.now))
    newer = nodes[0].create_record(key, b"second", ttl=600, seq=10, now=net.now)
    assert put(net, nodes[0], newer).stored >= 20
    records = get(net, nodes[30], key)
    assert len(records) == 5
    mine = [r for r in records if r.publisher == nodes[0].identity.public_key]
    assert [(r.seq, r.value) for r in mine] == [(10, b"second")]


def test_a_seq_rollback_is_refused_by_every_node() -> None:
    net = MemoryNetwork(seed=15)
    nodes = net.build_mesh(40, FAST)
    key = key_for("rollback")
    publisher = nodes[5]
    put(net, publisher, publisher.create_record(key, b"new", ttl=600, seq=5, now=net.now))
    old = publisher.create_record(key, b"old", ttl=600, seq=4, now=net.now)
    result = put(net, publisher, old)
    assert result.stored == 0
    assert result.refusals and set(result.refusals) == {Refusal.STALE_SEQ}
    assert [(r.seq, r.value) for r in get(net, nodes[33], key)] == [(5, b"new")]


def test_forged_and_hijacking_records_are_refused_and_never_read() -> None:
    net = MemoryNetwork(seed=17)
    nodes = net.build_mesh(30, FAST)
    key = key_for("victim")
    victim, attacker = Identity.from_seed(b"v" * 32), Identity.from_seed(b"a" * 32)
    expires = int(net.now + 600)
    honest = Record.create(victim, key, b"honest", 1, expires)
    put(net, nodes[0], honest)
    flipped = bytes([honest.signature[0] ^ 1]) + honest.signature[1:]
    forged = Record(key, victim.public_key, 2, expires, b"forged", flipped)
    # The attacker signs a newer seq under the victim's publisher key with its own key.
    hijack_sig = Record.create(attacker, key, b"hijack", 3, expires).signature
    hijack = Record(key, victim.public_key, 3, expires, b"hijack", hijack_sig)
    attacker_addr = ("203.0.113.66", 6666)
    for addr in net.cores:
        for n, bad in enumerate((forged, hijack)):
            request = StoreRecords(b"\x01" * 20, (bad,))
            net.inject(serialize_request(bytes([n]) * 20, request), attacker_addr, addr)
    net.run_for(1.0)
    for core in nodes:
        assert core.counters["record.refused.bad_signature"] == 2
        assert [r.value for r in core.local_records(key, net.now)] in ([], [b"honest"])
    assert [r.value for r in get(net, nodes[20], key)] == [b"honest"]


def test_one_source_is_rate_limited_while_others_are_served() -> None:
    config = DHTConfig(request_rate=50.0, request_burst=100.0)
    net = MemoryNetwork(seed=19)
    nodes = net.build_mesh(20, config)
    target = nodes[4]
    flood = serialize_request(b"f" * 20, FindNode(b"\x02" * 20, b"\x03" * 20))
    for _ in range(1000):
        net.inject(flood, ("203.0.113.9", 9), net.addr_of(target))
    before = target.counters["rpc.in.FindNode"]
    net.run_for(0.5)
    assert target.counters["drop.rate_limited"] == 900
    served = target.counters["rpc.in.FindNode"] - before
    assert 100 <= served < 150  # the burst, plus the mesh's own refresh traffic
    # Other nodes' lookups through the flooded node still work.
    event, _ = lookup(net, nodes[9], target.node_id)
    assert event.contacts[0].node_id == target.node_id


def test_the_same_seed_gives_the_same_run() -> None:
    def run() -> tuple[list[bytes], dict[str, int]]:
        net = MemoryNetwork(seed=21, link=LinkModel(latency=0.01, jitter=0.02, loss=0.02))
        nodes = net.build_mesh(25, FAST)
        event, _ = lookup(net, nodes[3], b"\x42" * 20)
        return [c.node_id for c in event.contacts], dict(nodes[3].counters)

    assert run() == run()


def test_a_read_only_node_reads_and_writes_but_never_enters_routing_tables() -> None:
    net = MemoryNetwork(seed=23)
    nodes = net.build_mesh(20, FAST)
    client = net.add_node(DHTConfig(read_only=True))
    net.wait(client, client.bootstrap([net.addr_of(nodes[0])], net.now))
    key = key_for("cli")
    stored = put(net, client, client.create_record(key, b"x", ttl=60, seq=1, now=net.now))
    assert stored.stored >= 20
    assert [r.value for r in get(net, client, key)] == [b"x"]
    net.run_for(10)
    assert all(client.node_id not in n.table for n in nodes)
    assert not client.local_records(key, net.now), "a read-only node keeps no records"


def test_stock_store_and_find_value_keep_the_stock_shapes() -> None:
    net = MemoryNetwork(seed=25)
    nodes = net.build_mesh(10, FAST)
    node_addr = net.addr_of(nodes[2])
    client = ("203.0.113.5", 5000)
    key = b"k" * 20
    store = Store(b"\x07" * 20, key, "plain value")
    net.inject(serialize_request(b"s" * 20, store), client, node_addr)
    net.run_for(0.1)
    assert nodes[2].plain[key][0] == "plain value"
    request = FindValue(b"\x07" * 20, key)
    core = nodes[2]
    core.receive(serialize_request(b"v" * 20, request), client, net.now)
    (data, to), *_ = core.datagrams_to_send(net.now)
    assert to == client
    frame = parse_frame(data)
    assert not frame.is_request and frame.body == {"value": "plain value"}
    assert parse_reply(request, frame.body).value == "plain value"  # type: ignore[union-attr]


def test_a_key_with_more_records_than_one_reply_holds_is_paged() -> None:
    net = MemoryNetwork(seed=27)
    nodes = net.build_mesh(25, FAST)
    key = key_for("crowded")
    rng = random.Random(4)
    publishers = [Identity.from_seed(rng.randbytes(32)) for _ in range(60)]
    for n, identity in enumerate(publishers):
        value = rng.randbytes(150)
        # Through three home nodes: one source may bring a key only 32 new publishers.
        put(net, nodes[n % 3], Record.create(identity, key, value, 1, int(net.now + 600)))
    records = get(net, nodes[11], key)
    assert len(records) == 60
    assert {r.publisher for r in records} == {p.public_key for p in publishers}


def test_records_move_to_the_new_closest_nodes_when_holders_die() -> None:
    net = MemoryNetwork(seed=29)
    nodes = net.build_mesh(60, FAST)
    key = key_for("durable")
    put(net, nodes[1], nodes[1].create_record(key, b"d", ttl=3000, seq=1, now=net.now))
    holders = [n for n in nodes if n.local_records(key, net.now)]
    for victim in holders[:15]:
        net.kill(victim)
    net.run_for(FAST.republish_interval * 2.5)
    live = net.live()
    live_holders = [n for n in live if n.local_records(key, net.now)]
    closest = set(true_closest(live, key, 20, exclude=None))  # type: ignore[arg-type]
    assert closest <= {n.node_id for n in live_holders}
    for reader in live[::6]:
        assert [r.value for r in get(net, reader, key)] == [b"d"]


def test_misuse_of_the_api_raises_a_local_error() -> None:
    core = MemoryNetwork(seed=1).add_node()
    with pytest.raises(LocalProtocolError, match="20 bytes"):
        core.find_node(b"short", 0.0)
    with pytest.raises(LocalProtocolError, match="at most 2048 bytes"):
        core.create_record(b"k" * 20, b"x" * 2049, ttl=10, seq=1, now=0.0)
    with pytest.raises(LocalProtocolError, match="ttl"):
        core.create_record(b"k" * 20, b"x", ttl=7200, seq=1, now=0.0)
    stale = core.create_record(b"k" * 20, b"x", ttl=10, seq=1, now=0.0)
    with pytest.raises(LocalProtocolError, match="expired"):
        core.put_record(stale, 20.0)


def test_a_joining_node_is_handed_the_records_it_is_now_closest_to() -> None:
    config = DHTConfig(republish_interval=3000.0, bucket_refresh_interval=3000.0)
    net = MemoryNetwork(seed=31)
    nodes = net.build_mesh(30, config)
    newcomer = net.add_node(config)
    key = newcomer.node_id  # the newcomer will be the closest node there is to this key
    record = nodes[4].create_record(key, b"welcome", ttl=3000, seq=1, now=net.now)
    put(net, nodes[4], record)
    net.wait(newcomer, newcomer.bootstrap([net.addr_of(nodes[0])], net.now))
    net.run_for(1.0)
    assert newcomer.local_records(key, net.now) == [record]
    assert sum(n.counters["welcome"] for n in nodes) <= 3  # not every holder hands it over
    assert sum(n.counters["republish"] for n in nodes) == 0


def test_a_response_from_another_address_is_dropped_and_the_request_stays_pending() -> None:
    net = MemoryNetwork(seed=33)
    a, b = net.build_mesh(2, FAST)
    a.find_node(b"\x55" * 20, net.now)
    (request, to), *_ = a.datagrams_to_send(net.now)
    assert to == net.addr_of(b)
    msg_id = request[1:21]
    reply = serialize_response(msg_id, NodesReply(()))
    a.receive(reply, ("203.0.113.7", to[1]), net.now)
    assert a.counters["drop.wrong_source"] == 1 and a.pending_rpcs == 1
    a.receive(reply, to, net.now)
    assert a.pending_rpcs == 0
    a.receive(reply, to, net.now)  # a duplicate, or a late copy after a retransmission
    assert a.counters["drop.unexpected_response"] == 1


def test_expired_and_future_records_are_refused_and_counted() -> None:
    net = MemoryNetwork(seed=35)
    (node,) = net.build_mesh(1, FAST)
    publisher = Identity.from_seed(b"p" * 32)
    key = key_for("time")
    expired = Record.create(publisher, key, b"old", 1, int(net.now) - 1)
    future = Record.create(publisher, key, b"new", 2, int(net.now) + 3600 + 61)
    node.receive(
        serialize_request(b"x" * 20, StoreRecords(b"\x01" * 20, (expired, future))),
        ("203.0.113.8", 8),
        net.now,
    )
    (data, _), *_ = node.datagrams_to_send(net.now)
    assert parse_frame(data).body == [Refusal.EXPIRED, Refusal.FUTURE]
    assert node.counters["record.refused.expired"] == 1
    assert node.counters["record.refused.future"] == 1
    assert node.local_records(key, net.now) == []


def test_paging_progresses_when_ipv6_contacts_fill_the_first_page() -> None:
    config = DHTConfig(k=20)
    net = MemoryNetwork(seed=37)
    (node,) = net.build_mesh(1, config)
    for i in range(20):  # twenty long IPv6 contacts: 1400+ bytes before any record
        node.table.add(
            Contact.make(bytes([i + 1]) * 20, (f"2001:db8:ffff:ffff:ffff:ffff:ffff:{i:x}", 4000))
        )
    key = key_for("v6")
    publishers = [Identity.from_seed(bytes([i]) * 32) for i in range(3)]
    for identity in publishers:
        node.records.put(Record.create(identity, key, b"x" * 200, 1, int(net.now) + 60), net.now)
    after, seen = b"", []
    for _ in range(5):
        request = FindRecords(b"\x09" * 20, key, after)
        node.receive(serialize_request(b"r" * 20, request), ("203.0.113.2", 2), net.now)
        (data, _), *_ = node.datagrams_to_send(net.now)
        reply = parse_reply(request, parse_frame(data).body)
        assert isinstance(reply, FindRecordsReply) and reply.records
        seen.extend(reply.records)
        if not reply.more:
            break
        after = reply.records[-1].publisher
    assert {r.publisher for r in seen} == {p.public_key for p in publishers}


def test_a_stranger_for_a_full_bucket_is_parked_and_proven_only_when_a_slot_opens() -> None:
    """Paper section 4.1, lazily: no identify (and no ping of the oldest contact) for a
    node that could not enter the table anyway; that traffic chained across the
    network and outweighed the lookups (docs/simulation.md, "Lazy admission")."""
    from dht.ids import bucket_index
    from dht.wire import Identify, parse_request

    config = DHTConfig(k=2, alpha=2)
    core = DHTCore(Identity.from_seed(bytes(32)), random.Random(1), 0.0, config)
    own = core.table.own_num

    def identity_in(bucket: int, start: int) -> Identity:
        for seed in range(start, start + 10_000):
            identity = Identity.from_seed(seed.to_bytes(32, "big"))
            if bucket_index(own, int.from_bytes(identity.node_id, "big")) == bucket:
                return identity
        raise AssertionError("no id in that bucket")

    full = 159  # the far half of the id space: two contacts fill it at k=2
    residents = [identity_in(full, 1), identity_in(full, 2000)]
    for i, resident in enumerate(residents):
        assert core.table.add(Contact.make(resident.node_id, ("198.51.100.1", 4000 + i)))
    late, early = identity_in(full, 4000), identity_in(full, 6000)

    def requests_after(request: object, port: int, now: float = 0.0) -> list[object]:
        core.receive(serialize_request(bytes(20), request), ("198.51.100.9", port), now)  # type: ignore[arg-type]
        return sent(now)

    def sent(now: float) -> list[object]:
        out = []
        for data, _ in core.datagrams_to_send(now):
            frame = parse_frame(data)
            out.append(parse_request(frame.body) if frame.is_request else frame.body)
        return out

    for who, port in ((early, 5001), (late, 5002)):
        answers = requests_after(FindNode(who.node_id, bytes(20)), port)
        assert not any(isinstance(r, Identify) for r in answers), answers
        assert len(answers) == 1  # the answer only
    assert core.counters["table.parked"] == 2
    # A stranger for a bucket with room is identified at once.
    assert any(
        isinstance(r, Identify)
        for r in requests_after(FindNode(identity_in(150, 8000).node_id, bytes(20)), 5003)
    )
    # Both residents stop answering: two lookups each fail them twice.
    now = 0.0
    for _ in range(2):
        core.find_node(bytes(20), now)
        sent(now)
        now += config.rpc_timeout + 0.1
        core.handle_timer(now)
    assert all(core.table.get(r.node_id) is None for r in residents)
    # Two slots opened: the claims are asked to prove their ids, newest first ...
    identifies = [
        (frame, addr)
        for frame, addr in ((parse_frame(d), a) for d, a in core.datagrams_to_send(now))
        if frame.is_request and isinstance(parse_request(frame.body), Identify)
    ]
    assert [addr for _, addr in identifies] == [("198.51.100.9", 5002), ("198.51.100.9", 5001)]
    # ... and a claim that proves it takes a slot.
    frame, addr = identifies[0]
    prover = DHTCore(late, random.Random(3), now, config)
    request = serialize_request(frame.msg_id, parse_request(frame.body))
    prover.receive(request, ("198.51.100.2", 1), now)
    (answer, _), *_ = prover.datagrams_to_send(now)
    core.receive(answer, addr, now)
    assert core.table.get(late.node_id) is not None
    assert core.table.get(early.node_id) is None  # not until it has proven its id too


def test_verify_node_proves_an_id_at_an_address_and_nowhere_else() -> None:
    """What a node link asks of the DHT (signaling/links.py): does this id answer here?"""
    net = MemoryNetwork(seed=11)
    asker, other = net.add_node(FAST), net.add_node(FAST)
    stranger = Identity.from_seed(b"s" * 32)

    def verify(node_id: bytes, addr: tuple[str, int]) -> bool:
        event = net.wait(asker, asker.verify_node(node_id, addr, net.now))
        assert isinstance(event, NodeVerified)
        return event.ok

    assert verify(other.node_id, net.addr_of(other))  # identified over the wire
    assert verify(other.node_id, net.addr_of(other))  # proven before: no new request
    assert not verify(stranger.node_id, net.addr_of(other))  # someone else answers there
    assert not verify(other.node_id, ("198.51.100.1", 4000))  # nobody answers there
    net.kill(other)
    assert verify(other.node_id, net.addr_of(other))  # remembered, within the table's trust
    assert asker.counters["identify.bad"] == 1
