"""Three signaling nodes on loopback: rooms, presence events and signal routing."""

from __future__ import annotations

import socket

import pytest

from peer.signaling import PeerJoined, PeerLeft, SignalFrom
from signaling.rooms import canonical_url, room_key

from .conftest import ClientFactory, NodeFactory

pytestmark = pytest.mark.integration

ROOM = room_key(canonical_url("https://example.org/"))


async def test_clients_on_different_nodes_meet_and_signal(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    a, b, c = await signaling_mesh(3)
    alice = await connect(a)
    bob = await connect(b)
    carol = await connect(c)

    joined = await alice.join(ROOM)
    assert (joined.layer, joined.members, joined.total) == (0, (), 1)

    joined = await bob.join(ROOM)
    assert [m.key for m in joined.members] == [alice.key]
    assert joined.members[0].url == a.url and joined.total == 2
    event = await alice.next_event()
    assert isinstance(event, PeerJoined) and event.member.key == bob.key
    assert event.member.node == b.node_id

    joined = await carol.join(ROOM)
    assert {m.key for m in joined.members} == {alice.key, bob.key}
    for client in (alice, bob):
        event = await client.next_event()
        assert isinstance(event, PeerJoined) and event.member.key == carol.key

    # carol (node C) -> alice (node A) through the forwarding path, and back
    await carol.signal(alice.key, {"sdp": "offer from carol"}, room=ROOM)
    got = await alice.next_event()
    assert got == SignalFrom(carol.key, {"sdp": "offer from carol"}, ROOM)
    await alice.signal(carol.key, {"sdp": "answer"}, ROOM)
    got = await carol.next_event()
    assert got == SignalFrom(alice.key, {"sdp": "answer"}, ROOM)
    # ordered: a burst arrives in order
    for i in range(20):
        await bob.signal(carol.key, {"candidate": i}, ROOM)
    received = [await carol.next_event() for _ in range(20)]
    assert [e.payload["candidate"] for e in received if isinstance(e, SignalFrom)] == list(
        range(20)
    )
    assert a.rooms.counters["signal.delivered"] >= 1
    assert c.rooms.counters["signal.remote"] >= 1

    await bob.leave(ROOM)
    for client in (alice, carol):
        event = await client.next_event()
        assert event == PeerLeft(ROOM, 0, bob.key)
    assert {m.key for m in await alice.members(ROOM)} == {carol.key}


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_nodes_named_by_a_host_name_prove_their_homes(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """A node whose DHT listens on a wildcard and whose URL names a host (every public
    node: `dht_host = "0.0.0.0"`, `public_url = "wss://node.example.net"`) publishes
    seat lists that other nodes can prove (docs/protocol.md 2.4): its DHT address there
    is an address, not the URL's name."""
    nodes = []
    for _ in range(2):
        port = free_tcp_port()
        named = {"port": port, "dht_host": "0.0.0.0", "public_url": f"ws://localhost:{port}"}
        nodes += await signaling_mesh(1, **named)
    a, b = nodes
    alice = await connect(a)
    bob = await connect(b)
    await alice.join(ROOM)
    joined = await bob.join(ROOM)
    assert [m.key for m in joined.members] == [alice.key] and joined.total == 2
    event = await alice.next_event()
    assert isinstance(event, PeerJoined) and event.member.key == bob.key
    for node in (a, b):
        assert node.rooms.counters["home.unproven"] == 0
