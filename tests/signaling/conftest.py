"""Loopback meshes of real signaling nodes (aiohttp + UDP DHT), torn down however a test ends."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nacl.signing import SigningKey

from dht.core import DHTConfig
from peer.signaling import SignalingClient
from signaling.admission import AdmissionLimits
from signaling.config import NodeConfig
from signaling.node import SignalingNode
from signaling.protocol import hello_message

FAST_DHT = DHTConfig(maintenance_interval=0.5, bucket_refresh_interval=5.0)
# Every client and node of a test comes from 127.0.0.1, so the per-source limits
# that keep a stranger's flood out (signaling/admission.py) are opened wide here;
# tests/adversarial/ sets them back to see them work.
LOOPBACK_ADMISSION = AdmissionLimits(
    unauthenticated=10_000, connections=10_000, per_second=10_000.0, burst=10_000.0
)
FAST_NODE = NodeConfig(
    port=0,
    dht_port=0,
    presence_ttl=3.0,
    refresh_interval=0.5,
    admission=LOOPBACK_ADMISSION,
    link_admission=LOOPBACK_ADMISSION,
    joins_per_minute=10_000.0,  # every test client comes from 127.0.0.1
    seats_per_source=10_000,
    records_per_source=10_000.0,
    record_source_burst=10_000.0,
    record_ops_per_source=10_000,
    http_per_second=10_000.0,  # pages, modules and /healthz, all from 127.0.0.1
    http_burst=10_000.0,
)

NodeFactory = Callable[..., Awaitable[list[SignalingNode]]]
ClientFactory = Callable[..., Awaitable[SignalingClient]]


@pytest.fixture
async def signaling_mesh(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """`await signaling_mesh(count, dht=FAST_DHT, **options)`: nodes on loopback joined
    through the first (`options`: NodeConfig fields)."""
    started: list[SignalingNode] = []

    async def start(
        count: int, dht: DHTConfig = FAST_DHT, **options: object
    ) -> list[SignalingNode]:
        nodes: list[SignalingNode] = []
        for _ in range(count):
            seeds = () if not started else (f"127.0.0.1:{started[0].dht.address[1]}",)
            config = dataclasses.replace(
                FAST_NODE,
                data_dir=str(tmp_path / f"node{len(started)}"),
                bootstrap=seeds,
                **options,  # type: ignore[arg-type]
            )
            node = await SignalingNode.start(config, dht)
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


class RawClient:
    """A WebSocket speaking frames by hand, to say what a well-behaved client never would."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def receive(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.extra)
        frame: dict[str, Any] = json.loads(msg.data)
        return frame

    async def hello(self, key: SigningKey, signer: SigningKey | None = None) -> dict[str, Any]:
        challenge = await self.receive()
        message = hello_message(bytes.fromhex(challenge["nonce"]), bytes.fromhex(challenge["node"]))
        sig = (signer or key).sign(message).signature
        await self.send(
            {
                "type": "hello",
                "key": bytes(key.verify_key).hex(),
                "sig": base64.b64encode(sig).decode(),
            }
        )
        return await self.receive()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[SignalingNode], Awaitable[RawClient]]]:
    opened: list[RawClient] = []

    async def open_raw(node: SignalingNode) -> RawClient:
        """A raw WebSocket to `node`'s client API, closed at the end of the test."""
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(node.url + "/v1/ws")
        client = RawClient(http, ws)
        opened.append(client)
        return client

    yield open_raw
    for client in opened:
        await client.ws.close()
        await client.http.close()
