"""Reachability checks between real DHT nodes on loopback: probes leave from a second socket."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dht.node import DHTNode
from dht.reach import Reachability, ReachConfig

from .conftest import LOOPBACK_CONFIG

pytestmark = pytest.mark.integration

CHECKING = dataclasses.replace(LOOPBACK_CONFIG, reach=ReachConfig(check=True, probe_wait=2.0))

Joiner = Callable[[int], Awaitable[list[DHTNode]]]


@pytest.fixture
async def checked_mesh(tmp_path: Path) -> AsyncIterator[Joiner]:
    """`await checked_mesh(n)`: nodes that join one after another, each checked first."""
    started: list[DHTNode] = []

    async def start(count: int) -> list[DHTNode]:
        for _ in range(count):
            seeds = [started[0].address] if started else []
            node = await DHTNode.start(
                "127.0.0.1", 0, tmp_path / f"n{len(started)}", bootstrap=seeds, config=CHECKING
            )
            started.append(node)
            if seeds:
                assert node.core.client, "a node with seeds asks before it joins"
                await node.check_reach()
        return started

    try:
        yield start
    finally:
        for node in started:
            node.abort()


async def test_helpers_probe_from_another_port_and_the_node_joins(checked_mesh: Joiner) -> None:
    *helpers, newcomer = await checked_mesh(4)
    verdict = newcomer.core.reach_verdict
    assert verdict is not None
    assert verdict.dht is Reachability.REACHABLE and verdict.confirmed == 3, verdict
    assert verdict.observed is not None and verdict.observed[0] == "127.0.0.1"
    assert not newcomer.core.client
    for _ in range(100):  # its own-id lookup, then the helpers' identifies: milliseconds
        if all(newcomer.node_id in h.core.table for h in helpers):
            break
        await asyncio.sleep(0.02)
    assert all(newcomer.node_id in h.core.table for h in helpers)
    counters = newcomer.core.counters
    assert counters["reach.probe_in.udp"] == 3 and counters["reach.probe_same_socket"] == 0
    # No URL was asked for, so nobody dialled one.
    assert verdict.url is Reachability.UNKNOWN and counters["reach.probe_in.url"] == 0


async def test_a_node_whose_probes_cannot_arrive_is_found_unreachable(
    checked_mesh: Joiner,
) -> None:
    """Every helper's probe socket is made to drop what it sends: what a NAT does to them."""
    nodes = await checked_mesh(4)
    for helper in nodes[:3]:
        assert helper._probe_transport is not None
        helper._probe_transport.close()
        helper._probe_transport = _Blackhole()  # type: ignore[assignment]
    verdict = await nodes[3].check_reach()
    assert verdict.dht is Reachability.UNREACHABLE and verdict.missed == 3, verdict
    assert nodes[3].core.client


class _Blackhole:
    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        pass

    def close(self) -> None:
        pass
