"""Real relays on loopback (port 0), and a small UDP/TCP TURN client to talk to them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest

from relay import wire
from relay.core import RelayConfig
from relay.server import RelayServer
from relay.wire import Address, StunMessage

from .turn import SECRET

LOOPBACK = RelayConfig(allow_peers=("127.0.0.1/32",), bandwidth_bps=0)

ServerFactory = Callable[..., Awaitable[RelayServer]]


@pytest.fixture
async def relay_server() -> AsyncIterator[ServerFactory]:
    """`await relay_server(config=..., **start_options)`: a relay on 127.0.0.1, port 0."""
    started: list[RelayServer] = []

    async def start(config: RelayConfig = LOOPBACK, **options: object) -> RelayServer:
        server = await RelayServer.start(
            "127.0.0.1",
            0,
            SECRET,
            config,
            relay_host="127.0.0.1",
            **options,  # type: ignore[arg-type]
        )
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


class Inbox(asyncio.DatagramProtocol):
    """A UDP socket whose datagrams queue up for the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def receive(self, wait: float = 2.0) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.queue.get(), wait)

    async def nothing(self, wait: float = 0.3) -> bool:
        """True if no datagram arrives within `wait` seconds."""
        try:
            await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def inbox() -> AsyncIterator[Callable[[], Awaitable[Inbox]]]:
    """`await inbox()`: a UDP socket on 127.0.0.1 that queues what it receives."""
    opened: list[Inbox] = []

    async def open_() -> Inbox:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
        opened.append(protocol)
        return protocol

    yield open_
    for box in opened:
        box.close()


async def transact(box: Inbox, server: Address, request: bytes) -> StunMessage:
    """Send a STUN request over UDP and wait for the response with its transaction id."""
    tid = request[8:20]
    box.send(request, server)
    for _ in range(20):
        data, _ = await box.receive()
        if wire.is_stun(data):
            message = wire.parse_stun(data)
            if message.transaction_id == tid:
                return message
    raise AssertionError("no response")


def with_config(**changes: object) -> RelayConfig:
    return dataclasses.replace(LOOPBACK, **changes)  # type: ignore[arg-type]
