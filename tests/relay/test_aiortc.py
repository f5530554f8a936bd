"""Two aiortc peers restricted to relay candidates connect through our relay on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from relay.credentials import mint_credentials

from .conftest import ServerFactory
from .turn import SECRET

pytestmark = pytest.mark.integration


async def test_data_channel_over_relay_only(relay_server: ServerFactory) -> None:
    server = await relay_server()  # allow-list: 127.0.0.1
    host, port = server.address

    def connection(peer: str) -> RTCPeerConnection:
        username, password = mint_credentials(SECRET, peer, 600, time.time())
        ice = RTCIceServer(urls=f"turn:{host}:{port}", username=username, credential=password)
        return RTCPeerConnection(
            RTCConfiguration(iceServers=[ice], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )

    alice, bob = connection("alice"), connection("bob")
    received: asyncio.Queue[str] = asyncio.Queue()
    try:
        channel = alice.createDataChannel("chat")
        opened = asyncio.Event()
        channel.on("open", opened.set)

        @bob.on("datachannel")
        def on_channel(remote: object) -> None:
            @remote.on("message")  # type: ignore[attr-defined]
            def on_message(message: str) -> None:
                received.put_nowait(message)
                remote.send("echo " + message)  # type: ignore[attr-defined]

        echoes: asyncio.Queue[str] = asyncio.Queue()
        channel.on("message", echoes.put_nowait)

        await alice.setLocalDescription(await alice.createOffer())
        offer = alice.localDescription
        assert " typ relay" in offer.sdp and " typ host" not in offer.sdp
        await bob.setRemoteDescription(offer)
        await bob.setLocalDescription(await bob.createAnswer())
        await alice.setRemoteDescription(bob.localDescription)

        await asyncio.wait_for(opened.wait(), 15)
        for i in range(3):
            channel.send(f"hello {i}")
        for i in range(3):
            assert await asyncio.wait_for(received.get(), 5) == f"hello {i}"
            assert await asyncio.wait_for(echoes.get(), 5) == f"echo hello {i}"
        counters = server.core.counters
        assert server.core.allocation_count == 2
        assert counters["relayed.packets.to_peer"] > 0
        assert counters["relayed.packets.to_client"] > 0
    finally:
        await alice.close()
        await bob.close()
