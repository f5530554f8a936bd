"""The stock `kademlia` package (PyPI) as an outside peer of a pagemesh mesh, on loopback."""

from __future__ import annotations

import logging

import pytest
from kademlia.network import Server
from kademlia.utils import digest

from dht.node import DHTNode

from .conftest import MeshFactory

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def quiet_stock_logs() -> None:
    # The stock package logs a warning for every RPC it does not know (our
    # pm_identify) and an error for every timeout; they are expected here.
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)


@pytest.fixture
async def mesh(udp_mesh: MeshFactory) -> list[DHTNode]:
    return await udp_mesh(30)


async def stock_server() -> Server:
    server = Server(ksize=20, alpha=3)
    await server.listen(0, interface="127.0.0.1")
    return server


def stock_port(server: Server) -> int:
    return int(server.transport.get_extra_info("sockname")[1])


async def test_a_stock_node_bootstraps_off_our_mesh_and_finds_the_true_k_closest(
    mesh: list[DHTNode],
) -> None:
    server = await stock_server()
    try:
        found = await server.bootstrap([mesh[0].address])
        ours = {n.node_id: n for n in mesh}
        target = int.from_bytes(server.node.id, "big")
        truth = sorted(ours, key=lambda i: int.from_bytes(i, "big") ^ target)[:20]
        assert [n.id for n in found] == truth
        assert all((n.ip, n.port) == ours[n.id].address for n in found)
        # And a direct find_node is answered with the closest contacts, nearest first.
        ok, contacts = await server.protocol.find_node(mesh[5].address, server.node.id, truth[0])
        assert ok
        ids = [bytes(c[0]) for c in contacts]
        ranked = sorted(
            ids, key=lambda i: int.from_bytes(i, "big") ^ int.from_bytes(truth[0], "big")
        )
        assert ids == ranked and truth[0] in ids
    finally:
        server.stop()


async def test_stock_set_and_get_round_trip_through_our_nodes(mesh: list[DHTNode]) -> None:
    writer, reader = await stock_server(), await stock_server()
    try:
        await writer.bootstrap([mesh[0].address])
        await reader.bootstrap([mesh[17].address])
        assert await writer.set("page:https://example.org/", "a plain stock value")
        assert await reader.get("page:https://example.org/") == "a plain stock value"
        key = digest("page:https://example.org/")
        holders = [n for n in mesh if key in n.core.plain]
        assert len(holders) >= 19  # the k closest of ours (the writer may count as one)
        assert reader.storage.get(key) is None, "the reader must have asked our nodes"
    finally:
        writer.stop()
        reader.stop()


async def test_stock_nodes_are_served_but_never_routed_to(mesh: list[DHTNode]) -> None:
    server = await stock_server()
    try:
        await server.bootstrap([mesh[0].address])
        address = ("127.0.0.1", stock_port(server))
        # Whatever our nodes heard from it, none admitted it: it cannot prove an id.
        for node in mesh:
            assert all(c.addr != address for c in node.core.table.contacts())
            assert server.node.id not in node.core.table
        for node in mesh:
            found = await node.find_node(server.node.id)
            assert all(c.addr != address for c in found)
    finally:
        server.stop()
