"""Joining through a node's URL (signaling/seeds.py): what a `bootstrap` entry may be, what
a seed's answer may say, and that a hostile seed can neither hold a node nor fill it.

Pure rules first. Then real nodes on loopback: one joins through the other's URL; and
hostile web servers on loopback (one that never answers, one that sends megabytes, one
that sends garbage, one that redirects) against the fetch and against a node's start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from signaling import seeds
from signaling.config import ConfigError, load_node_config
from signaling.node import SignalingNode
from signaling.seed_fetch import fetch_contact
from signaling.seeds import (
    MAX_CONTACT_BYTES,
    SeedError,
    SeedUrl,
    check_contact_address,
    parse_contact,
    parse_seed,
)

from .conftest import FAST_DHT, FAST_NODE, NodeFactory

NODE_ID = "ab" * 20
PUBLIC_SEED = SeedUrl(
    "https://seed.example.net", "https://seed.example.net/v1/dht", "seed.example.net"
)
LOCAL_SEED = SeedUrl("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/dht", "127.0.0.1")


# --- bootstrap entries -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("198.51.100.7:4000", ("198.51.100.7", 4000)),
        ("[2001:db8::1]:4000", ("2001:db8::1", 4000)),
        ("seed.example.net:4000", ("seed.example.net", 4000)),
        ("https://node.example.net", "https://node.example.net/v1/dht"),
        ("https://node.example.net/", "https://node.example.net/v1/dht"),
        ("https://Node.Example.NET:8443/?node=x#room=y", "https://node.example.net:8443/v1/dht"),
        ("wss://node.example.net", "https://node.example.net/v1/dht"),
        ("wss://node.example.net:8443", "https://node.example.net:8443/v1/dht"),
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001/v1/dht"),
        ("ws://localhost:8001", "http://localhost:8001/v1/dht"),
        ("http://[::1]:8001", "http://[::1]:8001/v1/dht"),
    ],
)
def test_a_seed_is_a_dht_address_or_a_nodes_url(entry: str, expected: object) -> None:
    seed = parse_seed(entry)
    if isinstance(seed, SeedUrl):
        assert seed.contact_url == expected and seed.text == entry
    else:
        assert seed == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("node.example.net", "expected HOST:PORT"),
        ("198.51.100.7:0", "expected HOST:PORT"),
        ("198.51.100.7:65536", "expected HOST:PORT"),
        ("http://node.example.net", "plain http:// only on this machine"),
        ("ws://198.51.100.7:8000", "plain http:// only on this machine"),
        ("ftp://node.example.net", "https://"),
        ("https://", "no host"),
        ("https://node.example.net:99999", "bootstrap"),
    ],
)
def test_an_entry_that_is_neither_is_refused_at_start(entry: str, message: str) -> None:
    with pytest.raises(SeedError, match=message):
        parse_seed(entry)
    with pytest.raises(ConfigError, match=r"node\.bootstrap"):
        load_node_config(None, {"bootstrap": [entry]})


# --- a seed's answer --------------------------------------------------------------------


def answer(**fields: object) -> bytes:
    return json.dumps({"id": NODE_ID, "host": "198.51.100.7", "port": 4000, **fields}).encode()


def test_a_contact_is_an_id_a_host_and_a_port() -> None:
    assert parse_contact(answer(), PUBLIC_SEED) == (bytes.fromhex(NODE_ID), "198.51.100.7", 4000)
    # An empty host is the URL's own (a node on 0.0.0.0 behind its name).
    assert parse_contact(answer(host=""), PUBLIC_SEED)[1] == "seed.example.net"
    assert parse_contact(answer(host="[2001:db8::1]"), PUBLIC_SEED)[1] == "2001:db8::1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>hello</html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not an object"),
        (answer(id="ab"), "id is not 40 hex"),
        (answer(id="zz" * 20), "id is not 40 hex"),
        (answer(id=None), "id is not 40 hex"),
        (answer(port=0), "port is not"),
        (answer(port=65536), "port is not"),
        (answer(port="4000"), "port is not"),
        (answer(port=True), "port is not"),
        (answer(host=7), "host is not"),
        (answer(host="a" * 254), "host is not"),
        (answer(host="evil.example/path"), "host is not"),
        (answer(host="a b"), "host is not"),
        (b" " * (MAX_CONTACT_BYTES + 1), "more than 4096 bytes"),
    ],
)
def test_an_answer_that_is_not_a_contact_is_refused_by_name(body: bytes, message: str) -> None:
    with pytest.raises(SeedError, match=message) as refused:
        parse_contact(body, PUBLIC_SEED)
    assert str(refused.value).startswith("bootstrap https://seed.example.net: /v1/dht")


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "0.0.0.0", "169.254.169.254", "224.0.0.1", "::ffff:127.0.0.1"]
)
def test_a_seed_elsewhere_cannot_point_the_dht_at_this_machine(address: str) -> None:
    with pytest.raises(SeedError, match="not an address other machines reach"):
        check_contact_address(address, PUBLIC_SEED, ipv6=":" in address and "ffff" not in address)


def test_a_seed_on_this_machine_may_name_loopback_and_families_must_match() -> None:
    assert check_contact_address("127.0.0.1", LOCAL_SEED) == "127.0.0.1"
    assert check_contact_address("198.51.100.7", PUBLIC_SEED) == "198.51.100.7"
    assert check_contact_address("10.0.0.7", PUBLIC_SEED) == "10.0.0.7"  # a mesh in a LAN
    with pytest.raises(SeedError, match="is IPv6, this node's DHT socket is IPv4"):
        check_contact_address("2001:db8::1", PUBLIC_SEED)


# --- real nodes on loopback -------------------------------------------------------------


@pytest.mark.integration
async def test_a_node_joins_through_another_nodes_url(signaling_mesh: NodeFactory) -> None:
    (first,) = await signaling_mesh(1)  # the first node of a mesh: no bootstrap
    async with aiohttp.ClientSession() as http, http.get(first.page_url + "/v1/dht") as response:
        contact = await response.json()
    assert contact == {"id": first.node_id.hex(), "host": "127.0.0.1", "port": first.dht.address[1]}

    second = await SignalingNode.start(
        dataclasses.replace(FAST_NODE, bootstrap=(first.page_url,)), FAST_DHT
    )
    try:
        assert first.node_id in {c.node_id for c in second.dht.core.table.contacts()}
        async with (
            aiohttp.ClientSession() as http,
            http.get(second.page_url + "/healthz") as response,
        ):
            health = await response.json()
        assert response.status == 200 and health["dht_peers"] >= 1, health
    finally:
        await second.stop(moving=False)


@pytest.mark.integration
async def test_a_node_on_a_wildcard_address_answers_its_urls_host(tmp_path: Path) -> None:
    config = dataclasses.replace(
        FAST_NODE,
        host="127.0.0.1",
        dht_host="0.0.0.0",
        public_url="ws://127.0.0.1:1",
        data_dir=str(tmp_path / "n"),
    )
    node = await SignalingNode.start(config, FAST_DHT)
    try:
        url = f"http://127.0.0.1:{node.port}/v1/dht"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            contact = await response.json()
        # Never the wildcard: the host of its URL (a name there is resolved by the asker).
        assert contact["host"] == "127.0.0.1" and contact["port"] == node.dht.address[1]
    finally:
        await node.stop(moving=False)


# --- hostile seeds --------------------------------------------------------------------

Serve = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[SeedUrl]]


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Serve, list[int]]]:
    """`await serve(handler)`: a web server on loopback answering /v1/dht with `handler`;
    the list counts the bytes the huge handler managed to write."""
    runners: list[web.AppRunner] = []
    written: list[int] = [0]

    async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> SeedUrl:
        app = web.Application()
        app.router.add_get("/v1/dht", handler)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        seed = parse_seed(f"http://127.0.0.1:{port}")
        assert isinstance(seed, SeedUrl)
        return seed

    yield serve, written
    for runner in runners:
        await runner.cleanup()


@pytest.mark.integration
async def test_a_seed_that_never_answers_costs_its_timeout_per_attempt(
    hostile: tuple[Serve, list[int]],
) -> None:
    serve, _ = hostile
    never = asyncio.Event()
    asked = 0

    async def silent(_request: web.Request) -> web.StreamResponse:
        nonlocal asked
        asked += 1
        await never.wait()  # holds the request open until the client gives up
        raise AssertionError("unreachable")

    seed = await serve(silent)
    with pytest.raises(SeedError, match=r"no answer within 0\.2 s"):
        await fetch_contact(seed, per_attempt=0.2, attempts=2, backoff=0.0)
    assert asked == 2


@pytest.mark.integration
async def test_a_seed_that_sends_megabytes_is_read_no_further_than_the_cap(
    hostile: tuple[Serve, list[int]],
) -> None:
    serve, written = hostile
    chunk = b"x" * 65536

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(16 * 1024):  # a gigabyte, if anyone read it
            try:
                await response.write(chunk)
            except (ConnectionError, RuntimeError):
                break
            written[0] += len(chunk)
        return response

    seed = await serve(huge)
    with pytest.raises(SeedError, match="more than 4096 bytes"):
        await fetch_contact(seed, per_attempt=5.0, attempts=1)
    # The client hung up after its cap: the server got a few socket buffers out, not 1 GiB.
    await asyncio.sleep(0)  # let the handler see the closed connection
    assert written[0] < 64 * 1024 * 1024


@pytest.mark.integration
@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda: web.Response(text="<html>not a node</html>"), "not JSON"),
        (lambda: web.Response(status=404), "HTTP 404"),
        (lambda: web.Response(status=302, headers={"Location": "http://127.0.0.1:1/"}), "302"),
        (lambda: web.json_response({"id": NODE_ID, "host": "localhost", "port": 9}), None),
    ],
)
async def test_garbage_errors_and_redirects_are_refused(
    hostile: tuple[Serve, list[int]],
    handler: Callable[[], web.StreamResponse],
    message: str | None,
) -> None:
    serve, _ = hostile

    async def answer_with(_request: web.Request) -> web.StreamResponse:
        return handler()

    seed = await serve(answer_with)
    if message is None:  # a name is resolved; on loopback a loopback contact is fine
        node_id, address = await fetch_contact(seed, attempts=1)
        assert node_id == bytes.fromhex(NODE_ID) and address == ("127.0.0.1", 9)
        return
    with pytest.raises(SeedError, match=message):
        await fetch_contact(seed, attempts=1)


@pytest.mark.integration
async def test_a_node_with_a_hostile_seed_starts_and_says_it_has_no_peers(
    hostile: tuple[Serve, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve, _ = hostile
    monkeypatch.setattr(seeds, "RETRY_BACKOFF", 0.0)

    async def garbage(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="garbage")

    seed = await serve(garbage)
    config = dataclasses.replace(FAST_NODE, bootstrap=(seed.text,), data_dir=str(tmp_path / "n"))
    node = await SignalingNode.start(config, FAST_DHT)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(node.page_url + "/healthz") as response,
        ):
            health = await response.json()
        assert response.status == 503 and health["reasons"] == ["no-dht-peers"]
    finally:
        await node.stop(moving=False)


@pytest.mark.integration
async def test_a_seed_that_was_down_at_start_is_asked_again(
    hostile: tuple[Serve, list[int]],
    signaling_mesh: NodeFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seed's proxy was not up yet (503): the node starts alone-but-for-a-mesh and
    joins on a later round, once the seed answers."""
    serve, _ = hostile
    monkeypatch.setattr(seeds, "RETRY_BACKOFF", 0.0)
    monkeypatch.setattr(seeds, "RETRY_INTERVAL", 0.05)
    (first,) = await signaling_mesh(1)
    up = False

    async def proxy(_request: web.Request) -> web.StreamResponse:
        if not up:
            return web.Response(status=503)
        async with (
            aiohttp.ClientSession() as http,
            http.get(first.page_url + "/v1/dht") as response,
        ):
            return web.json_response(await response.json())

    seed = await serve(proxy)
    config = dataclasses.replace(FAST_NODE, bootstrap=(seed.text,), data_dir=str(tmp_path / "n"))
    node = await SignalingNode.start(config, FAST_DHT)
    try:
        assert len(node.dht.core.table) == 0
        up = True
        for _ in range(200):  # 10 s at most
            if first.node_id in {c.node_id for c in node.dht.core.table.contacts()}:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the seed was not asked again")
    finally:
        await node.stop(moving=False)
