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
import time

import aiohttp
import pytest

from dht.identity import Identity
from dht.records import Record
from peer.signaling import PeerJoined, SignalFrom
from signaling.links import link_message
from signaling.node import SignalingNode
from signaling.protocol import (
    HANDSHAKE,
    HomeNode,
    LinkAbsence,
    LinkChallenge,
    LinkHello,
    LinkPresence,
    LinkSignal,
    layer_key,
    parse_presence,
    presence_value,
    serialize,
)
from signaling.rooms import canonical_url, room_key, seat_list_value
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
    # The rogue holds bob's signed presence (it travels to every home node of the layer,
    # so any node with a client beside bob has it)...
    bobs = signed_presence(b, bob.key)
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
    mallorys = signed_presence(rogue, mallory.key)
    await rogue.links.send(a.node_id, a.url, LinkSignal(mallory.key, alice.key, "x", mallorys))

    # A legitimate signal from bob, sent after all that, is the first thing alice sees.
    await asyncio.sleep(0.2)
    await bob.signal(alice.key, {"t": "from-bob"}, ROOM)
    event = await alice.next_event()
    assert event == SignalFrom(bob.key, {"t": "from-bob"}, ROOM)
    assert bob.key in {m.key for m in await alice.members(ROOM)}
    assert a.rooms.counters["link.drop.foreign_client"] >= 3
    assert a.rooms.counters["signal.refused"] >= 1


class Tarpit:
    """A TCP listener that accepts and never answers: a home URL that wastes a dial."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.held: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.held.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self.held:
            writer.close()
        if self.server is not None:
            self.server.close()


def signed_presence(node: SignalingNode, client: bytes) -> Record:
    """The presence `client` signed for its seat in ROOM at `node`."""
    record = node.rooms.clients[client].seats[ROOM].record
    assert record is not None
    return record


def forged_presence(layer: int, home: HomeNode, expires: int) -> Record:
    """A presence a stranger signs with a throwaway key, naming any home it likes."""
    key = Identity.generate()
    value = presence_value(ROOM, layer, home)
    return Record.create(key, layer_key(ROOM, layer), value, 1, expires)


async def test_forged_seat_lists_neither_seat_anyone_nor_stall_joins_nor_make_a_node_dial(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """A stranger stores seat lists straight into the DHT, signed by throwaway node keys,
    naming a tarpit as the home URL and a silent port as the DHT address: 30 lists of 24
    seats would fill layer 0 and make every join announce to 30 "homes". Their nodes never
    prove themselves, so nobody is seated by them, no join stalls on them, and no node
    dials them (the review's F1 and the M9 probe)."""
    a, b = await signaling_mesh(2)
    tarpit = Tarpit()
    port = await tarpit.start()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    expires = int(time.time()) + 60
    forged = []
    for i in range(30):
        node = Identity.generate()
        home = HomeNode(node.node_id, f"ws://127.0.0.1:{port}/{i}")
        seats = [(os.urandom(32), 0) for _ in range(24)]
        value = seat_list_value(ROOM, 0, home, silent.getsockname(), seats, 1, 24)
        forged.append(Record.create(node, layer_key(ROOM, 0), value, 1, expires))
    for record in forged:
        await b.dht.publish(record)
    try:
        alice = await connect(a)
        for _ in range(3):
            started = time.monotonic()
            joined = await alice.join(ROOM)
            assert time.monotonic() - started < 3.0
            assert (joined.layer, joined.members, joined.total) == (0, (), 1)
            await alice.leave(ROOM)
        assert a.rooms.counters["home.unproven"] >= 1
        assert tarpit.accepted == 0
    finally:
        silent.close()
        await tarpit.close()


async def test_a_rogue_node_cannot_grow_a_layer_without_bound(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    a, rogue = await signaling_mesh(2)
    alice = await connect(a)
    await alice.join(ROOM)
    expires = int(time.time()) + 60
    home = HomeNode(rogue.node_id, rogue.url)
    for _ in range(1000):  # members homed at the rogue, each with a valid signature
        await rogue.links.send(a.node_id, a.url, LinkPresence(forged_presence(0, home, expires)))
    await asyncio.sleep(1.0)
    view = a.rooms.views[(ROOM, 0)]
    assert len(view.members) == a.config.view_cap
    assert a.rooms.counters["view.full"] >= 1000 - a.config.view_cap
    other = await connect(a)
    joined = await other.join(ROOM)  # a later join still works, and its list still parses
    assert len(joined.members) <= a.config.view_cap


async def test_a_node_keeps_at_most_two_links_to_another(signaling_mesh: NodeFactory) -> None:
    """The review's F10: a rogue node opened 30 links in 11 s and all stayed open."""
    a, rogue = await signaling_mesh(2)
    async with aiohttp.ClientSession() as http:
        held = []
        for _ in range(6):  # the rogue's own key and DHT node: each link passes the proof
            ws = await http.ws_connect(a.url + "/v1/node")
            challenge = HANDSHAKE.parse((await ws.receive(timeout=5)).data, 4096)
            assert isinstance(challenge, LinkChallenge)
            sig = rogue.identity.sign(link_message(challenge.nonce, a.node_id))
            hello = LinkHello(rogue.identity.public_key, sig, os.urandom(32), rogue.dht.address[1])
            await ws.send_str(serialize(hello))
            assert (await ws.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT  # welcome
            held.append(ws)
        await asyncio.sleep(0.5)
        kept = a.links._open_links.get(rogue.node_id, [])
        assert len(kept) == 2
        closed = 0
        for ws in held[:4]:  # the four oldest were closed by `a`
            msg = await ws.receive(timeout=2)
            closed += msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert closed == 4
        assert a.links.refused.get("superseded", 0) == 4
        await a.links.close()  # a node that stops closes both links it kept, not the newest
        for ws in held[4:]:
            msg = await ws.receive(timeout=2)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        for ws in held:
            await ws.close()
