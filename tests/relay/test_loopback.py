"""A real relay on 127.0.0.1: UDP and TCP clients, security refusals, /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from relay import wire
from relay.core import RelayConfig
from relay.credentials import mint_credentials

from .conftest import Inbox, ServerFactory, transact, with_config
from .turn import SECRET, TurnClient, error_code

pytestmark = pytest.mark.integration

InboxFactory = Callable[[], Awaitable[Inbox]]


def fresh_client(secret: bytes = SECRET, peer: str = "alice", ttl: float = 600) -> TurnClient:
    return TurnClient(*mint_credentials(secret, peer, ttl, time.time()))


async def allocate(
    box: Inbox, server: tuple[str, int], client: TurnClient, **kw: int
) -> wire.StunMessage:
    response = await transact(box, server, client.allocate(**kw))
    if error_code(response) == 401:
        client.learn(response)
        response = await transact(box, server, client.allocate(**kw))
    return response


async def test_udp_allocate_permission_send_and_data(
    relay_server: ServerFactory, inbox: InboxFactory
) -> None:
    server = await relay_server()
    box, peer = await inbox(), await inbox()
    client = fresh_client()
    response = await allocate(box, server.address, client)
    assert response.cls == wire.SUCCESS
    raw = response.get(wire.XOR_RELAYED_ADDRESS)
    assert raw is not None
    relayed = wire.decode_xor_address(raw, response.transaction_id)
    assert relayed[0] == "127.0.0.1"
    assert (await transact(box, server.address, client.create_permission(peer.address))).cls == (
        wire.SUCCESS
    )
    box.send(client.send(peer.address, b"ping"), server.address)
    data, source = await peer.receive()
    assert (data, source) == (b"ping", relayed)
    peer.send(b"pong", relayed)
    data, _ = await box.receive()
    indication = wire.parse_stun(data)
    assert indication.method == wire.DATA and indication.get(wire.DATA_ATTR) == b"pong"
    # A channel from now on.
    bind = client.channel_bind(0x4001, peer.address)
    assert (await transact(box, server.address, bind)).cls == wire.SUCCESS
    box.send(wire.serialize_channel_data(0x4001, b"chan"), server.address)
    assert (await peer.receive())[0] == b"chan"
    peer.send(b"back", relayed)
    assert (await box.receive())[0] == b"\x40\x01\x00\x04back"
    assert server.core.counters["relayed.packets.to_peer"] == 2
    # Deleting closes the relayed socket.
    assert (await transact(box, server.address, client.refresh(0))).cls == wire.SUCCESS
    await asyncio.sleep(0.05)
    assert server._relays == {}


async def test_security_refusals(relay_server: ServerFactory, inbox: InboxFactory) -> None:
    config = RelayConfig(max_allocations_per_user=2, bandwidth_bps=0)  # no allow-list
    server = await relay_server(config)
    box, sink = await inbox(), await inbox()
    # Unauthenticated, wrong secret, expired: 401.
    stranger = fresh_client()
    assert error_code(await transact(box, server.address, stranger.allocate())) == 401
    wrong = fresh_client(b"wrong secret")
    assert error_code(await allocate(box, server.address, wrong)) == 401
    expired = TurnClient(*mint_credentials(SECRET, "old", 60, time.time() - 3600))
    assert error_code(await allocate(box, server.address, expired)) == 401
    assert server.core.allocation_count == 0
    # A day is granted at the cap.
    client = fresh_client()
    response = await allocate(box, server.address, client, lifetime=86400)
    raw = response.get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 3600
    # Special-purpose peers: 403 and nothing sent.
    for host in ["127.0.0.1", "0.0.0.0", "10.0.0.1", "192.168.1.1", "169.254.169.254"]:
        peer = (host, sink.address[1])
        assert (
            error_code(await transact(box, server.address, client.create_permission(peer))) == 403
        )
        box.send(client.send(peer, b"leak"), server.address)
    assert await sink.nothing()
    assert server.core.counters["refuse.peer_address"] == 5
    assert server.core.counters["drop.peer_refused"] == 5
    # Quota + 1: 486 for the same user from other client sockets.
    second, third = await inbox(), await inbox()
    assert (await allocate(second, server.address, fresh_client())).cls == wire.SUCCESS
    assert error_code(await allocate(third, server.address, fresh_client())) == 486


async def test_ipv6_special_peers_refused(relay_server: ServerFactory, inbox: InboxFactory) -> None:
    """IPv6 forms on an IPv6 allocation (relayed on ::1), refused before any socket use."""
    config = RelayConfig(families=(1, 2), relay_host6="::1")
    server = await relay_server(config)
    box = await inbox()
    client = fresh_client()
    first = await transact(box, server.address, client.allocate())
    client.learn(first)
    attrs = [
        (wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])),
        (wire.REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0])),
    ]
    response = await transact(box, server.address, client.request(wire.ALLOCATE, attrs))
    assert response.cls == wire.SUCCESS, error_code(response)
    for host in ["::1", "::", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "fe80::1"]:
        request = client.create_permission((host, 9))
        assert error_code(await transact(box, server.address, request)) == 403, host
    assert server.core.counters["relayed.packets.to_peer"] == 0


async def test_tcp_client_with_channel_padding(
    relay_server: ServerFactory, inbox: InboxFactory
) -> None:
    server = await relay_server()
    peer = await inbox()
    reader, writer = await asyncio.open_connection(*server.address)
    framer = wire.StreamFramer()
    pending: list[bytes] = []

    async def next_message() -> bytes:
        while not pending:
            chunk = await asyncio.wait_for(reader.read(4096), 2.0)
            assert chunk, "connection closed"
            pending.extend(framer.feed(chunk))
        return pending.pop(0)

    async def ask(request: bytes) -> wire.StunMessage:
        writer.write(request)
        response = wire.parse_stun(await next_message())
        client.learn(response)
        return response

    client = fresh_client()
    assert error_code(await ask(client.allocate())) == 401
    response = await ask(client.allocate())
    assert response.cls == wire.SUCCESS
    raw = response.get(wire.XOR_RELAYED_ADDRESS)
    assert raw is not None
    relayed = wire.decode_xor_address(raw, response.transaction_id)
    assert (await ask(client.channel_bind(0x4000, peer.address))).cls == wire.SUCCESS
    # Two messages in one write, one of them padded.
    writer.write(
        wire.serialize_channel_data(0x4000, b"abc", stream=True)
        + wire.serialize_channel_data(0x4000, b"defg", stream=True)
    )
    assert (await peer.receive())[0] == b"abc"
    assert (await peer.receive())[0] == b"defg"
    peer.send(b"xyzzy", relayed)
    assert await next_message() == b"\x40\x00\x00\x05xyzzy\x00\x00\x00"
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if server.core.allocation_count == 0:
            break
        await asyncio.sleep(0.02)
    assert server.core.allocation_count == 0


async def test_tcp_garbage_closes_the_connection(relay_server: ServerFactory) -> None:
    server = await relay_server()
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"\xffNOT TURN\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 2.0) == b""
    writer.close()
    assert server.core.counters["drop.malformed"] == 1


async def test_metrics_endpoint(relay_server: ServerFactory, inbox: InboxFactory) -> None:
    server = await relay_server(with_config(), metrics_port=0)
    box = await inbox()
    await allocate(box, server.address, fresh_client())
    assert server.metrics_address is not None
    url = f"http://127.0.0.1:{server.metrics_address[1]}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        text = await reply.text()
    assert "pagemesh_relay_allocations 1.0" in text
    assert 'pagemesh_relay_refusals_total{reason="unauthenticated"} 1.0' in text
    assert 'pagemesh_relay_packets_total{direction="to_peer"} 0.0' in text
