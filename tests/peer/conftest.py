"""Peers on a loopback mesh of signaling nodes; ICE offers only 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.peer import Peer, PeerConfig, Room
from peer.webrtc import restrict_host_candidates
from tests.signaling.conftest import NodeFactory, signaling_mesh  # noqa: F401  (fixture)

PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    restrict_host_candidates(["127.0.0.1"])
    yield
    restrict_host_candidates(None)


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[PeerFactory]:
    """`await peers(name, node_urls, config=None)`: a started Peer, closed at the end."""
    started: list[Peer] = []

    async def start(
        name: str, nodes: list[str], config: PeerConfig | None = None, **options: Any
    ) -> Peer:
        peer = Peer(tmp_path / name, nodes, name=name, config=config, **options)
        await peer.__aenter__()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        await peer.close()


async def next_of(room: Room, kind: type, within: float = 15.0, **match: Any) -> Any:
    """The next event of `kind` (with matching fields) a room emits, within `within` s."""
    async with asyncio.timeout(within):
        while True:
            event = await room.next_event(within)
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
                return event
