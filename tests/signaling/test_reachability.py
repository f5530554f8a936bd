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
import logging
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dht.identity import Identity
from dht.reach import DialTarget, Reachability, ReachConfig, TlsFailure, UrlOutcome
from signaling import trust
from signaling.admission import AdmissionLimits
from signaling.links import LinkError, LinkPool
from signaling.node import SignalingNode
from signaling.protocol import LinkSignalError
from signaling.reachability import ReachabilityError, dial_url
from signaling.tls import ServerTls
from tests.signaling.certs import Issued, TestCA, self_signed

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
        reached = await dial_url(DialTarget(url, "127.0.0.1", port, "localhost"))
        assert seen == ["ab"] and reached.outcome is UrlOutcome.REACHED
        # "localhost" does not resolve to 127.0.0.2: no connection at all.
        elsewhere = await dial_url(DialTarget(url, "127.0.0.2", port, "localhost"))
        assert elsewhere.outcome is UrlOutcome.UNREACHABLE
        # A literal is dialled as given; a closed port fails quietly.
        await dial_url(DialTarget(f"http://127.0.0.1:{_closed_port()}/healthz", "127.0.0.1", 1))
        assert seen == ["ab"]
    finally:
        await runner.cleanup()


# --- certificates: probes verify them as links do -----------------------------------------


async def serve_healthz(context: ssl.SSLContext | None) -> tuple[web.AppRunner, int, list[str]]:
    """A server of `GET /healthz` on loopback (TLS with `context`); the nonces it saw."""
    seen: list[str] = []

    async def healthz(request: web.Request) -> web.Response:
        seen.append(request.query.get("reach", ""))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, seen


def server_context(issued: Issued, tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    issued.write(cert, key)
    return ServerTls(cert, key).context


@pytest.fixture
def trusted_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    """A CA this process trusts (SSL_CERT_FILE, read by signaling/trust.py), besides the
    system's: what a public CA is to a node on the internet."""
    ca = TestCA()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.write_ca(tmp_path / "ca.pem")))
    return ca


def _certificate(served: str, trusted_ca: TestCA) -> Issued | None:
    if served == "trusted":
        return trusted_ca.issue(serial=1)
    if served == "self-signed":
        return self_signed()
    if served == "unknown CA":  # a private CA, or cert.pem served without its chain
        return TestCA("someone else's CA").issue(serial=2)
    if served == "expired":
        return trusted_ca.issue(serial=3, days=1, ago=10)
    if served == "another name":
        return trusted_ca.issue(serial=4, names=("node.example",))
    return None  # plain HTTP where TLS was meant to be


@pytest.mark.parametrize(
    ("served", "outcome", "reason"),
    [
        ("trusted", UrlOutcome.REACHED, TlsFailure.NONE),
        ("self-signed", UrlOutcome.TLS_UNTRUSTED, TlsFailure.SELF_SIGNED),
        ("unknown CA", UrlOutcome.TLS_UNTRUSTED, TlsFailure.UNKNOWN_ISSUER),
        ("expired", UrlOutcome.TLS_UNTRUSTED, TlsFailure.EXPIRED),
        ("another name", UrlOutcome.TLS_UNTRUSTED, TlsFailure.HOSTNAME_MISMATCH),
        ("plain http", UrlOutcome.TLS_UNTRUSTED, TlsFailure.NO_TLS),
    ],
)
async def test_a_probe_says_what_it_met_and_sends_nothing_over_a_refused_certificate(
    served: str, outcome: UrlOutcome, reason: TlsFailure, trusted_ca: TestCA, tmp_path: Path
) -> None:
    issued = _certificate(served, trusted_ca)
    context = server_context(issued, tmp_path) if issued is not None else None
    runner, port, seen = await serve_healthz(context)
    try:
        url = f"https://localhost:{port}/healthz?reach=ab"
        result = await dial_url(DialTarget(url, "127.0.0.1", port, "localhost"))
        assert (result.outcome, result.tls) == (outcome, reason)
        assert seen == (["ab"] if outcome is UrlOutcome.REACHED else [])
    finally:
        await runner.cleanup()
    closed = await dial_url(DialTarget(f"https://127.0.0.1:{port}/healthz", "127.0.0.1", port))
    assert closed.outcome is UrlOutcome.UNREACHABLE


async def test_links_and_probes_check_certificates_by_one_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe stands for the links other nodes will open: both take their TLS context
    from signaling/trust.py, and refuse the same certificate for the same reason."""
    made: list[ssl.SSLContext] = []
    rule = trust.node_tls_context

    def spy() -> ssl.SSLContext:
        made.append(rule())
        return made[-1]

    monkeypatch.setattr(trust, "node_tls_context", spy)
    runner, port, seen = await serve_healthz(server_context(self_signed(), tmp_path))

    async def no_frames(_node: bytes, _frame: object) -> None:
        raise AssertionError("no link, no frame")

    async def never(_node: bytes, _addr: tuple[str, int]) -> bool:
        return False

    pool = LinkPool(
        Identity.generate(), no_frames, 1, never, AdmissionLimits(), lambda _r: "127.0.0.1"
    )
    try:
        probe = await dial_url(
            DialTarget(f"https://localhost:{port}/healthz", "127.0.0.1", port, "localhost")
        )
        assert probe.tls is TlsFailure.SELF_SIGNED
        frame = LinkSignalError(b"s" * 32, b"t" * 32, "x")
        with pytest.raises(LinkError, match="self-signed certificate"):
            await pool.send(b"n" * 20, f"wss://localhost:{port}", frame)
        assert len(made) == 2 and made[0] is made[1], "one rule, one context"
        assert seen == []
    finally:
        await pool.close()
        await runner.cleanup()


async def get_insecure(url: str) -> tuple[int, str]:
    """The test's own look at a node whose certificate it need not trust."""
    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(connector=connector) as http, http.get(url) as response:
        return response.status, await response.text()


async def test_a_certificate_other_nodes_cannot_verify_is_reported_with_what_to_serve(
    start: Starter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node serving a self-signed certificate: its DHT port is fine, its URL answers,
    and the node that checks it cannot verify the certificate, so it could not link to
    it either. The node hears why, says so once, and /healthz is not ok."""
    caplog.set_level(logging.INFO, "signaling.reachability")
    first = await start()
    cert, key = tmp_path / "cert.pem", tmp_path / "privkey.pem"
    self_signed().write(cert, key)
    second = await start(first, tls_cert=str(cert), tls_key=str(key))
    assert second.url.startswith("wss://")
    verdict = second.reach.verdict
    assert verdict is not None and verdict.dht is Reachability.REACHABLE
    assert verdict.url is Reachability.TLS_UNTRUSTED, verdict
    assert verdict.url_tls is TlsFailure.SELF_SIGNED and verdict.url_untrusted == 1
    status, text = await get_insecure(second.url.replace("wss://", "https://") + "/healthz")
    health = json.loads(text)
    assert status == 503 and health["reasons"] == ["url-tls-untrusted"], health
    report = health["reachability"]
    assert (report["dht"], report["url"]) == ("reachable", "tls-untrusted")
    assert report["url_tls"] == "self-signed certificate"
    advice = report["advice"]
    assert "cannot verify this node's certificate" in advice and "fullchain.pem" in advice
    _, metrics = await get_insecure(second.url.replace("wss://", "https://") + "/metrics")
    assert 'pagemesh_reachable{check="url"} 0.0' in metrics
    assert 'pagemesh_reachable{check="url_tls"} 0.0' in metrics
    # Said once: a check that finds the same says nothing new.
    await second.dht.check_reach()
    assert second.reach.verdict is not verdict
    said = [r for r in caplog.records if "cannot verify" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    # And links fail as the probe did (home.unproven, signal.refused at the other node).
    frame = LinkSignalError(b"s" * 32, b"t" * 32, "x")
    with pytest.raises(LinkError, match="self-signed certificate"):
        await first.links.send(second.node_id, second.url, frame)


async def test_a_certificate_from_a_ca_nodes_trust_is_reachable_and_links_open(
    start: Starter, trusted_ca: TestCA, tmp_path: Path
) -> None:
    first = await start()
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    trusted_ca.issue(serial=7).write(cert, key)
    second = await start(first, tls_cert=str(cert), tls_key=str(key))
    verdict = second.reach.verdict
    assert verdict is not None and verdict.url is Reachability.REACHABLE, verdict
    assert verdict.url_untrusted == 0 and verdict.url_tls is TlsFailure.NONE
    https = second.url.replace("wss://", "https://")
    connector = aiohttp.TCPConnector(ssl=trusted_ca.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(https + "/healthz") as response:
            health = await response.json()
            assert response.status == 200 and health["reasons"] == [], health
        async with http.get(https + "/metrics") as response:
            assert 'pagemesh_reachable{check="url_tls"} 1.0' in await response.text()
    await first.links.send(second.node_id, second.url, LinkSignalError(b"s" * 32, b"t" * 32, "x"))
    assert len(first.links) == 1
