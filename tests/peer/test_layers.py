"""Layers from the client's side (docs/protocol.md 3.2): a room knows its layer and the
page's estimates, asks for a census, moves to another layer or beside a friend, and a
refused move leaves it where it sat. Real aiortc peers on loopback, against the
stand-in node of tests/peer/layernode.py (rooms in layers of two)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nacl.signing import SigningKey

from peer.peer import Census, Connected, MemberLeft, Moved, Peer, Rejoined, Room
from peer.signaling import LayerCount, SignalingClient, SignalingError
from signaling.protocol import Join, Layers, canonical_url, room_key

from .conftest import PeerFactory, next_of
from .layernode import LayerNode

pytestmark = pytest.mark.integration

URL = "https://example.org/a-busy-page"
ROOM = room_key(canonical_url(URL))


@pytest.fixture
async def node() -> AsyncIterator[LayerNode]:
    started = await LayerNode.start(layer_size=2)
    yield started
    await started.stop()


async def seat(peers: PeerFactory, node: LayerNode, *names: str) -> list[tuple[Peer, Room]]:
    """Peers joined one after the other (so layers fill in order: two per layer)."""
    seated = []
    for name in names:
        peer = await peers(name, [node.url])
        seated.append((peer, await peer.join(URL)))
    return seated


async def test_the_signaling_client_asks_for_a_friend_and_for_layers(node: LayerNode) -> None:
    keys = [SigningKey.generate() for _ in range(3)]
    clients = [await SignalingClient.connect(node.url, key) for key in keys]
    try:
        for client in clients:
            await client.join(ROOM)
        friend = bytes(keys[2].verify_key)  # sits alone in layer 1
        picture = await clients[0].layers(ROOM)
        assert (picture.layer, picture.layers, picture.total) == (0, 2, 3)
        assert picture.counts == (LayerCount(0, 2), LayerCount(1, 1))
        moved = await clients[0].join(ROOM, friend=friend)
        assert (moved.layer, [m.key for m in moved.members]) == (1, [friend])
        assert clients[0].rooms[ROOM] == 1  # the new layer's presence is ours to sign now
        assert Join(ROOM, None, 3, friend) in node.received
        assert any(isinstance(f, Layers) for f in node.received)
        with pytest.raises(SignalingError) as refused:
            await clients[1].join(ROOM, friend=bytes(32))
        assert refused.value.code == "unknown-peer"
    finally:
        for client in clients:
            await client.close()


async def test_a_room_knows_its_layer_and_the_page_size(
    peers: PeerFactory, node: LayerNode
) -> None:
    seated = await seat(peers, node, "a", "b", "c", "d", "e")
    first, last = seated[0][1], seated[-1][1]
    assert (first.layer, first.layers, first.total) == (0, 1, 1)  # as it was when it joined
    assert (last.layer, last.layers, last.total) == (2, 3, 5)
    census = await first.census()
    assert census == Census(0, 3, 5, (LayerCount(0, 2), LayerCount(1, 2), LayerCount(2, 1)))
    assert (first.layer, first.layers, first.total) == (0, 3, 5)


async def test_a_move_links_the_new_layer_and_lets_the_old_go(
    peers: PeerFactory, node: LayerNode
) -> None:
    (a, room_a), (b, room_b), (c, room_c) = await seat(peers, node, "a", "b", "c")
    await next_of(room_a, Connected, key=b.public_key)
    assert room_c.layer == 1 and room_c.members == set()
    assert await room_a.move(1) == 1
    assert await next_of(room_a, Moved) == Moved(1, 2, 3)
    assert (room_a.layer, room_a.layers, room_a.total) == (1, 2, 3)
    await next_of(room_a, Connected, key=c.public_key)
    await next_of(room_c, Connected, key=a.public_key)
    await next_of(room_b, MemberLeft, key=a.public_key)
    assert room_a.members == {c.public_key} and room_b.members == set()
    assert set(room_a.paths()) == {c.public_key}
    assert node.layer_of(ROOM, a.public_key) == 1


async def test_sitting_with_a_friend_and_a_full_layer(peers: PeerFactory, node: LayerNode) -> None:
    (a, _), (b, room_b), (c, room_c) = await seat(peers, node, "a", "b", "c")
    with pytest.raises(SignalingError) as full:
        await room_c.sit_with(a.public_key)  # a's layer has no seat
    assert full.value.code == "layer-full"
    assert room_c.layer == 1 and node.layer_of(ROOM, c.public_key) == 1
    await b.leave(room_b)
    assert await room_c.sit_with(a.public_key) == 0
    await next_of(room_c, Connected, key=a.public_key)
    with pytest.raises(SignalingError) as unknown:
        await room_c.sit_with(bytes(32))
    assert unknown.value.code == "unknown-peer"
    assert room_c.layer == 0 and a.public_key in room_c.paths()


async def test_a_refused_move_keeps_the_seat_and_its_links(
    peers: PeerFactory, node: LayerNode
) -> None:
    seated = await seat(peers, node, "a", "b", "c", "d")
    (_, room_a), (b, _) = seated[:2]
    await next_of(room_a, Connected, key=b.public_key)
    with pytest.raises(SignalingError) as full:
        await room_a.move(1)
    assert full.value.code == "layer-full"
    assert await next_of(room_a, Rejoined) == Rejoined(node.url, 0)  # it asked for its seat
    joins = [f for f in node.received if isinstance(f, Join)]
    assert [(j.layer, j.friend) for j in joins[-2:]] == [(1, None), (0, None)]
    assert room_a.layer == 0 and room_a.members == {b.public_key}
    assert b.public_key in room_a.paths()
    with pytest.raises(ValueError):
        await room_a.move(-1)


async def test_a_first_join_in_a_layer_or_beside_a_friend(
    peers: PeerFactory, node: LayerNode
) -> None:
    a = await peers("a", [node.url])
    room_a = await a.join(URL, layer=3)
    assert room_a.layer == 3
    b = await peers("b", [node.url])
    room_b = await b.join(URL, friend=a.public_key)
    assert room_b.layer == 3
    await next_of(room_b, Connected, key=a.public_key)
    late = await peers("late", [node.url])
    with pytest.raises(SignalingError) as full:
        await late.join(URL, layer=3)
    assert full.value.code == "layer-full" and late.rooms == {}
    with pytest.raises(SignalingError) as unknown:
        await late.join(URL, friend=bytes(32))
    assert unknown.value.code == "unknown-peer" and late.rooms == {}
    assert (await late.join(URL)).layer == 0
