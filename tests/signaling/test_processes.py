"""`pagemesh node` as real processes: SIGKILL lets presence lapse, SIGTERM says `moving`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer.signaling import Closed, Moving, PeerJoined, PeerLeft, SignalingClient
from signaling.rooms import canonical_url, room_key

pytestmark = pytest.mark.integration

TTL = 3.0
REFRESH = 0.5
CONFIG = f"""
[node]
host = "127.0.0.1"
port = 0
dht_port = 0
presence_ttl = {TTL}
refresh_interval = {REFRESH}

[dht]
maintenance_interval = 0.5
"""
ROOM = room_key(canonical_url("https://example.org/processes"))
STARTED = re.compile(r"pagemesh node ([0-9a-f]{40}) at (\S+) dht (\S+)")


class NodeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, dht: str) -> None:
        self.proc, self.url, self.dht = proc, url, dht


Launcher = Callable[..., Awaitable[NodeProcess]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launcher]:
    config = tmp_path / "node.toml"
    config.write_text(CONFIG)
    procs: list[NodeProcess] = []

    async def start(bootstrap: NodeProcess | None = None, by_url: bool = False) -> NodeProcess:
        """`by_url`: join through the seed's URL (its /v1/dht) instead of its DHT address."""
        args = ["-m", "pagemesh", "node", "--config", str(config)]
        args += ["--data-dir", str(tmp_path / f"n{len(procs)}")]
        if bootstrap is not None:
            seed = bootstrap.url.replace("ws://", "http://") if by_url else bootstrap.dht
            args += ["--bootstrap", seed]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = STARTED.search(line)
        assert match, f"unexpected first line {line!r}"
        node = NodeProcess(proc, match.group(2), match.group(3))
        procs.append(node)
        return node

    yield start
    for node in procs:
        if node.proc.returncode is None:
            node.proc.kill()
            await node.proc.wait()


async def wait_for(client: SignalingClient, kind: type, within: float) -> object:
    deadline = time.monotonic() + within
    while True:
        event = await client.next_event(within=max(0.01, deadline - time.monotonic()))
        if isinstance(event, kind):
            return event


async def test_sigkill_lapses_presence_and_clients_move_on(launch: Launcher) -> None:
    a = await launch()
    b = await launch(bootstrap=a)
    c = await launch(bootstrap=a, by_url=True)  # as a volunteer does: the page's URL
    alice = await SignalingClient.connect(a.url, SigningKey.generate())
    bob_key = SigningKey.generate()
    bob = await SignalingClient.connect(b.url, bob_key)
    carol = await SignalingClient.connect(c.url, SigningKey.generate())
    try:
        await alice.join(ROOM)
        await bob.join(ROOM)
        await carol.join(ROOM)
        assert isinstance(await wait_for(alice, PeerJoined, 5), PeerJoined)

        b.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await b.proc.wait()
        left = await wait_for(alice, PeerLeft, TTL + 3 * REFRESH + 2)
        lapse = time.monotonic() - killed
        assert isinstance(left, PeerLeft) and left.key == bob.key
        assert lapse <= TTL + 2 * REFRESH + 1, lapse
        assert isinstance(await wait_for(bob, Closed, 5), Closed)

        # bob fails over to a node named in his welcome, and rejoins
        others = [url for url in bob.nodes if url != b.url]
        assert others, bob.nodes
        await bob.close()
        bob = await SignalingClient.connect(others[0], bob_key)
        joined = await bob.join(ROOM)
        assert alice.key in {m.key for m in joined.members}
        back = await wait_for(alice, PeerJoined, 5)
        assert isinstance(back, PeerJoined) and back.member.key == bob.key

        async with aiohttp.ClientSession() as http:
            base = a.url.replace("ws://", "http://")
            async with http.get(base + "/healthz") as response:
                health = await response.json()
            assert health["clients"] >= 1 and health["dht_peers"] >= 1
            async with http.get(base + "/metrics") as response:
                metrics = await response.text()
            assert "pagemesh_joins_total" in metrics
            assert 'pagemesh_dht_events_total{event="rpc.in.FindRecords"}' in metrics

        # SIGTERM: carol is told where else to go, and the node exits cleanly
        c.proc.send_signal(signal.SIGTERM)
        moving = await wait_for(carol, Moving, 10)
        assert isinstance(moving, Moving) and a.url in moving.nodes
        assert await asyncio.wait_for(c.proc.wait(), 15) == 0
    finally:
        for client in (alice, bob, carol):
            await client.close()


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "bad.toml"
    config.write_text('[node]\nlayer_size = "big"\n')
    run = subprocess.run(
        [sys.executable, "-m", "pagemesh", "node", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert run.returncode == 2
    assert "node option 'layer_size' must be int" in run.stderr


async def test_node_with_an_embedded_relay(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        "node",
        "--port",
        "0",
        "--dht-port",
        "0",
        "--relay-port",
        "0",
        "--data-dir",
        str(tmp_path / "node"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert " relay stun:127.0.0.1:" in line and "turn:127.0.0.1:" in line, line
        match = STARTED.search(line)
        assert match is not None
        url = match.group(2)
        metrics_url = url.replace("ws://", "http://") + "/metrics"
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as response:
            assert "pagemesh_relay_allocations" in await response.text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
