"""Offers before seated (docs/protocol.md 2.5.3), from the Python client's side: a
newcomer offers to the members its join's `sign` request names, and to those a
`members` frame names later, once it has signed, before `joined`; `joined` offers to
no one twice and lets go of a named member it does not list; a node naming blocked
keys, or sending `members` outside a join, reaches no one. Real aiortc peers on
loopback, against real signaling nodes (one of them a DHT holder that stops answering,
so the join's store waits while the link is made) and, for what a real node does not
do on demand (a later `members` frame, a layer the check moves the newcomer to, lies),
the stand-in node of tests/peer/layernode.py, whose `joined` the test holds back so
the order is seen, not timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dht.core import DHTConfig
from peer.peer import Connected, MemberLeft, Peer, Room
from peer.signaling import SignalingClient
from signaling.node import SignalingNode
from signaling.protocol import IceServer, MemberList, Signal, canonical_url, room_key
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory, next_of
from .layernode import LayerNode

pytestmark = pytest.mark.integration

URL = "https://example.org/early-offers"
ROOM = room_key(canonical_url(URL))

SLOW_HOLDER_DHT = DHTConfig(
    maintenance_interval=0.5,
    bucket_refresh_interval=5.0,
    slow_min=3.0,
    slow_max=3.0,
    rpc_timeout=8.0,
)
"""A holder that does not answer keeps a store (and the join waiting on it) for seconds."""


@pytest.fixture
async def nodes(signaling_mesh: NodeFactory) -> list[SignalingNode]:
    return await signaling_mesh(2, dht=SLOW_HOLDER_DHT)


@pytest.fixture
async def node() -> AsyncIterator[LayerNode]:
    started = await LayerNode.start(layer_size=4)
    started.early = True
    yield started
    await started.stop()


def offers_to(node: LayerNode, key: bytes, sender: bytes | None = None, kind: str = "offer") -> int:
    """Offers (or signals of another `kind`: "relink", "answer") the stand-in routed or
    refused towards `key` (from `sender`, if given)."""
    return sum(
        1
        for f in node.received
        if isinstance(f, Signal)
        and f.to == key
        and isinstance(f.payload, dict)
        and isinstance(f.payload.get("desc"), dict)
        and f.payload["desc"].get("kind") == kind
        and (sender is None or f.payload["desc"].get("from") == sender.hex())
    )


async def joining(peer: Peer) -> tuple[asyncio.Task[Room], Room]:
    """A first join started, and its room (there before `joined`)."""
    task = asyncio.create_task(peer.join(URL))
    await asyncio.sleep(0)  # Peer.join makes the room before its first await
    return task, peer.rooms[ROOM]


async def test_a_newcomer_links_to_the_member_its_sign_request_names_before_joined(
    nodes: list[SignalingNode], peers: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    alice = await peers("alice", [a.url])
    await alice.join(URL)
    asked: list[SignalingClient] = []
    ask = SignalingClient.ice_servers

    async def counted(client: SignalingClient) -> tuple[IceServer, ...]:
        asked.append(client)
        return await ask(client)

    monkeypatch.setattr(SignalingClient, "ice_servers", counted)
    bob = await peers("bob", [a.url])
    b.dht._transport.pause_reading()  # type: ignore[union-attr]  # a holder gone quiet
    try:
        task, room = await joining(bob)
        link = await next_of(room, Connected, within=20.0)
        assert link.key == alice.public_key
        assert not task.done()  # the link opened before `joined` came
        assert room.early_links == {alice.public_key}
    finally:
        b.dht._transport.resume_reading()  # type: ignore[union-attr]
    await asyncio.wait_for(task, 20.0)
    assert a.rooms.counters["signal.local"] >= 2  # offer and answer went before the seat
    # `joined` listed alice again: no second link, no second offer
    assert list(room.links) == [alice.public_key]
    assert bob.mesh.counters.get("named.not_listed", 0) == 0
    assert asked == []  # the early offer's servers came with the welcome (3.1)


async def test_a_members_frame_names_one_more_member_before_joined(
    node: LayerNode, peers: PeerFactory
) -> None:
    alice = await peers("alice", [node.url])
    await alice.join(URL)
    carol = await peers("carol", [node.url])
    await next_of(await carol.join(URL), Connected)  # carol's own offer to alice is in
    node.name_in_sign = [alice.public_key]  # carol's home proven after the request
    node.name_later = [carol.public_key]
    node.hold_joined = asyncio.Event()
    bob = await peers("bob", [node.url])
    task, room = await joining(bob)
    linked = {(await next_of(room, Connected)).key, (await next_of(room, Connected)).key}
    assert linked == {alice.public_key, carol.public_key}
    assert not task.done() and room.early_links == linked
    node.hold_joined.set()
    await asyncio.wait_for(task, 10.0)
    offered = [offers_to(node, k, bob.public_key) for k in (alice.public_key, carol.public_key)]
    assert offered == [1, 1]  # one each: `joined` offered no more
    assert set(room.links) == linked


async def test_a_member_named_early_outside_the_layer_we_sit_in_is_let_go(
    node: LayerNode, peers: PeerFactory
) -> None:
    alice = await peers("alice", [node.url])
    room_a = await alice.join(URL)
    node.move_on = 1  # the check moves the newcomer to layer 1, where alice is not
    node.hold_joined = asyncio.Event()
    bob = await peers("bob", [node.url])
    task, room = await joining(bob)
    assert (await next_of(room, Connected)).key == alice.public_key
    assert not task.done()
    await next_of(room_a, Connected, key=bob.public_key)
    node.hold_joined.set()
    await asyncio.wait_for(task, 10.0)
    assert room.layer == 1
    await next_of(room, MemberLeft, key=alice.public_key)
    assert alice.public_key not in room.links
    assert bob.mesh.counters["named.not_listed"] == 1
    await next_of(room_a, MemberLeft, key=bob.public_key)  # told peer-left, link closed
    assert bob.public_key not in room_a.links


async def test_a_node_naming_blocked_keys_or_members_outside_a_join_reaches_no_one(
    node: LayerNode, peers: PeerFactory
) -> None:
    mallory = await peers("mallory", [node.url])
    await mallory.join(URL)
    alice = await peers("alice", [node.url])
    await alice.join(URL)
    bob = await peers("bob", [node.url])
    bob.block(mallory.public_key)
    node.hold_joined = asyncio.Event()
    task, room = await joining(bob)  # its sign request names alice and mallory
    assert (await next_of(room, Connected)).key == alice.public_key
    assert not task.done() and room.early_links == {alice.public_key}
    node.hold_joined.set()
    await asyncio.wait_for(task, 10.0)
    assert offers_to(node, mallory.public_key, bob.public_key) == 0
    assert mallory.public_key not in room.links
    # seated: `members` frames without an id (our room, another) are dropped, counted
    client = bob.node
    assert client is not None
    bob_at_node = node.clients[bob.public_key]
    await node._send(bob_at_node, MemberList(ROOM, 0, (node._member(carol_key()),), 4))
    elsewhere = room_key(canonical_url("https://example.org/elsewhere"))
    await node._send(bob_at_node, MemberList(elsewhere, 0, (node._member(carol_key()),), 1))
    await client.ping()  # answered after both frames were read
    assert client.unasked_members == 2
    assert offers_to(node, mallory.public_key, bob.public_key) == 0
    assert set(room.links) == {alice.public_key} and set(room.members) <= {alice.public_key}


def carol_key() -> bytes:
    return bytes(range(32))
