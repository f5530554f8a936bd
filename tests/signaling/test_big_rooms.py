"""Big rooms on real nodes: hundreds of WebSocket clients in layers, and the per-source
limits that keep one address from taking a room (docs/protocol.md 2.3, 2.4, 3.2).

Three nodes on loopback seat 600 clients in layers of four (150 layers). Every DHT
request between them comes from 127.0.0.1, at a rate a real node would spread over
many neighbours, so their DHT rate limit is lifted (as LOOPBACK_ADMISSION lifts the
client admission limits); with the default 200 requests/s per sender the three nodes
drop about 16,000 of each other's requests and the crowd takes most of a minute to sit
instead of about ten seconds.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from nacl.signing import SigningKey

from dht.core import DHTConfig
from peer.signaling import SignalingClient, SignalingError
from signaling.config import NodeConfig
from signaling.node import SignalingNode
from signaling.protocol import HomeNode, presence_payload
from signaling.rooms import RoomError, canonical_url, layer_key, parse_seat_list, room_key

from .conftest import FAST_DHT, FAST_NODE, ClientFactory, NodeFactory, RawClient

pytestmark = pytest.mark.integration

ROOM = room_key(canonical_url("https://example.org/a-very-popular-page"))
CLIENTS = 600
LAYER_SIZE = 4
AT_ONCE = 20
CROWD_WITHIN = 90.0
"""Seconds the whole crowd may take to sit (about ten on two cores)."""
BIG_ROOM: dict[str, Any] = {
    "layer_size": LAYER_SIZE,
    "presence_ttl": 30.0,
    "refresh_interval": 10.0,
}
"""Layers of four, so 600 people make 150 layers; a longer renewal period than
FAST_NODE's half second, so the run measures joins, not 600 clients re-signing."""
LOOPBACK_DHT = dataclasses.replace(FAST_DHT, request_rate=1e6, request_burst=1e6)
DEFAULTS = NodeConfig()
DEFAULT_LIMITS = {
    "joins_per_minute": DEFAULTS.joins_per_minute,
    "seats_per_source": DEFAULTS.seats_per_source,
}
"""FAST_NODE lifts the per-source room limits for loopback; the fairness tests put them back."""
OVERFILL = (
    "in most runs concurrent joins still overfill a few layers (20 in flight over 3 nodes: "
    "2 or 3 layers of 5 to 7 members): a join's last attempt (max_attempts) sits past the "
    "last layer unchecked (layers.py _verify_seat, job.unchecked), and joins that run out "
    "of attempts together can take the same layer. Not strict: some runs have none"
)
OVERSHOOT = (
    "in about half the runs a newcomer's `total` right after the crowd is more than 10% "
    "high (619 to 724 for 601 people), likely from layer reads during the crowd that "
    "counted seats of joins about to move on. Not strict: other runs are within 10%"
)


# --- a crowd -----------------------------------------------------------------------------


async def start_nodes(
    workdir: Path, count: int, *, dht: DHTConfig = LOOPBACK_DHT, **options: Any
) -> list[SignalingNode]:
    """Nodes on loopback joined through the first (signaling_mesh with LOOPBACK_DHT)."""
    nodes: list[SignalingNode] = []
    try:
        for i in range(count):
            seeds = (f"127.0.0.1:{nodes[0].dht.address[1]}",) if nodes else ()
            config = dataclasses.replace(
                FAST_NODE, data_dir=str(workdir / f"node{i}"), bootstrap=seeds, **options
            )
            nodes.append(await SignalingNode.start(config, dht))
    except BaseException:
        await stop_nodes(nodes)
        raise
    return nodes


async def stop_nodes(nodes: list[SignalingNode]) -> None:
    # All at once: a node's stop waits for the links other nodes opened to it, which
    # close only when those nodes stop (one after another, each waits half a minute).
    await asyncio.gather(*(node.stop(moving=False) for node in nodes))


async def seat_crowd(
    nodes: list[SignalingNode], count: int, at_once: int, clients: list[SignalingClient]
) -> Counter[str]:
    """`count` clients spread over `nodes`, each joining ROOM, `at_once` joins in flight;
    every client opened lands in `clients`. Returns the failures, by error."""
    gate = asyncio.Semaphore(at_once)

    async def one(i: int) -> None:
        async with gate:
            client = await SignalingClient.connect(nodes[i % len(nodes)].url, SigningKey.generate())
            clients.append(client)
            await client.join(ROOM)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    return Counter(repr(r)[:100] for r in results if isinstance(r, BaseException))


async def close_clients(clients: list[SignalingClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


def seated_by_clients(clients: list[SignalingClient]) -> Counter[int]:
    """Members per layer, as the clients' `joined` answers put them."""
    return Counter(client.rooms[ROOM] for client in clients if ROOM in client.rooms)


def seated_by_nodes(nodes: list[SignalingNode]) -> Counter[int]:
    """Members per layer, as their home nodes hold them (each client has one home)."""
    seated: Counter[int] = Counter()
    for node in nodes:
        for (room, layer), view in node.rooms.views.items():
            if room == ROOM and view.local:
                seated[layer] += len(view.local)
    return seated


async def seated_in_dht(node: SignalingNode, layers: int) -> Counter[int]:
    """Members per layer, from the seat lists stored under ROOM's first `layers` keys."""
    seated: Counter[int] = Counter()
    for layer in range(layers):
        for record in await node.dht.get_records(layer_key(ROOM, layer)):
            try:
                seat_list = parse_seat_list(record)
            except RoomError:
                continue
            if seat_list.expires_at > time.time() and seat_list.seats:
                seated[layer] += len(seat_list.seats)
    return seated


@dataclass
class Crowd:
    nodes: list[SignalingNode]
    clients: list[SignalingClient]
    failures: Counter[str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def crowd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Crowd]:
    """600 clients over three nodes, 20 joins in flight, sat once for the tests below."""
    nodes = await start_nodes(tmp_path_factory.mktemp("crowd"), 3, **BIG_ROOM)
    clients: list[SignalingClient] = []
    try:
        async with asyncio.timeout(CROWD_WITHIN):
            failures = await seat_crowd(nodes, CLIENTS, AT_ONCE, clients)
        yield Crowd(nodes, clients, failures)
    finally:
        await close_clients(clients)
        await stop_nodes(nodes)


async def newcomer_sees(crowd: Crowd, node: SignalingNode) -> None:
    """A newcomer's `joined` estimates the room within 10%: people and layers."""
    newcomer = await SignalingClient.connect(node.url, SigningKey.generate())
    try:
        joined = await newcomer.join(ROOM)
        seated = seated_by_clients([*crowd.clients, newcomer])
        people, layers = sum(seated.values()), max(seated) + 1
        assert abs(joined.total - people) <= 0.1 * people, (joined.total, people)
        assert abs(joined.layers - layers) <= 0.1 * layers, (joined.layers, layers)
    finally:
        await newcomer.close()


# --- 600 clients in layers of four ----------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_a_crowd_of_600_is_seated_and_clients_nodes_and_dht_agree(crowd: Crowd) -> None:
    assert not crowd.failures, crowd.failures
    assert len(crowd.clients) == CLIENTS
    assert all(ROOM in client.rooms for client in crowd.clients)
    by_clients = seated_by_clients(crowd.clients)
    assert seated_by_nodes(crowd.nodes) == by_clients
    # A join is answered once a majority of the holders took its seat list (2.5.6), and a
    # list that drops a member who moved on is stored while others join: the last of
    # those stores land a round trip after the crowd is answered.
    in_dht: Counter[int] = Counter()
    for _ in range(20):
        in_dht = await seated_in_dht(crowd.nodes[1], max(by_clients) + 2)
        if in_dht == by_clients:
            break
        await asyncio.sleep(0.5)
    assert in_dht == by_clients


@pytest.mark.xfail(strict=False, reason=OVERFILL)
@pytest.mark.asyncio(loop_scope="module")
async def test_a_crowd_of_600_fills_about_150_layers_and_none_past_four(crowd: Crowd) -> None:
    seated = seated_by_clients(crowd.clients)
    assert max(seated.values()) <= LAYER_SIZE, seated.most_common(5)
    assert CLIENTS / LAYER_SIZE <= max(seated) + 1 <= 1.1 * CLIENTS / LAYER_SIZE


@pytest.mark.xfail(strict=False, reason=OVERSHOOT)
@pytest.mark.asyncio(loop_scope="module")
async def test_a_newcomer_estimates_a_crowd_of_600_within_10_percent(crowd: Crowd) -> None:
    await newcomer_sees(crowd, crowd.nodes[0])


async def test_600_joins_one_at_a_time_fill_150_layers_of_four_and_a_newcomer_sees_them(
    tmp_path: Path,
) -> None:
    """The same crowd with no two joins racing: the layers are exactly full."""
    nodes = await start_nodes(tmp_path, 3, **BIG_ROOM)
    clients: list[SignalingClient] = []
    try:
        async with asyncio.timeout(CROWD_WITHIN):
            failures = await seat_crowd(nodes, CLIENTS, 1, clients)
        assert not failures, failures
        seated = seated_by_clients(clients)
        assert Counter(seated.values()) == {LAYER_SIZE: CLIENTS // LAYER_SIZE}
        assert seated_by_nodes(nodes) == seated
        await newcomer_sees(Crowd(nodes, clients, failures), nodes[2])
    finally:
        await close_clients(clients)
        await stop_nodes(nodes)


# --- fairness: per source address and room -----------------------------------------------------


async def open_from(node: SignalingNode, local_host: str) -> RawClient:
    """A raw WebSocket to `node` whose socket is bound to `local_host` (another loopback
    address is another source to the node)."""
    connector = aiohttp.TCPConnector(local_addr=(local_host, 0))
    http = aiohttp.ClientSession(connector=connector)
    try:
        ws = await http.ws_connect(node.url + "/v1/ws")
    except BaseException:
        await http.close()
        raise
    return RawClient(http, ws)


async def raw_join(client: RawClient, key: SigningKey, room: bytes) -> dict[str, Any]:
    """Join `room` by hand (docs/protocol.md 3.2, 3.3): sign the presence the node asks
    for; return the node's answer (`joined` or an error)."""
    await client.send({"type": "join", "room": room.hex(), "id": "j1"})
    while True:
        frame = await client.receive()
        if frame["type"] != "sign":
            return frame
        home = HomeNode(bytes.fromhex(frame["node"]), frame["url"])
        payload = presence_payload(
            bytes(key.verify_key), room, frame["layer"], home, frame["seq"], frame["expires"]
        )
        sig = base64.b64encode(key.sign(payload).signature).decode()
        await client.send({"type": "signed", "id": frame["id"], "sig": sig})


async def joins_from_one_address(
    node: SignalingNode, connect: ClientFactory, count: int, at_once: bool
) -> tuple[list[SignalingClient], Counter[str]]:
    """`count` clients from 127.0.0.1 joining ROOM, all at once or one after another: the
    clients, and the joins' outcomes ("seated" or the error code)."""
    clients = [await connect(node) for _ in range(count)]
    if at_once:
        results = await asyncio.gather(*(c.join(ROOM) for c in clients), return_exceptions=True)
    else:
        results = []
        for client in clients:
            try:
                results.append(await client.join(ROOM))
            except SignalingError as exc:
                results.append(exc)
    outcomes: Counter[str] = Counter()
    for result in results:
        if isinstance(result, SignalingError):
            outcomes[result.code] += 1
        elif isinstance(result, BaseException):
            raise result
        else:
            outcomes["seated"] += 1
    return clients, outcomes


async def sits_from(node: SignalingNode, local_host: str, room: bytes) -> dict[str, Any]:
    """A client from `local_host` joins `room`; the node's answer."""
    client = await open_from(node, local_host)
    try:
        key = SigningKey.generate()
        assert (await client.hello(key))["type"] == "welcome"
        return await raw_join(client, key, room)
    finally:
        await client.ws.close()
        await client.http.close()


async def test_one_address_gets_a_burst_of_joins_and_another_address_still_sits(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """NodeConfig's own limits: 12 joins a minute per source and room, in bursts of 12,
    reached before the 16 seats; other sources and other rooms are untouched."""
    (node,) = await signaling_mesh(1, **DEFAULT_LIMITS)
    _, outcomes = await joins_from_one_address(node, connect, 20, at_once=True)
    assert outcomes == {"seated": 12, "rate-limited": 8}
    assert node.rooms.counters["join.refused.rate"] == 8

    joined = await sits_from(node, "127.0.0.2", ROOM)
    assert joined["type"] == "joined", joined
    assert joined["total"] == 13

    other_room = room_key(canonical_url("https://example.org/another-page"))
    late = await connect(node)
    assert (await late.join(other_room)).layer == 0


async def test_one_address_is_cut_at_seats_per_source_and_another_address_still_sits(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """NodeConfig's 16 seats per source and room (the join rate lifted so that the seat
    limit is the one reached): joins from 127.0.0.1 past the 16th are refused
    `rate-limited`, a client from 127.0.0.2 is seated, and a seat given back is free."""
    (node,) = await signaling_mesh(1, seats_per_source=DEFAULTS.seats_per_source)
    clients, outcomes = await joins_from_one_address(node, connect, 20, at_once=False)
    assert outcomes == {"seated": 16, "rate-limited": 4}
    assert node.rooms.counters["join.refused.seats"] == 4

    joined = await sits_from(node, "127.0.0.2", ROOM)
    assert joined["type"] == "joined", joined
    assert joined["total"] == 17

    seated = [c for c in clients if ROOM in c.rooms]
    refused = [c for c in clients if ROOM not in c.rooms]
    with pytest.raises(SignalingError, match="rate-limited"):
        await refused[0].join(ROOM)
    await seated[0].leave(ROOM)
    assert (await refused[0].join(ROOM)).room == ROOM


async def test_joins_from_one_address_at_once_are_cut_at_seats_per_source(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """The same limit when the joins arrive together, as a flood does: a join in flight
    holds its seat's place against its source."""
    (node,) = await signaling_mesh(1, seats_per_source=DEFAULTS.seats_per_source)
    _, outcomes = await joins_from_one_address(node, connect, 24, at_once=True)
    assert outcomes == {"seated": 16, "rate-limited": 8}


# --- a node with more to read and store than its DHT runs at once ---------------------------------


async def test_joins_are_answered_when_they_need_more_dht_operations_than_run_at_once(
    tmp_path: Path,
) -> None:
    """Joins into 24 rooms at once through a node whose DHT runs two operations at a time
    (standing in for a node renewing more than 256 layers against the default 512): every
    join is seated, none left waiting (DHT operations past the bound queue)."""
    busy = dataclasses.replace(LOOPBACK_DHT, max_operations=2)
    nodes = await start_nodes(tmp_path, 2, dht=busy)
    clients = [
        await SignalingClient.connect(nodes[0].url, SigningKey.generate()) for _ in range(24)
    ]
    try:
        rooms = [room_key(canonical_url(f"https://example.org/busy/{i}")) for i in range(24)]
        async with asyncio.timeout(5):
            answers = await asyncio.gather(
                *(c.join(r) for c, r in zip(clients, rooms, strict=True)), return_exceptions=True
            )
        assert [type(a).__name__ for a in answers] == ["Joined"] * len(rooms), answers
    finally:
        await close_clients(clients)
        await stop_nodes(nodes)


async def test_a_join_refused_for_its_rate_gives_back_its_room_slot(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """A join refused `rate-limited` before it starts (per room, or per address in all
    rooms) sat nowhere: the connection's room slot it reserved is free again, so a
    connection whose joins were refused is not cut at `max_rooms` for rooms it is not in."""
    limits = dataclasses.replace(FAST_NODE.limits, max_rooms=1)
    (node,) = await signaling_mesh(1, joins_per_minute=1.0, limits=limits)
    client = await connect(node)
    await client.join(ROOM)
    await client.leave(ROOM)
    with pytest.raises(SignalingError) as refused:
        await client.join(ROOM)  # the room's one join a minute is spent
    assert refused.value.code == "rate-limited"
    assert node.clients[client.key].session.rooms == set()
    other_room = room_key(canonical_url("https://example.org/yet-another-page"))
    assert (await client.join(other_room)).layer == 0
