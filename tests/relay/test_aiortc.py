"""Two aiortc peers restricted to relay candidates connect through our relay on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from relay.credentials import mint_credentials

from .conftest import ServerFactory, with_config
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


async def until(condition: Callable[[], bool]) -> None:
    """Return once `condition` holds (aioice's timers make it true); bound it with wait_for.

    The condition reads the relay core's counters, which have no callback to
    hang an Event on; the poll only decides when to look, never the outcome.
    """
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def test_relayed_link_outlives_its_credentials(relay_server: ServerFactory) -> None:
    """Refreshes after the credentials' expiry, and permissions outlived by their channel.

    The relay grants 4 s allocations, and aioice refreshes at 5/6 of the
    LIFETIME the server answers (3.3 s, then every 3.3 s) with the username it
    allocated with, which expires 2-3 s after minting. Permissions last 2 s
    here: aioice never sends CreatePermission and rebinds channels only every
    500 s, so this is the 300 s vs 500 s gap of the defaults, compressed.
    """
    config = with_config(default_lifetime=4.0, max_lifetime=4.0, permission_lifetime=2.0)
    server = await relay_server(config)
    host, port = server.address
    minted = time.time()
    expiry = int(minted + 3)

    def connection(peer: str) -> RTCPeerConnection:
        username, password = mint_credentials(SECRET, peer, 3, minted)
        ice = RTCIceServer(urls=f"turn:{host}:{port}", username=username, credential=password)
        return RTCPeerConnection(
            RTCConfiguration(iceServers=[ice], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )

    alice, bob = connection("alice"), connection("bob")
    received: asyncio.Queue[str] = asyncio.Queue()
    echoes: asyncio.Queue[str] = asyncio.Queue()
    counters = server.core.counters
    try:
        channel = alice.createDataChannel("chat")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        channel.on("message", echoes.put_nowait)

        @bob.on("datachannel")
        def on_channel(remote: object) -> None:
            @remote.on("message")  # type: ignore[attr-defined]
            def on_message(message: str) -> None:
                received.put_nowait(message)
                remote.send("echo " + message)  # type: ignore[attr-defined]

        await alice.setLocalDescription(await alice.createOffer())
        await bob.setRemoteDescription(alice.localDescription)
        await bob.setLocalDescription(await bob.createAnswer())
        await alice.setRemoteDescription(bob.localDescription)
        await asyncio.wait_for(opened.wait(), 10)

        async def exchange(phase: str) -> None:
            sent = [f"{phase} {i}" for i in range(5)]
            for text in sent:
                channel.send(text)
            assert [await asyncio.wait_for(received.get(), 3) for _ in sent] == sent
            assert [await asyncio.wait_for(echoes.get(), 3) for _ in sent] == [
                "echo " + text for text in sent
            ]

        def refreshes_answered() -> int:
            # Granted or refused: a relay that refuses must lose the messages, not the wait.
            return counters["requests.refresh"] + counters["refuse.expired_credentials"]

        # ICE's first checks may reach a relay before the other side's ChannelBind.
        drops_at_open = counters["drop.no_permission"], counters["drop.no_channel"]
        await exchange("before")
        await asyncio.wait_for(until(lambda: refreshes_answered() >= 2), 6)  # both allocations
        assert time.time() > expiry
        await exchange("after the first refresh")
        await asyncio.wait_for(until(lambda: refreshes_answered() >= 4), 6)
        await exchange("after the second refresh")
        assert server.core.allocation_count == 2
        assert counters["refuse.expired_credentials"] == 0
        assert counters["requests.past_expiry"] == 4
        assert (counters["drop.no_permission"], counters["drop.no_channel"]) == drops_at_open
    finally:
        await alice.close()
        await bob.close()
