"""A store that reads back (`pm_store_read`, docs/protocol.md 2.5.5) on virtual time: what
a stranger can get from it (nothing a read does not give, and less per byte sent), that
a put reading back from every holder sees what a full read right after it sees, and that
a holder that does not answer with all it holds (dead, an older node, a liar), or a
key whose pages do not all come, leaves the put without `held`, so the caller reads as before."""

from __future__ import annotations

import random
from dataclasses import replace

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from dht.core import DHTConfig, DHTCore, RecordsFound, RecordsHeld, RecordsStored
from dht.identity import Identity
from dht.ids import key_for, to_int
from dht.reads import FULL
from dht.records import Record, Refusal
from dht.wire import (
    RESPONSE_FLAG,
    FindRecords,
    FindRecordsReply,
    StoreRead,
    StoreReadReply,
    WireError,
    parse_frame,
    parse_reply,
    parse_request,
    serialize_request,
    serialize_response,
)

from .memnet import EPOCH, MemoryNetwork

FAST = DHTConfig(
    maintenance_interval=5.0, republish_interval=60.0, bucket_refresh_interval=60.0
).with_fast_paths()
STRANGER = ("203.0.113.9", 5000)


def record(
    publisher: Identity, key: bytes, now: float, value: bytes = b"v", seq: int = 1
) -> Record:
    return Record.create(publisher, key, value, seq, int(now + 600))


def holder_with(key: bytes, count: int) -> DHTCore:
    """A node holding `count` records (of as many publishers) under `key`."""
    core = DHTCore(Identity.from_seed(b"h" * 32), random.Random(1), EPOCH, FAST)
    for i in range(count):
        publisher = Identity.from_seed(bytes([i + 1]) * 32)
        assert core._store_record(record(publisher, key, EPOCH, b"x" * 40), EPOCH) == 0
    return core


def ask(core: DHTCore, request: StoreRead | FindRecords, n: int = 0) -> tuple[int, object]:
    """Send `request` from a stranger's address as a datagram; the reply's size and body."""
    msg_id = n.to_bytes(20, "big")
    core.receive(serialize_request(msg_id, request), STRANGER, EPOCH)
    out = core.datagrams_to_send(EPOCH)  # an identify of the stranger may go out too
    sent = [d for d, addr in out if addr == STRANGER and d[0] == RESPONSE_FLAG]
    if not sent:
        return 0, None
    (data,) = sent
    return len(data), parse_reply(request, parse_frame(data).body)


# --- the attacker's tests first -------------------------------------------------------


def test_a_stranger_storing_junk_reads_nothing() -> None:
    key = key_for("a layer of a busy room")
    core = holder_with(key, 5)
    forged = record(Identity.from_seed(b"s" * 32), key, EPOCH)
    forged = replace(forged, signature=bytes(64))
    _, reply = ask(core, StoreRead(b"\x07" * 20, forged))
    assert isinstance(reply, StoreReadReply)
    assert reply.status == Refusal.BAD_SIGNATURE and reply.records == () and not reply.more
    expired = Record.create(Identity.from_seed(b"s" * 32), key, b"v", 1, int(EPOCH - 1))
    _, reply = ask(core, StoreRead(b"\x07" * 20, expired), 1)
    assert isinstance(reply, StoreReadReply) and reply.records == ()
    assert len(core.records.get(key, EPOCH)) == 5  # and stored nothing


def test_a_store_read_gives_a_stranger_nothing_a_read_does_not_and_costs_it_more() -> None:
    key = key_for("a layer of a busy room")
    core = holder_with(key, 40)  # more than one page
    own = record(Identity.from_seed(b"s" * 32), key, EPOCH)
    read_size, read = ask(core, FindRecords(b"\x07" * 20, key, b""))
    store = StoreRead(b"\x07" * 20, own)
    store_size, stored = ask(core, store, 1)
    assert isinstance(read, FindRecordsReply) and isinstance(stored, StoreReadReply)
    assert stored.status == Refusal.STORED and stored.more and read.more
    held = {r.publisher: r for r in core.records.get(key, EPOCH)}
    assert all(held.get(r.publisher) == r for r in stored.records)  # what the node holds
    # Amplification: bytes back per byte sent is lower than a read's (a store carries a
    # signed record; a read asks with an id and a key).
    store_request = len(serialize_request(b"\x01" * 20, store))
    read_request = len(serialize_request(b"\x01" * 20, FindRecords(b"\x07" * 20, key, b"")))
    assert store_request > read_request
    assert store_size / store_request < read_size / read_request


def test_store_reads_are_rate_limited_per_source_as_reads_are() -> None:
    key = key_for("flooded")
    answered = {}
    for kind in ("read", "store"):
        core = holder_with(key, 3)
        replies = 0
        for n in range(int(FAST.request_burst) + 200):
            publisher = Identity.from_seed(n.to_bytes(32, "big"))
            request: StoreRead | FindRecords = (
                FindRecords(b"\x07" * 20, key, b"")
                if kind == "read"
                else StoreRead(b"\x07" * 20, record(publisher, key, EPOCH))
            )
            replies += ask(core, request, n)[1] is not None
        answered[kind] = replies
        assert core.counters["drop.rate_limited"] >= 200
    assert answered["store"] <= answered["read"]


# --- the wire ---------------------------------------------------------------------------


@given(st.lists(st.none() | st.integers() | st.binary(max_size=40), max_size=4))
def test_a_malformed_store_read_request_is_a_wire_error(args: list[object]) -> None:
    try:
        request = parse_request(["pm_store_read", args])
    except WireError:
        return
    raise AssertionError(f"parsed {request!r}")  # none of these is a signed record


@given(st.integers(0, 255), st.integers(0, 5), st.booleans())
def test_a_store_read_and_its_reply_round_trip(status: int, count: int, more: bool) -> None:
    key = key_for("round trip")
    records = tuple(
        record(Identity.from_seed(bytes([i + 1]) * 32), key, EPOCH) for i in range(count)
    )
    request = StoreRead(b"\x01" * 20, record(Identity.from_seed(b"a" * 32), key, EPOCH))
    frame = parse_frame(serialize_request(b"\x02" * 20, request))
    assert parse_request(frame.body) == request
    reply = StoreReadReply(status, records, more)
    body = parse_frame(serialize_response(b"\x02" * 20, reply)).body
    assert parse_reply(request, body) == reply


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=40),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=12,
    )
)
def test_a_malformed_store_read_reply_is_a_wire_error(body: object) -> None:
    """Any body: a typed reply that serializes back to the same body, or a WireError."""
    request = StoreRead(b"\x01" * 20, record(Identity.from_seed(b"a" * 32), key_for("k"), EPOCH))
    try:
        reply = parse_reply(request, body)
    except WireError:
        return
    assert isinstance(reply, StoreReadReply)
    again = parse_frame(serialize_response(b"\x02" * 20, reply)).body
    assert again == body == msgpack.unpackb(msgpack.packb(body))


# --- reading back -----------------------------------------------------------------------


def holders_of(net: MemoryNetwork, key: bytes, nodes: list[DHTCore]) -> list[DHTCore]:
    return sorted(nodes, key=lambda c: to_int(c.node_id) ^ to_int(key))[:20]


def crowded(seed: int, others: int) -> tuple[MemoryNetwork, list[DHTCore], bytes]:
    net = MemoryNetwork(seed=seed)
    nodes = net.build_mesh(40, FAST)
    key = key_for(f"layer {seed}")
    for i in range(others):
        publisher = nodes[i + 1]
        net.wait(publisher, publisher.put_record(record(publisher.identity, key, net.now), net.now))
    return net, nodes, key


def test_a_put_that_reads_back_sees_what_a_full_read_right_after_it_sees() -> None:
    net, nodes, key = crowded(31, 4)
    writer, reader = nodes[30], nodes[35]
    mine = record(writer.identity, key, net.now)
    stored = net.wait(writer, writer.put_record(mine, net.now, majority=True, read_back=True))
    assert isinstance(stored, RecordsStored) and stored.held is not None
    assert stored.stored >= 20  # every holder, not a majority
    found = net.wait(reader, reader.get_records(key, net.now, quorum=FULL))
    assert isinstance(found, RecordsFound)
    assert stored.held == found.records and mine in stored.held and len(stored.held) == 5


def test_a_put_without_read_back_carries_no_records() -> None:
    net, nodes, key = crowded(32, 2)
    writer = nodes[30]
    stored = net.wait(writer, writer.put_record(record(writer.identity, key, net.now), net.now))
    assert isinstance(stored, RecordsStored) and stored.held is None


class OldCore(DHTCore):
    """A node from before `pm_store_read`: its wire knows no such rpc and drops it, as
    an older `parse_request` does (unknown rpc)."""

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        frame = parse_frame(data)
        body = frame.body
        if frame.is_request and isinstance(body, list) and body and body[0] == "pm_store_read":
            self.counters["drop.unknown_rpc"] += 1
            return
        super().receive(data, addr, now)


def test_an_old_holder_or_a_dead_one_leaves_the_put_without_held() -> None:
    for case in ("old", "dead"):
        net, nodes, key = crowded(33, 2)
        writer = nodes[30]
        one = next(c for c in holders_of(net, key, nodes) if c is not writer)
        if case == "old":
            one.__class__ = OldCore
        else:
            net.kill(one)
        mine = record(writer.identity, key, net.now, seq=2)
        stored = net.wait(writer, writer.put_record(mine, net.now, read_back=True))
        assert isinstance(stored, RecordsStored) and stored.stored > 0
        assert stored.held is None, case  # the caller reads, as before
        if case == "old":  # it dropped the store read, took the plain store sent after
            assert one.counters["drop.unknown_rpc"] >= 1
            assert writer.counters["put.store_read_plain"] >= 1
            assert mine in one.records.get(key, net.now)


def larger_than_a_page(net: MemoryNetwork, nodes: list[DHTCore], key: bytes) -> None:
    """Records of 40 publishers under `key` at every node: more than a page."""
    for i in range(40):
        publisher = Identity.from_seed(bytes([i + 1]) * 32)
        for core in nodes:
            core._store_record(record(publisher, key, net.now, b"x" * 40), net.now)


def test_a_key_larger_than_a_page_is_paged_to_its_end_as_a_full_read_pages_it() -> None:
    net, nodes, key = crowded(34, 0)
    larger_than_a_page(net, nodes, key)
    writer, reader = nodes[30], nodes[35]
    mine = record(writer.identity, key, net.now)
    stored = net.wait(writer, writer.put_record(mine, net.now, read_back=True))
    assert isinstance(stored, RecordsStored) and stored.stored >= 20
    found = net.wait(reader, reader.get_records(key, net.now, quorum=FULL))
    assert isinstance(found, RecordsFound) and len(found.records) == 41
    assert stored.held == found.records


def test_a_key_whose_pages_stop_coming_leaves_the_put_without_held() -> None:
    net, nodes, key = crowded(36, 0)
    larger_than_a_page(net, nodes, key)
    writer = nodes[30]
    writer.config = replace(writer.config, max_pages=0)  # no page may be asked
    mine = record(writer.identity, key, net.now)
    stored = net.wait(writer, writer.put_record(mine, net.now, read_back=True))
    assert isinstance(stored, RecordsStored) and stored.stored >= 20 and stored.held is None


class RogueCore(DHTCore):
    """A holder that answers a store read with a record it made up (unsigned)."""

    def _store_read(self, record: Record, addr: tuple[str, int], now: float) -> StoreReadReply:
        honest = super()._store_read(record, addr, now)
        made_up = replace(record, publisher=b"\x05" * 32, signature=bytes(64))
        return StoreReadReply(honest.status, (*honest.records, made_up), False)


def test_a_rogue_holder_invents_nothing_a_read_would_keep() -> None:
    """A record a holder made up is dropped as a read drops it (signatures checked again),
    and that holder's word does not count: the put has no `held`, the caller reads."""
    net, nodes, key = crowded(35, 1)
    writer = nodes[30]
    rogue = next(c for c in holders_of(net, key, nodes) if c is not writer)
    rogue.__class__ = RogueCore
    mine = record(writer.identity, key, net.now)
    stored = net.wait(writer, writer.put_record(mine, net.now, read_back=True))
    assert isinstance(stored, RecordsStored) and stored.held is None
    assert writer.counters["drop.record_bad_signature"] >= 1


# --- a majority's word first (2.5.6) ----------------------------------------------------


def outside(net: MemoryNetwork, key: bytes, nodes: list[DHTCore]) -> DHTCore:
    """A writer that is not itself a holder of `key`: every answer comes over the wire."""
    holders = holders_of(net, key, nodes)
    return next(c for c in nodes if c not in holders)


def events_of(net: MemoryNetwork, core: DHTCore, op: int) -> list[object]:
    return [e for e in net.events[net.addr_of(core)] if e.op == op]


def ended(net: MemoryNetwork, core: DHTCore, op: int) -> RecordsStored:
    """Run until the put `op` ends (`net.wait` stops at its first event)."""

    def end() -> list[object]:
        return [e for e in events_of(net, core, op) if isinstance(e, RecordsStored)]

    net.run_until(lambda: bool(end()))
    (stored,) = end()
    assert isinstance(stored, RecordsStored)
    return stored


def test_a_majority_of_whole_answers_tells_what_they_held_before_the_put_ends() -> None:
    """Three holders dead: the put waits for their timeouts, but the sixteen that answered
    told all they held long before; `RecordsHeld` says it, once, before the end, and
    it is what a full read right after sees."""
    net, nodes, key = crowded(37, 3)
    writer, reader = outside(net, key, nodes), nodes[35]
    dead = [c for c in holders_of(net, key, nodes) if c is not reader][:3]
    for core in dead:
        net.kill(core)
    mine = record(writer.identity, key, net.now)
    op = writer.put_record(mine, net.now, read_back=True, early=True)
    stored = ended(net, writer, op)
    assert stored.held is None  # the dead said nothing
    held, end = events_of(net, writer, op)
    assert isinstance(held, RecordsHeld) and end is stored
    assert writer.counters["put.held_early"] == 1
    found = net.wait(reader, reader.get_records(key, net.now, quorum=FULL))
    assert isinstance(found, RecordsFound)
    assert held.held == found.records and mine in held.held and len(held.held) == 4


def test_no_early_word_without_a_majority_of_whole_answers() -> None:
    """Holders that made a record up, or that are dead, are not whole answers: with ten
    of them among the twenty, no `RecordsHeld` comes, only the put's end; and a put
    that did not ask for it never tells it."""
    net, nodes, key = crowded(38, 2)
    writer = outside(net, key, nodes)
    holders = holders_of(net, key, nodes)
    for core in holders[:6]:
        net.kill(core)
    for core in holders[6:10]:
        core.__class__ = RogueCore
    op = writer.put_record(
        record(writer.identity, key, net.now), net.now, read_back=True, early=True
    )
    stored = ended(net, writer, op)
    assert stored.held is None and events_of(net, writer, op) == [stored]
    plain = writer.put_record(record(writer.identity, key, net.now, seq=2), net.now, read_back=True)
    ended(net, writer, plain)
    assert not [e for e in events_of(net, writer, plain) if isinstance(e, RecordsHeld)]
    assert writer.counters["put.held_early"] == 0


def test_a_paged_key_tells_its_majority_only_once_read_to_its_end() -> None:
    """A key of more than a page: the early word waits for every segment, as `held` does."""
    net, nodes, key = crowded(39, 0)
    larger_than_a_page(net, nodes, key)
    writer = outside(net, key, nodes)
    net.kill(holders_of(net, key, nodes)[-1])
    op = writer.put_record(
        record(writer.identity, key, net.now), net.now, read_back=True, early=True
    )
    ended(net, writer, op)
    held = events_of(net, writer, op)[0]
    assert isinstance(held, RecordsHeld) and len(held.held) == 41
