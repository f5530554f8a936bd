"""The stock `kademlia==2.2.3` package (bmuller, on rpcudp) as an outside peer of our mesh.

Everything runs on 127.0.0.1 with port 0. The stock server speaks only the four
stock RPCs; our nodes answer them in the stock shapes (ARCHITECTURE.md, "The
DHT"). Stock servers cannot prove an id derived from an Ed25519 key, so our
nodes serve them but never route to them: that is by design and asserted here.

Stock rpcudp waits 5 s for a reply before giving up, so every stock call here is
wrapped in a shorter `asyncio.wait_for`: a missing answer fails the test fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.utils import digest

from dht.ids import to_int
from dht.node import DHTNode
from dht.wire import WireError, parse_frame

from .conftest import LOOPBACK_CONFIG, MeshFactory

pytestmark = pytest.mark.integration

MESH_SIZE = 12
STOCK_TIMEOUT = 4.0  # below rpcudp's 5 s, so a lost reply fails here, not in a hang


@pytest.fixture(autouse=True)
def quiet_stock_logs() -> Iterator[None]:
    """The stock package warns about every RPC it does not know (our pm_identify)."""
    loggers = [logging.getLogger(name) for name in ("kademlia", "rpcudp")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


class ObservedProtocol(KademliaProtocol):
    """The stock protocol, unchanged except that it counts the requests it hears by name."""

    def __init__(self, source_node: Node, storage: object, ksize: int) -> None:
        super().__init__(source_node, storage, ksize)
        self.heard: Counter[str] = Counter()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(WireError):
            frame = parse_frame(data)
            if frame.is_request and isinstance(frame.body, list) and frame.body:
                self.heard[str(frame.body[0])] += 1
        super().datagram_received(data, addr)


class ObservedServer(Server):
    protocol_class = ObservedProtocol


@contextlib.asynccontextmanager
async def stock_servers(count: int, ksize: int, seed: int) -> AsyncIterator[list[Server]]:
    """`count` stock servers on 127.0.0.1, port 0, with seeded ids; stopped however we leave."""
    rng = random.Random(seed)
    servers: list[Server] = []
    try:
        for _ in range(count):
            server = ObservedServer(ksize=ksize, alpha=3, node_id=rng.randbytes(20))
            servers.append(server)
            await server.listen(0, interface="127.0.0.1")
        yield servers
    finally:
        for server in servers:
            server.stop()


def stock_address(server: Server) -> tuple[str, int]:
    host, port = server.transport.get_extra_info("sockname")[:2]
    return (host, port)


def true_closest(target: bytes, nodes: list[DHTNode], k: int) -> list[bytes]:
    """The k ids among our nodes nearest to `target` by XOR, nearest first."""
    num = to_int(target)
    return sorted((n.node_id for n in nodes), key=lambda i: to_int(i) ^ num)[:k]


async def bootstrap(server: Server, node: DHTNode) -> list[Node]:
    return list(await asyncio.wait_for(server.bootstrap([node.address]), STOCK_TIMEOUT))


@pytest.fixture(params=[20, 4], ids=["k20", "k4"])
def k(request: pytest.FixtureRequest) -> int:
    """The default k, and a small one so that the k closest of 12 nodes is a real choice."""
    return int(request.param)


@pytest.fixture
async def mesh(udp_mesh: MeshFactory, k: int) -> list[DHTNode]:
    config = dataclasses.replace(LOOPBACK_CONFIG, k=k)
    return await asyncio.wait_for(udp_mesh(MESH_SIZE, config), STOCK_TIMEOUT)


async def test_a_stock_node_bootstraps_off_our_mesh_and_finds_the_true_k_closest(
    mesh: list[DHTNode], k: int
) -> None:
    ours = {n.node_id: n for n in mesh}
    async with stock_servers(1, ksize=k, seed=1) as [server]:
        found = await bootstrap(server, mesh[0])

        # bootstrap() is a stock find_node crawl for its own id: it returns our
        # nodes, at their addresses, and exactly the true k closest, nearest first.
        assert all(n.id in ours and (n.ip, n.port) == ours[n.id].address for n in found)
        assert [n.id for n in found] == true_closest(server.node.id, mesh, k)

        # The same for other targets, crawled by the stock code from its own table.
        rng = random.Random(2)
        for _ in range(5):
            target = Node(rng.randbytes(20))
            nearest = server.protocol.router.find_neighbors(target, server.alpha)
            crawl = NodeSpiderCrawl(server.protocol, target, nearest, k, server.alpha)
            crawled = await asyncio.wait_for(crawl.find(), STOCK_TIMEOUT)
            assert [n.id for n in crawled] == true_closest(target.id, mesh, k)

        # One find_node RPC by hand: our node answers in the stock shape, [id, ip, port]
        # triples of our other nodes, nearest first, at least k of them.
        asked = mesh[5]
        ok, contacts = await asyncio.wait_for(
            server.protocol.find_node(asked.address, server.node.id, server.node.id),
            STOCK_TIMEOUT,
        )
        assert ok
        ids = [bytes(c[0]) for c in contacts]
        assert min(k, MESH_SIZE - 1) <= len(ids) <= k + LOOPBACK_CONFIG.reply_extra
        assert ids == sorted(ids, key=lambda i: to_int(i) ^ to_int(server.node.id))
        assert asked.node_id not in ids
        assert all((c[1], c[2]) == ours[bytes(c[0])].address for c in contacts)


@pytest.mark.parametrize("value", ["a plain stock value", 42, 2.5, b"\x00\xffbytes"])
async def test_stock_set_and_get_round_trip_through_our_nodes(
    mesh: list[DHTNode], k: int, value: str | int | float | bytes
) -> None:
    key = f"page:https://example.org/{value!r}"
    dkey = digest(key)
    async with stock_servers(2, ksize=k, seed=3) as [writer, reader]:
        await bootstrap(writer, mesh[0])
        await bootstrap(reader, mesh[-1])  # joins through a different node of ours

        assert await asyncio.wait_for(writer.set(key, value), STOCK_TIMEOUT)
        # The writer stored at the true k closest of our nodes (it may hold a copy
        # too; the reader never heard of it, since we never hand out stock nodes).
        holders = {n.node_id for n in mesh if dkey in n.core.plain}
        assert set(true_closest(dkey, mesh, k)) <= holders
        assert all(n.core.plain[dkey][0] == value for n in mesh if n.node_id in holders)

        assert reader.storage.get(dkey) is None
        assert await asyncio.wait_for(reader.get(key), STOCK_TIMEOUT) == value
        assert reader.storage.get(dkey) is None, "the value came from our nodes"


async def test_stock_nodes_are_served_but_never_routed_to(mesh: list[DHTNode], k: int) -> None:
    async with stock_servers(2, ksize=k, seed=4) as servers:
        for server, via in zip(servers, (mesh[0], mesh[1]), strict=True):
            await bootstrap(server, via)
        assert await asyncio.wait_for(servers[0].set("served", "yes"), STOCK_TIMEOUT)
        stock_ids = {s.node.id for s in servers}
        stock_addresses = {stock_address(s) for s in servers}

        # The stock servers route to us...
        ours = {n.address for n in mesh}
        for server in servers:
            neighbours = set(server.bootstrappable_neighbors())
            assert neighbours and neighbours <= ours

        # ...and our nodes served them and asked them to prove their ids, yet none
        # admitted them: a stock node cannot sign our identify nonce (it does not
        # even know the RPC), having no Ed25519 key its id derives from.
        assert sum(n.core.counters["rpc.in.FindNode"] for n in mesh) >= MESH_SIZE
        assert all(s.protocol.heard["pm_identify"] >= 1 for s in servers)
        for node in mesh:
            assert not stock_ids & {c.node_id for c in node.core.table.contacts()}
            assert not stock_addresses & {c.addr for c in node.core.table.contacts()}
        # Nor does any lookup of ours ever hand a stock server out.
        for server, node in zip(servers, mesh[2:], strict=False):
            found = await asyncio.wait_for(node.find_node(server.node.id), STOCK_TIMEOUT)
            assert found and not stock_addresses & {c.addr for c in found}
