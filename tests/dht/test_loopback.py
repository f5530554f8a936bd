"""Real UDP on 127.0.0.1: a 50-node mesh, crashes, restarts, forged records and a flood."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from dht.core import DHTConfig
from dht.identity import Identity
from dht.ids import key_for
from dht.node import DHTNode
from dht.records import Record, Refusal
from dht.wire import (
    FindNode,
    StoreRecords,
    StoreRecordsReply,
    parse_frame,
    parse_reply,
    serialize_request,
)

from .conftest import LOOPBACK_CONFIG, REPUBLISH, MeshFactory

pytestmark = pytest.mark.integration


async def read_all(nodes: list[DHTNode], key: bytes) -> list[list[bytes]]:
    results = await asyncio.wait_for(
        asyncio.gather(*(n.get_records(key) for n in nodes)), timeout=20
    )
    return [[r.value for r in records] for records in results]


async def test_a_record_survives_the_crash_of_30_percent_of_the_mesh(
    udp_mesh: MeshFactory,
) -> None:
    mesh = await udp_mesh(50)
    key = key_for("https://example.org/")
    assert await mesh[7].put_record(key, b"still here", ttl=600) >= 20
    assert await read_all(mesh, key) == [[b"still here"]] * len(mesh)

    rng = random.Random(42)
    victims = rng.sample(mesh[1:], 15)
    for node in victims:
        node.abort()  # no goodbye, no saved state: a SIGKILL as the others see it
    survivors = [n for n in mesh if n not in victims]
    await asyncio.sleep(REPUBLISH * 1.5)  # one republish interval, then read

    assert await read_all(survivors, key) == [[b"still here"]] * len(survivors)
    holders = [n for n in survivors if n.core.local_records(key, time.time())]
    assert len(holders) >= 15, "republishing should restore replicas on live nodes"


async def test_a_restarted_node_rejoins_from_its_saved_table(udp_mesh: MeshFactory) -> None:
    mesh = await udp_mesh(50)
    key = key_for("restart")
    await mesh[3].put_record(key, b"v", ttl=600)
    node = mesh[12]
    old_id = node.node_id
    await node.stop()  # saves routing.json and keeps node.key
    again = await DHTNode.start("127.0.0.1", 0, node.data_dir, config=LOOPBACK_CONFIG)
    try:
        assert again.node_id == old_id
        assert len(again.core.table) >= 20
        assert [r.value for r in await again.get_records(key)] == [b"v"]
    finally:
        again.abort()


class RawSocket(asyncio.DatagramProtocol):
    """An outside client (or attacker) speaking the wire format by hand."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == b"\x01":  # responses only; nodes also ask us to identify ourselves
            self.replies.put_nowait(data)


async def raw_socket() -> tuple[asyncio.DatagramTransport, RawSocket]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(RawSocket, local_addr=("127.0.0.1", 0))


async def test_forged_hijacked_and_rolled_back_records_are_refused_by_every_node(
    udp_mesh: MeshFactory,
) -> None:
    nodes = await udp_mesh(12)
    transport, raw = await raw_socket()
    try:
        key = key_for("victim")
        victim, attacker = Identity.from_seed(b"v" * 32), Identity.from_seed(b"m" * 32)
        expires = int(time.time()) + 600
        honest = Record.create(victim, key, b"honest", 5, expires)
        assert await nodes[0].publish(honest) == 12
        flipped = bytes([honest.signature[0] ^ 0x80]) + honest.signature[1:]
        forged = Record(key, victim.public_key, 6, expires, b"forged", flipped)
        signed_by_attacker = Record.create(attacker, key, b"hijack", 7, expires).signature
        hijack = Record(key, victim.public_key, 7, expires, b"hijack", signed_by_attacker)
        rollback = Record.create(victim, key, b"older", 4, expires)
        request = StoreRecords(b"\x01" * 20, (forged, hijack, rollback))
        for i, node in enumerate(nodes):
            transport.sendto(serialize_request(bytes([i]) * 20, request), node.address)
        for _ in nodes:
            frame = parse_frame(await asyncio.wait_for(raw.replies.get(), 5))
            reply = parse_reply(request, frame.body)
            assert isinstance(reply, StoreRecordsReply)
            assert reply.statuses == (
                Refusal.BAD_SIGNATURE,
                Refusal.BAD_SIGNATURE,
                Refusal.STALE_SEQ,
            )
        for node in nodes[::3]:
            assert [r.value for r in await node.get_records(key)] == [b"honest"]
    finally:
        transport.close()


async def test_a_flood_from_one_source_is_rate_limited_while_lookups_go_on(
    udp_mesh: MeshFactory,
) -> None:
    nodes = await udp_mesh(12, DHTConfig(request_rate=100.0, request_burst=200.0))
    target = nodes[5]
    transport, _ = await raw_socket()
    try:
        flood = serialize_request(b"f" * 20, FindNode(b"\x02" * 20, b"\x03" * 20))
        lookups = [nodes[i].find_node(target.node_id) for i in (1, 8, 11)]
        deadline = time.monotonic() + 5.0
        for _ in range(5000):  # bounded in count and in time
            transport.sendto(flood, target.address)
            # One loop turn per datagram: the node reads as fast as we send, so the
            # kernel's socket buffer does not drop the flood before the limiter sees it.
            await asyncio.sleep(0)
            if time.monotonic() > deadline:
                break
        results = await asyncio.wait_for(asyncio.gather(*lookups), 10)
        assert all(found[0].node_id == target.node_id for found in results)
        limited = target.core.counters["drop.rate_limited"]
        assert limited >= 4000, target.core.counters
        assert target.core.counters["rpc.in.FindNode"] < 1000
    finally:
        transport.close()
