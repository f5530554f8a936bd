"""A stranger with many addresses: per-source limits hold each address back, so
what must not grow with the number of addresses has a cap of its own.

Connections waiting for their hello: each address may hold a few, so a stranger
with many (a whole IPv6 /48 is 65,536 sources) could hold any number, each for
`idle_timeout`. A node keeps at most `admission.unauthenticated_total` waiting
at once and closes the one that has waited longest for a newcomer, so holding
them is no way to keep the node's clients out. Real node, real sockets from
many loopback addresses (127.0.0.0/8).
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer.signaling import SignalingClient
from signaling.admission import Admission, AdmissionLimits
from tests.adversarial.conftest import Sockets
from tests.signaling.conftest import NodeFactory

pytestmark = pytest.mark.integration

CAPPED = AdmissionLimits(
    unauthenticated=2, connections=64, per_second=100.0, burst=100.0, unauthenticated_total=8
)
"""Two waiting per address, eight waiting in all."""


async def closed(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Whether the node closes `ws` within a second (reading what it sent before: its
    challenge)."""
    try:
        async with asyncio.timeout(1):
            while True:
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return True
                if msg.type is aiohttp.WSMsgType.ERROR:
                    return True
    except TimeoutError:
        return False


async def test_many_addresses_hold_a_bounded_number_of_hello_waits(
    signaling_mesh: NodeFactory, sockets: Sockets
) -> None:
    (node,) = await signaling_mesh(1, admission=CAPPED)
    for n in range(12):  # 24 connections from 12 addresses, none ever says hello
        for _ in range(2):
            assert await sockets.open(node, f"127.0.0.{n + 2}") == 101
            assert node.admission.waiting_total <= CAPPED.unauthenticated_total
    assert node.admission.waiting_total == CAPPED.unauthenticated_total
    # The longest waiting made room for the newest, and are counted.
    gone = await asyncio.gather(*(closed(ws) for ws in sockets.sockets))
    assert gone == [True] * 16 + [False] * 8
    assert node.admission.evicted == 16
    assert node.metrics.refused.labels("hello-wait")._value.get() == 16
    # Someone who says hello gets in, and quickly, however many wait.
    alice = await SignalingClient.connect(node.url, SigningKey.generate())
    assert await alice.ping() < 0.5
    assert node.admission.waiting_total == CAPPED.unauthenticated_total - 1
    await alice.close()


async def test_node_links_have_a_cap_of_their_own(
    signaling_mesh: NodeFactory, sockets: Sockets
) -> None:
    """Links do not make room (a node's link is worth its wait): past the cap, 429."""
    links = AdmissionLimits(
        unauthenticated=2, connections=64, per_second=100.0, burst=100.0, unauthenticated_total=3
    )
    (node,) = await signaling_mesh(1, link_admission=links)
    statuses = [await sockets.open(node, f"127.0.1.{n + 2}", "/v1/node") for n in range(5)]
    assert statuses == [101, 101, 101, 429, 429]
    assert node.links.admission.refused["busy"] == 2


def test_the_cap_counts_every_source_and_makes_room_only_through_evict() -> None:
    admission = Admission(
        AdmissionLimits(unauthenticated=2, per_second=100.0, burst=100.0, unauthenticated_total=3)
    )
    for source in ("a", "b", "c"):
        assert admission.admit(source, 0.0) is None
    assert admission.admit("d", 0.0) is not None  # nobody to close: refused
    assert admission.refused["busy"] == 1
    waiting = ["a", "b", "c"]

    def evict() -> bool:
        admission.settled(waiting.pop(0))
        return True

    assert admission.admit("d", 0.0, evict) is None
    assert (admission.evicted, admission.waiting_total, admission.waiting("a")) == (1, 3, 0)
    admission.settled("a")  # settled twice (closed after its eviction): counted once
    assert admission.waiting_total == 3
    assert admission.admit("e", 0.0, lambda: False) is not None
    assert admission.refused["busy"] == 2
