"""Signaling nodes checking each other's reachability on loopback (real UDP, real HTTP).

On loopback every node reaches every other, so these tests see the checks
succeed, see what a node advertises when it listens on a wildcard address, and
see a URL nobody can reach reported with what to open. A node behind a real
NAT, found unreachable and kept out of everyone's tables, is
tests/nat/test_reachability.py; the rules themselves are tests/dht/test_reach*.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dht.reach import DialTarget, Reachability, ReachConfig
from signaling.node import SignalingNode
from signaling.reachability import ReachabilityError, dial_url

from .conftest import FAST_DHT, FAST_NODE

pytestmark = pytest.mark.integration

CHECKING = dataclasses.replace(FAST_DHT, reach=ReachConfig(check=True, probe_wait=2.0))

Starter = Callable[..., Awaitable[SignalingNode]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:
    """`await start(seed=None, **node_options)`: a node whose DHT checks its reachability."""
    started: list[SignalingNode] = []

    async def start_(seed: SignalingNode | None = None, **options: object) -> SignalingNode:
        bootstrap = (f"127.0.0.1:{seed.dht.address[1]}",) if seed is not None else ()
        config = dataclasses.replace(
            FAST_NODE,
            data_dir=str(tmp_path / f"node{len(started)}"),
            bootstrap=bootstrap,
            **options,  # type: ignore[arg-type]
        )
        node = await SignalingNode.start(config, CHECKING)
        started.append(node)
        return node

    try:
        yield start_
    finally:
        for node in started:
            await node.stop(moving=False)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def test_nodes_check_each_other_and_join_once_found_reachable(start: Starter) -> None:
    first = await start()
    second = await start(first)
    third = await start(first)
    # The first had nobody to ask, so it serves unchecked; the others were clients
    # until their first check, which `start` waited for.
    assert first.reach.verdict is not None and first.reach.verdict.no_helpers
    for node in (second, third):
        verdict = node.reach.verdict
        assert verdict is not None
        assert verdict.dht is verdict.url is Reachability.REACHABLE, verdict
        assert not node.dht.core.client
        assert node.node_id in first.dht.core.table
    # Every probe came from a helper's second socket, none from its DHT port.
    counters = second.dht.core.counters
    assert counters["reach.probe_in.udp"] >= 1 and counters["reach.probe_in.url"] >= 1
    assert counters["reach.probe_same_socket"] == 0
    status, text = await get(third.page_url + "/healthz")
    health = json.loads(text)
    report = health["reachability"]
    assert (report["dht"], report["url"], report["client"]) == ("reachable", "reachable", False)
    assert "advice" not in report and status == 200 and health["reasons"] == [], health
    _, metrics = await get(third.page_url + "/metrics")
    assert 'pagemesh_reachable{check="dht"} 1.0' in metrics
    assert 'pagemesh_reachable{check="url"} 1.0' in metrics
    assert "pagemesh_dht_client 0.0" in metrics


async def test_a_node_on_a_wildcard_address_advertises_where_others_see_it(
    start: Starter,
) -> None:
    first = await start()
    wild = await start(first, host="0.0.0.0")
    assert wild.url == f"ws://127.0.0.1:{wild.port}", wild.url
    assert wild.reach.learned
    verdict = wild.reach.verdict
    assert verdict is not None and verdict.url is Reachability.REACHABLE
    _, text = await get(wild.url.replace("ws://", "http://") + "/healthz")
    assert "0.0.0.0" not in text, text


async def test_a_first_node_on_a_wildcard_address_without_a_public_url_refuses(
    start: Starter,
) -> None:
    with pytest.raises(ReachabilityError, match="Set --public-url") as caught:
        await start(host="0.0.0.0")
    assert "no other node was known" in str(caught.value)


async def test_the_command_refuses_too_and_says_what_to_set(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *["-m", "pagemesh", "node", "--host", "0.0.0.0", "--port", "0", "--dht-port", "0"],
        *["--data-dir", str(tmp_path / "n")],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"--public-url" in stderr and b"0.0.0.0" in stderr, stderr


async def test_a_url_nobody_reaches_is_reported_with_what_to_open(start: Starter) -> None:
    first = await start()
    second = await start(first)
    closed = _closed_port()
    lost = await start(first, public_url=f"ws://127.0.0.1:{closed}")
    verdict = lost.reach.verdict
    assert verdict is not None and verdict.helpers == 2
    assert verdict.dht is Reachability.REACHABLE and verdict.url is Reachability.UNREACHABLE
    assert not lost.dht.core.client, "its DHT port answers: it stays in the DHT"
    advice = lost.reach.advice()
    assert advice is not None and f"TCP port {closed}" in advice and "UDP" not in advice
    status, text = await get(f"http://127.0.0.1:{lost.port}/healthz")  # not at its URL
    health = json.loads(text)
    assert status == 503 and health["reasons"] == ["url-unreachable"], health
    report = health["reachability"]
    assert report["url"] == "unreachable" and report["advice"] == advice
    assert second.node_id in first.dht.core.table


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_probe_with_a_nonce_nobody_sent_changes_nothing(start: Starter) -> None:
    node = await start()
    for query in ("reach=zz", "reach=" + "0" * 32, "reach=" + "0" * 3000, "reach="):
        status, body = await get(f"{node.page_url}/healthz?{query}")
        assert (status, body) == (204, "")
    assert node.dht.core.counters["reach.probe_in.url"] == 0
    assert node.dht.core.counters["reach.probe_unknown"] == 1
    status, _ = await get(f"{node.page_url}/healthz")
    assert status in (200, 503)


async def test_an_http_probe_goes_only_to_the_address_the_name_resolves_to() -> None:
    """A requester's URL may name a host; the helper dials it only when the name resolves
    to the requester's address, and connects to that address, never elsewhere."""
    seen: list[str] = []

    async def healthz(request: web.Request) -> web.Response:
        seen.append(request.query.get("reach", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = f"http://localhost:{port}/healthz?reach=ab"
        await dial_url(DialTarget(url, "127.0.0.1", port, "localhost"))
        assert seen == ["ab"]
        # "localhost" does not resolve to 127.0.0.2: no connection at all.
        await dial_url(DialTarget(url, "127.0.0.2", port, "localhost"))
        # A literal is dialled as given; a closed port fails quietly.
        await dial_url(DialTarget(f"http://127.0.0.1:{_closed_port()}/healthz", "127.0.0.1", 1))
        assert seen == ["ab"]
    finally:
        await runner.cleanup()
