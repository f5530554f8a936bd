"""A stranger's view of a node: any socket, any number of keys, one address.

What a stranger may do: connect, prove keys, join rooms within per-source
limits. What it may never do: reach a member it is not seated with, hold the
node's attention with a flood from one address, or make an idle, legitimate
client be dropped. Real nodes on loopback, real WebSockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer.signaling import ErrorFrame, PeerJoined, SignalFrom, SignalingClient, SignalingError
from signaling.admission import AdmissionLimits
from signaling.protocol import SignRequest
from signaling.rooms import canonical_url, room_key
from signaling.session import SessionLimits
from tests.signaling.conftest import FAST_NODE, ClientFactory, NodeFactory

pytestmark = pytest.mark.integration

ROOM = room_key(canonical_url("https://example.org/strangers"))
OTHER = room_key(canonical_url("https://example.org/elsewhere"))


async def refused(client: SignalingClient, to: bytes, room: bytes) -> str:
    """Signal `to` in `room`; the error code the node answers with."""
    await client.signal(to, {"t": "relink"}, room)
    async with asyncio.timeout(5):
        while True:
            event = await client.next_event()
            if isinstance(event, ErrorFrame):
                return str(event.code)


async def test_signals_reach_only_members_of_the_same_layer(
    signaling_mesh: NodeFactory, connect: ClientFactory, raw: Any
) -> None:
    """The probe's finding 3: a client in no room, in another room, in another layer,
    or whose join failed its signature check reached a member. Now none do."""
    a, b = await signaling_mesh(2, layer_size=2)
    alice = await connect(a)  # the victim, layer 0
    await alice.join(ROOM)
    bob = await connect(b)  # her layer-mate, homed at another node
    await bob.join(ROOM)
    assert isinstance(await alice.next_event(), PeerJoined)

    nobody = await connect(b)  # in no room at all
    elsewhere = await connect(b)  # in another room
    await elsewhere.join(OTHER)
    upstairs = await connect(b)  # in the same room, another layer (layer 0 is full)
    assert (await upstairs.join(ROOM)).layer == 1
    neighbour = await connect(a)  # on alice's own node, another layer
    assert (await neighbour.join(ROOM)).layer == 1

    assert await refused(nobody, alice.key, ROOM) == "not-in-room"
    assert await refused(elsewhere, alice.key, OTHER) == "unknown-peer"
    assert await refused(upstairs, alice.key, ROOM) == "unknown-peer"
    assert await refused(neighbour, alice.key, ROOM) == "unknown-peer"

    # A join whose presence signature fails never seats its client: it cannot signal.
    mallory = await raw(b)
    assert (await mallory.hello(SigningKey.generate()))["type"] == "welcome"
    await mallory.send({"type": "join", "id": "j", "room": ROOM.hex()})
    sign = await mallory.receive()
    assert sign["type"] == "sign"
    await mallory.send({"type": "signed", "id": sign["id"], "sig": "A" * 86 + "=="})
    assert (await mallory.receive())["code"] == "bad-signature"
    payload = {"type": "signal", "to": alice.key.hex(), "room": ROOM.hex(), "payload": "x"}
    await mallory.send(payload)
    assert (await mallory.receive())["code"] == "not-in-room"

    # The one legitimate sender still gets through, and it is all alice ever saw.
    await bob.signal(alice.key, {"t": "hello"}, ROOM)
    event = await alice.next_event()
    assert event == SignalFrom(bob.key, {"t": "hello"}, ROOM)  # nothing from the others before
    assert alice._events.empty()
    assert a.rooms.counters["signal.refused"] >= 1
    assert b.rooms.counters["signal.refused"] >= 2


async def test_a_member_who_left_cannot_be_reached_nor_reach(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    a, b = await signaling_mesh(2)
    alice, bob = await connect(a), await connect(b)
    await alice.join(ROOM)
    await bob.join(ROOM)
    await bob.leave(ROOM)
    await bob.join(OTHER)
    assert await refused(bob, alice.key, OTHER) == "unknown-peer"
    assert await refused(bob, alice.key, ROOM) == "not-in-room"
    assert await refused(alice, bob.key, ROOM) == "unknown-peer"


STRICT = AdmissionLimits(unauthenticated=8, per_second=4.0, burst=20.0)


async def test_a_flood_from_one_address_is_refused_before_the_upgrade(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """The probe opened 2,853 connections in 15 s from one IP and pushed a node's CPU
    to 97 %. Now one address gets its burst, then HTTP 429, and the node stays quick."""
    (node,) = await signaling_mesh(1, admission=STRICT)
    alice = await SignalingClient.connect(node.url, SigningKey.generate())  # before the flood
    opened: list[aiohttp.ClientWebSocketResponse] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        for _ in range(400):  # bounded: one address, as fast as it can
            try:
                ws = await http.ws_connect(node.url + "/v1/ws", timeout=aiohttp.ClientWSTimeout(2))
            except aiohttp.WSServerHandshakeError as exc:
                statuses[exc.status] = statuses.get(exc.status, 0) + 1
                continue
            opened.append(ws)
            statuses[101] = statuses.get(101, 0) + 1
        elapsed = time.monotonic() - started
        # never more waiting for their hello than the cap, whatever the rate allowed
        assert len(opened) <= STRICT.unauthenticated
        assert statuses.get(429, 0) >= 400 - STRICT.unauthenticated
        assert node.admission.waiting("127.0.0.1") == len(opened)
        # the node still serves its clients, and quickly
        assert await alice.ping() < 0.5
        async with http.get(node.url.replace("ws://", "http://") + "/healthz") as reply:
            assert reply.status == 200
        # the ones that waited close; the address then gets its rate, no more
        for ws in opened:
            await ws.close()
        await asyncio.sleep(0.1)
        assert node.admission.waiting("127.0.0.1") == 0
    assert elapsed < 30
    await alice.close()


async def test_a_stranger_with_many_keys_gets_the_rate_of_one_address(
    signaling_mesh: NodeFactory,
) -> None:
    """2,000 keys from one address: each proves its key, but connections per second from
    the address are bounded, so the keys arrive at the rate, not at once."""
    (node,) = await signaling_mesh(1, admission=STRICT)
    admitted = refused_count = 0
    clients: list[SignalingClient] = []
    started = time.monotonic()
    for _ in range(2000):
        if time.monotonic() - started > 3.0:
            break
        try:
            clients.append(await SignalingClient.connect(node.url, SigningKey.generate()))
            admitted += 1
        except SignalingError:
            refused_count += 1
    elapsed = time.monotonic() - started
    for client in clients:
        await client.close()
    assert admitted <= STRICT.burst + STRICT.per_second * elapsed + 1
    assert refused_count > admitted  # the rest were turned away at the door
    assert node.metrics.refused.labels("admission")._value.get() == refused_count


async def test_an_ipv6_neighbourhood_is_one_source() -> None:
    from signaling.admission import source_of

    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::9")
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("192.0.2.7") != source_of("192.0.2.8")


async def test_an_idle_client_is_never_dropped(signaling_mesh: NodeFactory) -> None:
    """The probe's finding 4: an idle page or an unseated Python client was closed with
    4000 every 60 s. The client now pings within a third of the node's idle timeout."""
    limits = dataclasses.replace(FAST_NODE.limits, idle_timeout=0.9)
    (node,) = await signaling_mesh(1, limits=limits)
    client = await SignalingClient.connect(node.url, SigningKey.generate())
    assert client.idle_timeout == pytest.approx(0.9)
    try:
        with pytest.raises(TimeoutError):  # nothing happens: no idle error, no close
            await client.next_event(within=3.0)
        assert not client.closed
        assert await client.ping() < 1
    finally:
        await client.close()
    assert node.metrics.errors.labels("idle")._value.get() == 0


async def test_a_node_cannot_make_a_client_sign_for_another_layer(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    (node,) = await signaling_mesh(1)
    alice = await connect(node)
    joined = await alice.join(ROOM)
    lie = SignRequest("s", ROOM, joined.layer + 1, bytes(20), 1, 1, "{}", node.node_id, node.url)
    await alice._dispatch(lie)
    event = await alice.next_event()
    assert getattr(event, "code", None) == "refused-sign"


def test_session_limits_default_idle_is_what_clients_assume() -> None:
    from peer.signaling import DEFAULT_IDLE

    assert SessionLimits().idle_timeout == DEFAULT_IDLE


async def test_non_ascii_signals_are_measured_in_bytes_and_cross_links_intact(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """A member's signal of 50,000 'é' was 100 KB of UTF-8 under a 64 KiB limit counted in
    characters; the node escaped it to 300 KB on the link, which the other node closed:
    no signal crossed that link while the attack went on. Now frames are measured in
    bytes and travel as UTF-8."""
    a, b = await signaling_mesh(2)
    alice, bob = await connect(a), await connect(b)
    await alice.join(ROOM)
    await bob.join(ROOM)
    assert isinstance(await alice.next_event(), PeerJoined)
    assert await refused_payload(bob, alice.key, "é" * 50_000) == "too-large"
    big = "é" * 30_000  # 60 KB of UTF-8: within the limit, and it arrives whole
    await bob.signal(alice.key, big, ROOM)
    for i in range(20):
        await bob.signal(alice.key, {"n": i}, ROOM)
    event = await alice.next_event()
    assert isinstance(event, SignalFrom) and event.payload == big
    got = [(await alice.next_event()).payload for _ in range(20)]  # type: ignore[union-attr]
    assert got == [{"n": i} for i in range(20)]
    assert len(b.links) == 1


async def refused_payload(client: SignalingClient, to: bytes, payload: object) -> str:
    await client.signal(to, payload, ROOM)
    event = await client.next_event()
    assert isinstance(event, ErrorFrame)
    return str(event.code)


async def test_one_join_at_a_time_and_joins_cost_more_than_frames(
    signaling_mesh: NodeFactory, raw: Any
) -> None:
    """98 join frames made a node send 13,929 DHT requests. A connection now has one
    join in flight, and a join takes five tokens of the frame budget."""
    (node,) = await signaling_mesh(1)
    mallory = await raw(node)
    assert (await mallory.hello(SigningKey.generate()))["type"] == "welcome"
    rooms = [room_key(canonical_url(f"https://example.org/j{i}")) for i in range(8)]
    for i, room in enumerate(rooms):
        await mallory.send({"type": "join", "id": i, "room": room.hex()})
    replies = []
    async with asyncio.timeout(5):
        while len(replies) < len(rooms) - 1:  # the first join waits for a signature
            frame = await mallory.receive()
            if frame["type"] == "sign":
                continue  # not signing: that join fails in sign_timeout, the rest are refused
            replies.append(frame)
    assert [r.get("code") for r in replies] == ["rate-limited"] * (len(rooms) - 1)
    rpcs = sum(v for k, v in node.dht.core.counters.items() if k.startswith("rpc.out."))
    assert rpcs < 200


async def test_one_address_cannot_take_every_seat_key_by_key(
    signaling_mesh: NodeFactory,
) -> None:
    limits = AdmissionLimits(unauthenticated=8, connections=10, per_second=100.0, burst=100.0)
    (node,) = await signaling_mesh(1, admission=limits)
    held = [await SignalingClient.connect(node.url, SigningKey.generate()) for _ in range(10)]
    try:
        with pytest.raises(SignalingError, match="unreachable"):
            await SignalingClient.connect(node.url, SigningKey.generate())
        assert node.admission.refused["connections"] == 1
        await held.pop().close()
        await asyncio.sleep(0.1)
        held.append(await SignalingClient.connect(node.url, SigningKey.generate()))
    finally:
        for client in held:
            await client.close()
