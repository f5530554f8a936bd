"""Loopback meshes of real DHT nodes, torn down however a test ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dht.core import DHTConfig
from dht.node import DHTNode

REPUBLISH = 2.0
LOOPBACK_CONFIG = DHTConfig(
    republish_interval=REPUBLISH,
    maintenance_interval=0.5,
    bucket_refresh_interval=5.0,
)

MeshFactory = Callable[..., Awaitable[list[DHTNode]]]


@pytest.fixture
async def udp_mesh(tmp_path: Path) -> AsyncIterator[MeshFactory]:
    """`await udp_mesh(count, config)`: nodes on 127.0.0.1, each joined through the first."""
    started: list[DHTNode] = []

    async def start(count: int, config: DHTConfig = LOOPBACK_CONFIG) -> list[DHTNode]:
        first = await DHTNode.start("127.0.0.1", 0, tmp_path / f"n{len(started)}", config=config)
        started.append(first)
        nodes = [first]
        for _ in range(1, count):
            node = await DHTNode.start(
                "127.0.0.1",
                0,
                tmp_path / f"n{len(started)}",
                bootstrap=[first.address],
                config=config,
            )
            started.append(node)
            nodes.append(node)
        return nodes

    try:
        yield start
    finally:
        for node in started:
            node.abort()
