"""The attacker's view: fixtures for real nodes, raw sockets and peers on loopback."""

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from signaling.node import SignalingNode
from tests.peer.conftest import PeerFactory, loopback_ice, peers  # noqa: F401  (fixtures)
from tests.signaling.conftest import (  # noqa: F401  (fixtures)
    ClientFactory,
    NodeFactory,
    connect,
    raw,
    signaling_mesh,
)


class Sockets:
    """Raw WebSockets from chosen loopback addresses, closed at the end."""

    def __init__(self) -> None:
        self.sessions: list[aiohttp.ClientSession] = []
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def open(
        self,
        node: SignalingNode,
        source: str,
        path: str = "/v1/ws",
        forwarded: str | None = None,
    ) -> int:
        """101 when the node took the connection, else the HTTP status it answered;
        `forwarded`: an X-Forwarded-For header to send."""
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
        self.sessions.append(http)
        headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
        try:
            self.sockets.append(await http.ws_connect(node.url + path, headers=headers))
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        return 101

    async def close(self) -> None:
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for http in self.sessions:
            await http.close()


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    opened = Sockets()
    yield opened
    await opened.close()
