"""Opaque records through a client's node (docs/protocol.md 7.3): put-record, get-record.

Real nodes on loopback, real WebSockets. The attacker's tests first: a node
that stores and reads everything learns neither who published a contact's
presence nor for whom; a client cannot make a node store what the DHT's
rules refuse, nor run record requests without bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from dht.identity import Identity
from peer.friends import (
    ContactCard,
    PresenceNote,
    epoch_of,
    open_presence,
    pair_secret,
    presence_slot,
    seal_presence,
    x25519_seed,
)
from peer.signaling import SignalingError
from signaling.protocol import (
    GetRecord,
    PutRecord,
    Record,
    RecordFound,
    RecordStored,
    parse_client_frame,
    parse_server_frame,
    serialize,
)
from signaling.session import SessionLimits

from .conftest import ClientFactory, NodeFactory


def _card(seed: bytes) -> ContactCard:
    return ContactCard.create(SigningKey(seed), x25519_seed(seed))


def _secret(mine: bytes, theirs: bytes) -> bytes:
    return pair_secret(bytes(SigningKey(mine).verify_key), x25519_seed(mine), _card(theirs))


async def test_a_node_that_keeps_everything_learns_no_friendship(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    nodes = await signaling_mesh(3)
    ana_seed, ben_seed = os.urandom(32), os.urandom(32)
    ana = await connect(nodes[0], SigningKey(ana_seed))
    ben = await connect(nodes[1], SigningKey(ben_seed))
    now = time.time()
    slot = presence_slot(_secret(ana_seed, ben_seed), ana.key, ben.key, epoch_of(now))
    room = os.urandom(20)
    note = PresenceNote(True, int(now) + 180, room, 2, "https://example.org/p", nodes[0].url)
    stored = await ana.put_record(seal_presence(slot, note, 1, os.urandom(12)))
    assert stored >= 1
    # Ben, on another node, finds and opens it.
    mine = presence_slot(_secret(ben_seed, ana_seed), ana.key, ben.key, epoch_of(now))
    found = await ben.get_record(mine.dht_key, mine.publisher)
    assert found is not None and open_presence(mine, found, time.time()) == note
    # Every node gives away all it holds: nothing names Ana, Ben, the room or the page.
    held = [r for node in nodes for r in node.dht.core.records if r.key == slot.dht_key]
    assert held
    for record in held:
        blob = record.key + record.publisher + record.value
        for secret in (ana.key, ben.key, room, b"example.org"):
            assert secret not in blob
            assert secret[:8] not in blob
    # A stranger with many keys makes slots of its own: none is this one.
    for _ in range(20):
        eve = os.urandom(32)
        for peer in (ana_seed, ben_seed):
            guess = presence_slot(_secret(eve, peer), ana.key, ben.key, epoch_of(now))
            assert guess.dht_key != slot.dht_key and guess.aes_key != slot.aes_key


async def test_a_record_the_dht_refuses_gets_a_typed_error(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    (node,) = await signaling_mesh(1)
    client = await connect(node)
    me = Identity(SigningKey.generate())
    now = int(time.time())
    expired = Record.create(me, os.urandom(20), b"x", 1, now - 1)
    too_far = Record.create(me, os.urandom(20), b"x", 1, now + 7200)
    good = Record.create(me, os.urandom(20), b"x", 1, now + 60)
    forged = Record(good.key, good.publisher, 2, good.expires_at, b"y", good.signature)
    large = Record.create(me, os.urandom(20), b"x" * 2049, 1, now + 60)
    for record, rule in (
        (expired, "expired"),
        (too_far, "future"),
        (forged, "bad-signature"),
        (large, "value-too-large"),
    ):
        try:
            await client.put_record(record)
        except SignalingError as exc:
            assert exc.code == "bad-record" and rule in str(exc), (rule, exc)
        else:
            raise AssertionError(f"{rule} was stored")
    assert await client.put_record(good) >= 1
    # An older seq of the same publisher never comes back in its place.
    assert await client.get_record(good.key, good.publisher) == good
    assert await client.get_record(good.key, os.urandom(32)) is None


async def test_record_requests_are_bounded_per_connection(
    signaling_mesh: NodeFactory, raw: Any
) -> None:
    limits = SessionLimits(record_burst=12, records_per_second=0.01, max_record_ops=4)
    (node,) = await signaling_mesh(1, limits=limits)
    client = await raw(node)
    assert (await client.hello(SigningKey.generate()))["type"] == "welcome"

    async def ask(count: int) -> dict[str, int]:
        for n in range(count):
            await client.send(serialize(GetRecord(os.urandom(20), os.urandom(32), n)))
        answers: dict[str, int] = {}
        for _ in range(count):
            reply = await asyncio.wait_for(client.receive(), 20)
            kind = reply["type"] if reply["type"] != "error" else reply["code"]
            answers[kind] = answers.get(kind, 0) + 1
        return answers

    # At most max_record_ops at once: what a burst sends past them is refused, typed.
    burst = await ask(10)
    assert burst.get("rate-limited", 0) >= 6 and set(burst) == {"record", "rate-limited"}
    # And no more than the bucket over time, one request after the other.
    spent = burst["record"]
    alone = [await ask(1) for _ in range(14 - spent)]
    taken = sum(a.get("record", 0) for a in alone)
    assert taken == 12 - spent, alone
    assert alone[-1] == {"rate-limited": 1}


# --- the frames' parsers ----------------------------------------------------------------

records = st.builds(
    Record,
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**40),
    st.binary(max_size=3000),
    st.binary(min_size=64, max_size=64),
)
ids = st.none() | st.integers(0, 2**53 - 1) | st.text(max_size=64)


@given(record=records, ref=ids)
def test_put_record_frames_round_trip(record: Record, ref: Any) -> None:
    frame = PutRecord(record, ref)
    assert parse_client_frame(serialize(frame), 65536) == frame
    stored = RecordStored(record.key, 3, ref)
    assert parse_server_frame(serialize(stored)) == stored
    found = RecordFound(record.key, record, ref)
    assert parse_server_frame(serialize(found)) == found
    assert parse_server_frame(serialize(RecordFound(record.key, None, ref))).record is None


@given(
    key=st.text(max_size=44),
    publisher=st.text(max_size=66),
    record=st.lists(st.integers() | st.text(max_size=10), max_size=7),
)
def test_malformed_record_frames_are_frame_errors(key: str, publisher: str, record: Any) -> None:
    from signaling.protocol import FrameError

    for body in (
        {"type": "get-record", "key": key, "publisher": publisher},
        {"type": "put-record", "record": record},
        {"type": "put-record", "record": [key, publisher, 1, 2, "!!", base64.b64encode(b"")]},
    ):
        with contextlib.suppress(FrameError):
            parse_client_frame(serialize_raw(body), 65536)


def serialize_raw(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body, default=str)


# --- one address, many connections (7.3: the bound is per source, too) ------------------


async def _answers(clients: list[Any], per_client: int) -> dict[str, int]:
    """Each of `clients` sends `per_client` get-records at once; the answers by kind."""
    for client in clients:
        for n in range(per_client):
            await client.send(serialize(GetRecord(os.urandom(20), os.urandom(32), n)))
    answers: dict[str, int] = {}
    for client in clients:
        for _ in range(per_client):
            reply = await asyncio.wait_for(client.receive(), 20)
            kind = reply["type"] if reply["type"] != "error" else reply["code"]
            answers[kind] = answers.get(kind, 0) + 1
    return answers


async def test_many_connections_of_one_address_share_one_record_budget(
    signaling_mesh: NodeFactory, raw: Any
) -> None:
    """The attacker: one address, several connections (and fresh ones as each runs
    dry), each with the per-connection burst. Together they get the source's budget,
    not one burst per connection: every get-record is a DHT lookup the node runs."""
    limits = SessionLimits(record_burst=12, records_per_second=0.01, max_record_ops=16)
    (node,) = await signaling_mesh(
        1, limits=limits, records_per_source=0.01, record_source_burst=20
    )
    clients = []
    for _ in range(4):
        client = await raw(node)
        assert (await client.hello(SigningKey.generate()))["type"] == "welcome"
        clients.append(client)
    answers = await _answers(clients, 10)
    assert answers.get("record", 0) <= 20 and answers.get("rate-limited", 0) >= 20, answers
    # A fresh connection from the same address starts with no new budget.
    fresh = await raw(node)
    assert (await fresh.hello(SigningKey.generate()))["type"] == "welcome"
    assert await _answers([fresh], 5) == {"rate-limited": 5}


async def test_one_address_cannot_hold_the_nodes_dht_slots(
    signaling_mesh: NodeFactory, raw: Any
) -> None:
    """The attacker keeps lookups in flight from many connections of one address (each
    within its own `max_record_ops`): past `record_ops_per_source` of that address at
    once, the node refuses, so the DHT slots joins and other clients share stay free."""
    limits = SessionLimits(record_burst=100, max_record_ops=8)
    nodes = await signaling_mesh(3, limits=limits, record_ops_per_source=6)
    # Two of the three go away: lookups wait for them (rpc_timeout) and stay in flight.
    for gone in nodes[1:]:
        await gone.stop(moving=False)
    clients = []
    for _ in range(4):
        client = await raw(nodes[0])
        assert (await client.hello(SigningKey.generate()))["type"] == "welcome"
        clients.append(client)
    answers = await _answers(clients, 6)
    assert answers.get("rate-limited", 0) >= 24 - 6, answers
