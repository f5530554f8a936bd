"""Hostile input over real UDP on 127.0.0.1: forged, hijacked and rolled-back records, a
node that lies in its replies, and a flood from one source.

The attacker is a raw asyncio UDP socket speaking the wire format by hand
(dht.wire), so nothing of our node code stands between it and its targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest

from dht.identity import Identity
from dht.ids import ID_BYTES, key_for
from dht.node import DHTNode
from dht.records import Record, Refusal, signed_payload
from dht.wire import (
    MSG_ID_BYTES,
    Address,
    FindNode,
    FindRecords,
    FindRecordsReply,
    Frame,
    Identify,
    IdentifyReply,
    NodesReply,
    Ping,
    PingReply,
    Reply,
    Request,
    StoreRecords,
    StoreRecordsReply,
    WireError,
    identify_payload,
    parse_frame,
    parse_reply,
    parse_request,
    serialize_request,
    serialize_response,
)

from .conftest import LOOPBACK_CONFIG, MeshFactory

pytestmark = pytest.mark.integration

MESH_SIZE = 12
TIMEOUT = 5.0
TTL = 600
FLOOD_COUNT = 5_000
FLOOD_SECONDS = TIMEOUT
FLOOD_LEAD = 1_000


class RawPeer(asyncio.DatagramProtocol):
    """An outside client on its own socket: sends requests by hand, matches replies by id.

    A reply counts only if it comes from the address the request went to. Requests
    the nodes send us (they ask every stranger to prove its id) go to `answer`,
    which ignores them here; `LyingNode` answers them.
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.transport: asyncio.DatagramTransport | None = None
        self.heard: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._waiting: dict[bytes, tuple[Address, asyncio.Future[Frame]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            frame = parse_frame(data)
        except WireError:
            return
        if frame.is_request:
            with contextlib.suppress(WireError):
                request = parse_request(frame.body)
                self.heard[type(request).__name__] += 1
                reply = self.answer(request)
                if reply is not None:
                    self.send(serialize_response(frame.msg_id, reply), addr)
            return
        waiting = self._waiting.get(frame.msg_id)
        if waiting is not None and waiting[0] == addr[:2] and not waiting[1].done():
            waiting[1].set_result(frame)

    def answer(self, request: Request) -> Reply | None:
        return None

    def send(self, datagram: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(datagram, addr)

    async def call(self, addr: Address, request: Request) -> Reply:
        """One request, its reply parsed by the request's type, within TIMEOUT."""
        msg_id = next(self._ids).to_bytes(MSG_ID_BYTES, "big")
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = (addr, future)
        try:
            self.send(serialize_request(msg_id, request), addr)
            frame = await asyncio.wait_for(future, TIMEOUT)
        finally:
            del self._waiting[msg_id]
        return parse_reply(request, frame.body)

    async def store(self, node: DHTNode, *records: Record) -> tuple[int, ...]:
        reply = await self.call(node.address, StoreRecords(self.identity.node_id, records))
        assert isinstance(reply, StoreRecordsReply)
        return reply.statuses


class LyingNode(RawPeer):
    """A node that proves its id like an honest one, then serves forged records."""

    def __init__(self, identity: Identity, lies: tuple[Record, ...]) -> None:
        super().__init__(identity)
        self.lies = lies

    def answer(self, request: Request) -> Reply | None:
        match request:
            case Identify(sender_id, nonce):
                payload = identify_payload(nonce, sender_id)
                return IdentifyReply(self.identity.public_key, self.identity.sign(payload))
            case Ping():
                return PingReply(self.identity.node_id)
            case FindNode():
                return NodesReply(())
            case FindRecords():
                return FindRecordsReply((), self.lies, False)
        return None


@contextlib.asynccontextmanager
async def raw_peer(factory: Callable[[], RawPeer]) -> AsyncIterator[RawPeer]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(factory, local_addr=("127.0.0.1", 0))
    try:
        yield peer
    finally:
        transport.close()


def seeded_identity(rng: random.Random) -> Identity:
    return Identity.from_seed(rng.randbytes(32))


def flip_one_bit(data: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(data))
    return data[:index] + bytes([data[index] ^ (1 << rng.randrange(8))]) + data[index + 1 :]


async def read_everywhere(nodes: list[DHTNode], key: bytes) -> list[list[Record]]:
    reads = asyncio.gather(*(node.get_records(key) for node in nodes))
    return await asyncio.wait_for(reads, TIMEOUT * 2)


async def publish_everywhere(nodes: list[DHTNode], record: Record) -> None:
    """Publish through nodes[0]; in a mesh smaller than k every node takes it."""
    assert await asyncio.wait_for(nodes[0].publish(record), TIMEOUT) == len(nodes)


class Scene:
    """A victim publisher with an honest record, and an attacker with its own key."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.victim = seeded_identity(self.rng)
        self.attacker = seeded_identity(self.rng)
        self.key = key_for(f"https://example.org/victim/{seed}")
        self.expires = int(time.time()) + TTL

    def signed(self, seq: int, value: bytes, by: Identity | None = None) -> Record:
        """A record claiming the victim as publisher, signed by `by` (the victim by default)."""
        signer = by or self.victim
        payload = signed_payload(self.key, self.victim.public_key, seq, self.expires, value)
        return Record(
            self.key, self.victim.public_key, seq, self.expires, value, signer.sign(payload)
        )

    def forged(self, seq: int, value: bytes) -> Record:
        """A valid victim record with one bit of its signature flipped: the only defect."""
        valid = self.signed(seq, value)
        return dataclasses.replace(valid, signature=flip_one_bit(valid.signature, self.rng))


async def test_forged_and_hijacked_records_are_refused_by_every_node(
    udp_mesh: MeshFactory,
) -> None:
    nodes = await asyncio.wait_for(udp_mesh(MESH_SIZE), TIMEOUT)
    scene = Scene(seed=1)
    honest = scene.signed(5, b"honest")
    await publish_everywhere(nodes, honest)

    forged = scene.forged(6, b"forged")
    # The victim's key as publisher and a higher seq, signed by the attacker's key.
    hijack = scene.signed(7, b"hijack", by=scene.attacker)

    async with raw_peer(lambda: RawPeer(scene.attacker)) as attacker:
        replies = await asyncio.gather(*(attacker.store(n, forged, hijack) for n in nodes))
    assert replies == [(Refusal.BAD_SIGNATURE, Refusal.BAD_SIGNATURE)] * MESH_SIZE
    assert all(n.core.counters["record.refused.bad_signature"] == 2 for n in nodes)

    assert await read_everywhere(nodes, scene.key) == [[honest]] * MESH_SIZE
    now = time.time()
    assert all(n.core.local_records(scene.key, now) == [honest] for n in nodes)


async def test_a_lying_node_cannot_inject_records_into_reads(udp_mesh: MeshFactory) -> None:
    nodes = await asyncio.wait_for(udp_mesh(MESH_SIZE), TIMEOUT)
    scene = Scene(seed=2)
    honest = scene.signed(5, b"honest")
    await publish_everywhere(nodes, honest)
    forged = scene.forged(8, b"forged")
    hijack = scene.signed(9, b"hijack", by=scene.attacker)
    elsewhere = Record.create(scene.attacker, key_for("another key"), b"x", 1, scene.expires)
    liar_identity = seeded_identity(scene.rng)

    reader = nodes[4]
    lies = (forged, hijack, elsewhere)
    async with raw_peer(lambda: LyingNode(liar_identity, lies)) as liar:
        # The liar introduces itself; the reader asks it to prove its id and admits it.
        # The second ping is answered only after the reader has handled the liar's
        # identify reply (one socket, datagrams in order), so admission is settled.
        for _ in range(2):
            reply = await liar.call(reader.address, Ping(liar_identity.node_id))
            assert reply == PingReply(reader.node_id)
        assert liar.heard["Identify"] == 1 and liar_identity.node_id in reader.core.table

        # With fewer than k nodes, a read asks every node it knows: the liar too.
        records = await asyncio.wait_for(reader.get_records(scene.key), TIMEOUT)
        assert liar.heard["FindRecords"] >= 1
    assert records == [honest]
    counters = reader.core.counters
    assert counters["drop.record_bad_signature"] >= 2
    assert counters["drop.record_wrong_key"] >= 1


async def test_a_seq_rollback_is_refused_with_stale_seq(udp_mesh: MeshFactory) -> None:
    nodes = await asyncio.wait_for(udp_mesh(MESH_SIZE), TIMEOUT)
    scene = Scene(seed=3)
    first, second = scene.signed(5, b"first"), scene.signed(6, b"second")
    await publish_everywhere(nodes, first)
    await publish_everywhere(nodes, second)  # a newer seq replaces: the control case
    assert await read_everywhere(nodes, scene.key) == [[second]] * MESH_SIZE

    # The publisher's own older record, validly signed, sent again; and the current
    # seq rewritten with another value. Both are stale: seq only moves forward.
    rewrite = scene.signed(6, b"rewritten")
    async with raw_peer(lambda: RawPeer(scene.attacker)) as attacker:
        replies = await asyncio.gather(*(attacker.store(n, first, rewrite) for n in nodes))
    assert replies == [(Refusal.STALE_SEQ, Refusal.STALE_SEQ)] * MESH_SIZE
    # Through the API as well: a republish of the old seq lands nowhere.
    assert await asyncio.wait_for(nodes[3].publish(first), TIMEOUT) == 0

    assert await read_everywhere(nodes, scene.key) == [[second]] * MESH_SIZE


class Flood:
    """One raw socket sending the same datagram once per event-loop turn.

    That is as fast as this process can take them: the nodes share the loop and
    read one datagram per turn, so sending faster (from a thread, say) would
    only overflow the target's kernel socket buffer, which tests the kernel and
    drops the other nodes' requests along with the flood, not our rate limiter.
    Bounded by FLOOD_COUNT datagrams and FLOOD_SECONDS; `started` resolves once
    FLOOD_LEAD are out, `done` with how many were sent when it ended.
    """

    def __init__(self, transport: asyncio.DatagramTransport, datagram: bytes, addr: Address):
        self.loop = asyncio.get_running_loop()
        self.transport, self.datagram, self.addr = transport, datagram, addr
        self.sent = 0
        self.started: asyncio.Future[None] = self.loop.create_future()
        self.done: asyncio.Future[int] = self.loop.create_future()
        self._deadline = self.loop.time() + FLOOD_SECONDS
        self._turn = self.loop.call_soon(self._send_one)

    def _send_one(self) -> None:
        if self.sent >= FLOOD_COUNT or self.loop.time() >= self._deadline:
            self.stop()
            return
        self.transport.sendto(self.datagram, self.addr)
        self.sent += 1
        if self.sent == FLOOD_LEAD:
            self.started.set_result(None)
        self._turn = self.loop.call_soon(self._send_one)

    def stop(self) -> None:
        self._turn.cancel()
        if not self.done.done():
            self.done.set_result(self.sent)


async def test_a_flood_from_one_source_is_rate_limited_while_lookups_go_on(
    udp_mesh: MeshFactory,
) -> None:
    rate, burst = 100.0, 200.0
    limits = dataclasses.replace(LOOPBACK_CONFIG, request_rate=rate, request_burst=burst)
    nodes = await asyncio.wait_for(udp_mesh(MESH_SIZE, limits), TIMEOUT)
    target = nodes[5]
    before = target.core.counters.copy()
    # Valid find_node requests: each one the limiter let through would cost a reply.
    request = FindNode(b"\x02" * ID_BYTES, b"\x03" * ID_BYTES)
    datagram = serialize_request(b"f" * MSG_ID_BYTES, request)

    rng = random.Random(5)
    async with (
        raw_peer(lambda: RawPeer(seeded_identity(rng))) as flooder,
        raw_peer(lambda: RawPeer(seeded_identity(rng))) as bystander,
    ):
        assert flooder.transport is not None
        began = time.monotonic()
        flood = Flood(flooder.transport, datagram, target.address)
        try:
            await asyncio.wait_for(flood.started, TIMEOUT)
            limited_at_start = (target.core.counters - before)["drop.rate_limited"]
            # Lookups from three other nodes while the flood goes on. In a mesh smaller
            # than k a lookup asks every node, so each one goes through the target.
            targets = [target.node_id, rng.randbytes(ID_BYTES), rng.randbytes(ID_BYTES)]
            lookups = [nodes[i].find_node(t) for i, t in zip((1, 8, 11), targets, strict=True)]
            results = await asyncio.wait_for(asyncio.gather(*lookups), TIMEOUT)
            assert not flood.done.done(), "the flood ended before the lookups did"
            sent = await asyncio.wait_for(flood.done, TIMEOUT)
        finally:
            flood.stop()
        # A socket reads datagrams in order: once the target answers a later request
        # from another source, it has seen every datagram of the flood.
        ping = Ping(bystander.identity.node_id)
        assert await bystander.call(target.address, ping) == PingReply(target.node_id)
        seconds = time.monotonic() - began

    assert sent == FLOOD_COUNT
    assert limited_at_start > 0, "the limiter was already dropping when the lookups began"
    assert results[0][0].node_id == target.node_id
    for found in results:
        assert len(found) == MESH_SIZE - 1, "every other node answered, the target too"
    # The flood was served what the token bucket holds and refills, no more; the
    # rest was dropped before parsing, costing no reply.
    grown = target.core.counters - before
    served = sent - grown["drop.rate_limited"]
    assert burst <= served <= burst + rate * seconds + 1, (sent, seconds, grown)
