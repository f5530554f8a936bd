"""Loopback meshes of real signaling nodes (aiohttp + UDP DHT), torn down however a test ends."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from dht.core import DHTConfig
from peer.signaling import SignalingClient
from signaling.config import NodeConfig
from signaling.node import SignalingNode

FAST_DHT = DHTConfig(maintenance_interval=0.5, bucket_refresh_interval=5.0)
FAST_NODE = NodeConfig(port=0, dht_port=0, presence_ttl=3.0, refresh_interval=0.5)

NodeFactory = Callable[..., Awaitable[list[SignalingNode]]]
ClientFactory = Callable[..., Awaitable[SignalingClient]]


@pytest.fixture
async def signaling_mesh(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """`await signaling_mesh(count, **options)`: nodes on loopback joined through the first."""
    started: list[SignalingNode] = []

    async def start(count: int, **options: object) -> list[SignalingNode]:
        nodes: list[SignalingNode] = []
        for _ in range(count):
            seeds = () if not started else (f"127.0.0.1:{started[0].dht.address[1]}",)
            config = dataclasses.replace(
                FAST_NODE,
                data_dir=str(tmp_path / f"node{len(started)}"),
                bootstrap=seeds,
                **options,  # type: ignore[arg-type]
            )
            node = await SignalingNode.start(config, FAST_DHT)
            started.append(node)
            nodes.append(node)
        return nodes

    try:
        yield start
    finally:
        for node in started:
            await node.stop(moving=False)


@pytest.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    """`await connect(node, seed=None)`: an authenticated client, closed at the end."""
    clients: list[SignalingClient] = []

    async def open_client(node: SignalingNode, key: SigningKey | None = None) -> SignalingClient:
        client = await SignalingClient.connect(node.url, key or SigningKey.generate())
        clients.append(client)
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            await client.close()
