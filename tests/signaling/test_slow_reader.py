"""A client that stops reading its socket must not freeze anyone else's connection.

What the node pushes to a client is written from whichever task made it: a member's
signal from the member's connection, a peer-joined from a join, a remote member's
signal from the link to its node. A socket nobody reads fills, and aiohttp waits for
it to drain without end, so without a bound the member signalling it (or the link
carrying its frames) waited forever. The node gives a send `send_timeout` seconds and
drops a client that takes longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest

from signaling.rooms import canonical_url, room_key

from .conftest import FAST_NODE, ClientFactory, NodeFactory

pytestmark = pytest.mark.integration

ROOM = room_key(canonical_url("https://example.org/slow-reader"))
LIMITS = dataclasses.replace(
    FAST_NODE.limits, frames_per_second=1000.0, frame_burst=1000.0, send_timeout=1.0
)


async def test_a_member_who_stops_reading_does_not_freeze_the_member_signalling_it(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    (node,) = await signaling_mesh(1, limits=LIMITS)
    # Lifted here so that one sender fills the socket (test below); with it, many do.
    node.rooms.config = dataclasses.replace(node.rooms.config, signal_bytes_burst=1e12)
    alice = await connect(node)
    mallory = await connect(node)
    await alice.join(ROOM)
    await mallory.join(ROOM)
    mallory._ws._conn.transport.pause_reading()  # type: ignore[union-attr]  # reads no more

    async def blast() -> None:
        for _ in range(400):  # 24 MB: past any loopback socket's buffers
            await alice.signal(mallory.key, "x" * 60_000, ROOM)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(blast(), 20.0)
    assert await asyncio.wait_for(alice.ping(), 10.0) < 10.0
    async with asyncio.timeout(5.0):
        while mallory.key in node.clients:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_signals_to_one_member_are_held_to_its_inbound_budget(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """Signals are the one way a stranger pushes bytes at a member who never chose to
    connect to it, and every sender has a budget of its own (16 seats per address and
    room, many addresses). What one member receives is bounded too: past
    `signal_bytes_burst` (then `signal_bytes_per_second`) the sender hears
    `rate-limited` and the member gets nothing more."""
    (node,) = await signaling_mesh(1, limits=LIMITS)
    alice = await connect(node)
    await alice.join(ROOM)
    senders = [await connect(node) for _ in range(4)]
    for sender in senders:
        await sender.join(ROOM)
    sent = 0
    for _ in range(30):
        for sender in senders:
            await sender.signal(alice.key, "x" * 60_000, ROOM)
            sent += 1
    for sender in senders:
        await sender.ping()  # the node has handled every signal before it
    assert node.rooms.counters["signal.refused.inbound"] > 0
    delivered = node.rooms.counters["signal.local"]
    assert delivered * 60_000 <= node.rooms.config.signal_bytes_burst + 1_000_000
    assert delivered + node.rooms.counters["signal.refused.inbound"] <= sent
