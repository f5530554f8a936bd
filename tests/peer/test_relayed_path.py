"""A node with an embedded relay: relay-only peers connect through it and say `relayed`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pagemesh.embedded_relay import EmbeddedRelay, start_embedded_relay
from peer.peer import Connected, Message, PeerConfig, Room
from relay.core import RelayConfig
from relay.server import RelayServer
from signaling.config import IceConfig, NodeConfig
from signaling.node import SignalingNode
from tests.signaling.certs import TestCA
from tests.signaling.conftest import FAST_DHT, FAST_NODE

from .conftest import PeerFactory

pytestmark = pytest.mark.integration


async def loopback_relay(tmp_path: Path, name: str) -> tuple[NodeConfig, EmbeddedRelay]:
    """A node config with an embedded relay (data in `tmp_path / name`), and that relay
    started, open to loopback peers (refused by default: special-purpose addresses)."""
    toml = tmp_path / f"{name}.toml"
    toml.write_text('[relay]\nallow_peers = ["127.0.0.0/8"]\n')
    config = dataclasses.replace(FAST_NODE, data_dir=str(tmp_path / name), relay_port=0)
    return config, await start_embedded_relay(config, toml)


@pytest.fixture
async def relay_node(tmp_path: Path) -> AsyncIterator[SignalingNode]:
    config, relay = await loopback_relay(tmp_path, "node")
    node = await SignalingNode.start(config, FAST_DHT, relay)
    yield node
    await node.stop(moving=False)


async def until(room: Room, kind: type, within: float = 30.0) -> Any:
    async def find() -> Any:
        async for event in room.events():
            if isinstance(event, kind) and not getattr(event, "mine", False):
                return event

    return await asyncio.wait_for(find(), within)


async def test_relay_only_peers_connect_through_the_nodes_relay(
    relay_node: SignalingNode, peers: PeerFactory
) -> None:
    relay_only = PeerConfig(relay_only=True)
    alice = await peers("alice", [relay_node.url], relay_only)
    bob = await peers("bob", [relay_node.url], relay_only)
    room_a = await alice.join("https://example.org/relayed")
    room_b = await bob.join("https://example.org/relayed")
    assert any(s.get("username") for s in room_b.ice_servers)
    link = await until(room_b, Connected)
    assert link.path == "relayed"
    await room_a.send("through the relay")
    assert (await until(room_b, Message)).text == "through the relay"

    async with aiohttp.ClientSession() as http:
        base = relay_node.url.replace("ws://", "http://")
        async with http.get(base + "/metrics") as response:
            metrics = await response.text()
    assert "pagemesh_relay_allocations" in metrics
    packets = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("pagemesh_relay_packets_total")
    ]
    assert sum(packets) > 0
    assert relay_node.relay is not None
    assert any(u.startswith("turn:") for u in relay_node.relay.urls)


@pytest.fixture
async def short_lived_relay_node(tmp_path: Path) -> AsyncIterator[SignalingNode]:
    """A node whose relay grants 4 s allocations and whose credentials last 5 s, so that
    allocation refreshes and credential expiry both happen within a test."""
    secret = os.urandom(32)
    relay_config = RelayConfig(default_lifetime=4.0, max_lifetime=4.0, allow_peers=("127.0.0.0/8",))
    server = await RelayServer.start("127.0.0.1", 0, secret, relay_config)
    port = server.address[1]
    urls = [f"stun:127.0.0.1:{port}", f"turn:127.0.0.1:{port}?transport=udp"]
    relay = EmbeddedRelay(server, secret, urls)
    config = dataclasses.replace(
        FAST_NODE, data_dir=str(tmp_path / "node"), ice=IceConfig(credential_ttl=5.0)
    )
    node = await SignalingNode.start(config, FAST_DHT, relay)
    yield node
    await node.stop(moving=False)


async def test_a_relayed_link_outlives_its_credentials(
    short_lived_relay_node: SignalingNode, peers: PeerFactory
) -> None:
    """The probe's finding 5: credentials were minted once per join, and a relayed link
    died at the first allocation refresh after they expired. Now the client fetches fresh
    credentials before they expire, replaces a relayed link in time (make before break),
    and the relay itself keeps an allocation alive past its credentials (docs/relay.md)."""
    node = short_lived_relay_node
    relay_only = PeerConfig(relay_only=True)
    alice = await peers("alice", [node.url], relay_only)
    bob = await peers("bob", [node.url], relay_only)
    room_a = await alice.join("https://example.org/relayed-long")
    room_b = await bob.join("https://example.org/relayed-long")
    assert (await until(room_b, Connected)).path == "relayed"
    first = room_a.links[bob.public_key]
    sent = [f"message {i}" for i in range(24)]
    for text in sent:  # 12 s: past two credential lifetimes and several refreshes
        await room_a.send(text)
        await asyncio.sleep(0.5)
    got = [(await until(room_b, Message)).text for _ in sent]
    assert got == sent
    assert room_a.links[bob.public_key] is not first  # replaced before its credentials went
    assert room_a.links[bob.public_key].open
    assert alice.mesh._ice_expires is not None and alice.mesh._ice_expires > time.time()


@pytest.fixture
async def tls_relay_node(tmp_path: Path) -> AsyncIterator[tuple[SignalingNode, TestCA]]:
    """A node whose relay also speaks TURN over TLS, with a certificate of the test's CA."""
    ca = TestCA()
    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    ca.issue(1).write(cert, key)
    toml = tmp_path / "node.toml"
    toml.write_text('[relay]\nallow_peers = ["127.0.0.0/8"]\n')
    config = dataclasses.replace(
        FAST_NODE,
        data_dir=str(tmp_path / "node"),
        relay_port=0,
        relay_tls_port=0,
        relay_tls_cert=str(cert),
        relay_tls_key=str(key),
    )
    relay = await start_embedded_relay(config, toml)
    node = await SignalingNode.start(config, FAST_DHT, relay)
    yield node, ca
    await node.stop(moving=False)


async def test_peers_connect_through_the_relay_over_tls_alone(
    tls_relay_node: tuple[SignalingNode, TestCA],
    peers: PeerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aioice speaks `turns:` (its TURN client over TCP with ssl); a peer told to use that
    URL connects through the relay's TLS listener, and through nothing else."""
    node, ca = tls_relay_node
    # aioice checks the relay's certificate with Python's default context: trust our CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.write_ca(tmp_path / "ca.pem")))
    assert node.relay is not None
    tls_port = node.relay.server.tls_address[1]  # type: ignore[attr-defined]
    over_tls = PeerConfig(relay_only=True, turn_transport="tls")
    alice = await peers("alice", [node.url], over_tls)
    bob = await peers("bob", [node.url], over_tls)
    room_a = await alice.join("https://example.org/relayed-tls")
    room_b = await bob.join("https://example.org/relayed-tls")
    turn = next(s for s in room_b.ice_servers if s.get("username"))
    assert f"turns:127.0.0.1:{tls_port}?transport=tcp" in turn["urls"]
    assert any(u.startswith("stun:127.0.0.1:") for s in room_b.ice_servers for u in s["urls"])
    link = await until(room_b, Connected)
    assert link.path == "relayed"
    await room_a.send("over TLS")
    assert (await until(room_b, Message)).text == "over TLS"
    server = node.relay.server  # type: ignore[attr-defined]
    assert server.core.counters["relayed.packets.to_peer"] > 0
    streams = [c.transport for c in server._tcp.values()]
    assert len(streams) >= 2 and server.core.allocation_count == len(streams)
    assert all(t.get_extra_info("ssl_object") is not None for t in streams)  # TLS, each
