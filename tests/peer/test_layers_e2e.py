"""Layers end to end with real nodes (two, on loopback, layers of two): Python peers see
their layer and the page's estimates, ask for a census, move to another layer, sit
beside a friend homed on the other node, and are refused a full layer."""

from __future__ import annotations

import dataclasses

import pytest

from peer.peer import Connected, MemberLeft, Peer, Room
from peer.signaling import SignalingError
from signaling.config import NodeConfig
from signaling.node import SignalingNode
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory, next_of

pytestmark = pytest.mark.integration

URL = "https://example.org/a-page-in-layers"
LAYERED = {"layer_size": 2, "joins_per_minute": 600.0, "seats_per_source": 1000}
"""Layers of two; every client comes from 127.0.0.1, so the per-source join limits are
opened wide (where this node has them)."""


async def layered_nodes(signaling_mesh: NodeFactory, count: int) -> list[SignalingNode]:
    known = {f.name for f in dataclasses.fields(NodeConfig)}
    return await signaling_mesh(count, **{k: v for k, v in LAYERED.items() if k in known})


async def join(peers: PeerFactory, name: str, node: SignalingNode, **where: object) -> Room:
    peer = await peers(name, [node.url])
    return await peer.join(URL, **where)  # type: ignore[arg-type]


def key(room: Room) -> bytes:
    peer: Peer = room.peer
    return peer.public_key


async def test_python_peers_see_their_layer_move_and_sit_with_a_friend(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    a, b = await layered_nodes(signaling_mesh, 2)
    # placed by the nodes first, in the first layers; the others sit where they ask
    crowd = [await join(peers, f"crowd{i}", (a, b)[i % 2]) for i in range(2)]
    beside = await join(peers, "beside", b, layer=2)
    me = await join(peers, "me", a, layer=2)  # beside a member homed on the other node
    lonely = await join(peers, "lonely", a, layer=6)
    friend = await join(peers, "friend", b, layer=9)
    assert (me.layer, lonely.layer, friend.layer) == (2, 6, 9)
    assert all(room.layer not in (2, 6, 9) for room in crowd)
    await next_of(me, Connected, key=key(beside))

    assert await me.move(6) == 6
    await next_of(me, Connected, key=key(lonely))
    await next_of(lonely, Connected, key=key(me))
    await next_of(beside, MemberLeft, key=key(me))
    assert me.members == {key(lonely)} and beside.members == set()

    assert await me.sit_with(key(friend)) == 9  # homed on the other node
    await next_of(me, Connected, key=key(friend))
    await next_of(lonely, MemberLeft, key=key(me))
    assert me.members == {key(friend)}

    with pytest.raises(SignalingError) as full:
        await lonely.sit_with(key(friend))  # layer 9 holds two now
    assert full.value.code == "layer-full"
    with pytest.raises(SignalingError) as unknown:
        await lonely.sit_with(bytes(32))
    assert unknown.value.code == "unknown-peer"
    assert lonely.layer == 6 and me.layer == 9

    # the page's estimates (the node's to make): at least ten layers, as layer 9 is
    # seated, and at least the two people of our own layer
    census = await me.census()
    assert census.layer == 9 and census.layers >= 10 and census.total >= 2
    assert [c.count for c in census.counts if c.layer == 9] == [2]
    assert (me.layers, me.total) == (census.layers, census.total)
    for room in (beside, *crowd, lonely):  # each as its node answered its join
        assert room.layers >= 1 and room.total >= 1
