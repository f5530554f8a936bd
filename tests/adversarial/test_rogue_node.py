"""A rogue node's view: trusted for availability, never for integrity.

The probe found `/v1/node` accepting any key as a node and `_link_signal`
trusting the claimed sender. Now a link needs a DHT node that proves its id
from the address the link comes from, and what arrives over it may speak
only for clients homed at the node at its other end.
"""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp
import pytest

from dht.identity import Identity
from peer.signaling import PeerJoined, SignalFrom
from signaling.links import link_message
from signaling.node import SignalingNode
from signaling.protocol import (
    HANDSHAKE,
    LinkAbsence,
    LinkChallenge,
    LinkHello,
    LinkPresence,
    LinkSignal,
    layer_key,
    parse_presence,
    serialize,
)
from signaling.rooms import canonical_url, room_key
from tests.signaling.conftest import ClientFactory, NodeFactory

pytestmark = pytest.mark.integration

ROOM = room_key(canonical_url("https://example.org/rogue-node"))


async def handshake(node: SignalingNode, identity: Identity, dht_port: int) -> int | None:
    """Open /v1/node as `identity` claiming a DHT node at `dht_port`; the close code."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(node.url + "/v1/node")
        challenge = HANDSHAKE.parse((await ws.receive(timeout=5)).data, 4096)
        assert isinstance(challenge, LinkChallenge)
        sig = identity.sign(link_message(challenge.nonce, node.node_id))
        await ws.send_str(serialize(LinkHello(identity.public_key, sig, os.urandom(32), dht_port)))
        reply = await ws.receive(timeout=10)
        if reply.type is aiohttp.WSMsgType.TEXT:  # a welcome: we are a node to it
            await ws.close()
            return None
        return ws.close_code


async def test_a_key_without_a_reachable_dht_node_cannot_open_a_link(
    signaling_mesh: NodeFactory,
) -> None:
    a, b = await signaling_mesh(2)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a port where nobody answers
    silent.bind(("127.0.0.1", 0))
    try:
        stranger = Identity.generate()
        assert await handshake(a, stranger, silent.getsockname()[1]) == 1008
        # a real DHT node's port, but not the stranger's key: the identify proves another id
        assert await handshake(a, stranger, b.dht.address[1]) == 1008
    finally:
        silent.close()
    assert len(a.links) == 0
    assert sum(a.links.refused.values()) == 2
    # a real node passes (its own DHT node answers from where its link comes)
    assert await handshake(a, b.identity, b.dht.address[1]) is None


async def test_a_node_speaks_only_for_its_own_clients(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    a, b, rogue = await signaling_mesh(3)
    alice, bob = await connect(a), await connect(b)
    await alice.join(ROOM)
    await bob.join(ROOM)
    assert isinstance(await alice.next_event(), PeerJoined)
    # The rogue reads bob's signed presence from the DHT (records are public)...
    records = await rogue.dht.get_records(layer_key(ROOM, 0))
    bobs = next(r for r in records if r.publisher == bob.key)
    assert parse_presence(bobs).home.node_id == b.node_id
    # ...and tries to speak for him: a signal, a presence, an absence.
    frames = [
        LinkSignal(bob.key, alice.key, {"t": "relink"}, bobs),
        LinkPresence(bobs),
        LinkAbsence(ROOM, 0, bob.key, 2**62, 2**39),
    ]
    for frame in frames:
        await rogue.links.send(a.node_id, a.url, frame)
    # Its own client, seated in another layer, cannot reach alice either.
    mallory = await connect(rogue)
    await mallory.join(ROOM, layer=1)
    records = await rogue.dht.get_records(layer_key(ROOM, 1))
    mallorys = next(r for r in records if r.publisher == mallory.key)
    await rogue.links.send(a.node_id, a.url, LinkSignal(mallory.key, alice.key, "x", mallorys))

    # A legitimate signal from bob, sent after all that, is the first thing alice sees.
    await asyncio.sleep(0.2)
    await bob.signal(alice.key, {"t": "from-bob"}, ROOM)
    event = await alice.next_event()
    assert event == SignalFrom(bob.key, {"t": "from-bob"}, ROOM)
    assert bob.key in {m.key for m in await alice.members(ROOM)}
    drops = a.metrics.link_drops
    assert drops.labels("foreign_client")._value.get() >= 3
    assert a.metrics.signals.labels("refused")._value.get() >= 1
