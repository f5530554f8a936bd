"""Real aiortc peers on loopback, meeting through signaling nodes."""

from __future__ import annotations

import asyncio
import random

import pytest

from peer.peer import Connected, Message, Room
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory

pytestmark = pytest.mark.integration

URL = "https://example.org/"


async def messages(room: Room, count: int, within: float = 20.0) -> list[Message]:
    got: list[Message] = []

    async def collect() -> None:
        async for event in room.events():
            if isinstance(event, Message):
                got.append(event)
                if len(got) >= count:
                    return

    await asyncio.wait_for(collect(), within)
    return got


async def connected(room: Room, within: float = 20.0) -> Connected:
    while True:
        event = await room.next_event(within)
        if isinstance(event, Connected):
            return event


async def test_two_peers_on_two_nodes_chat(signaling_mesh: NodeFactory, peers: PeerFactory) -> None:
    a, b = await signaling_mesh(2)
    alice = await peers("alice", [a.url])
    bob = await peers("bob", [b.url])
    room_a = await alice.join(URL)
    room_b = await bob.join(URL)
    link = await connected(room_b)
    assert link.key == alice.public_key and link.path == "direct"
    await connected(room_a)
    await room_a.send("hello bob")
    await room_b.send("hello alice")
    got_b = await messages(room_b, 2)
    got_a = await messages(room_a, 2)
    assert {m.text for m in got_b} == {m.text for m in got_a} == {"hello bob", "hello alice"}
    assert [e.body for e in room_a.transcript()] == [e.body for e in room_b.transcript()]


async def test_five_peers_three_nodes_500_messages_through_forced_drops(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    nodes = await signaling_mesh(3)
    crowd = [await peers(f"p{i}", [nodes[i % 3].url]) for i in range(5)]
    rooms = []
    for peer in crowd:
        rooms.append(await peer.join(URL))

    # everyone sees everyone (4 links each)
    async def linked(room: Room) -> None:
        while len([k for k, link in room.links.items() if link.open]) < 4:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(asyncio.gather(*(linked(r) for r in rooms)), 30)
    rng = random.Random(7)
    for i in range(500):
        room = rooms[i % 5]
        await room.send(f"{i}")
        if i % 60 == 59:  # force a random connection down
            victim = rng.choice(rooms)
            link = rng.choice(list(victim.links.values()))
            await link.pc.close()
        if i % 25 == 0:
            await asyncio.sleep(0.01)

    async def complete(room: Room) -> None:
        while len(room.transcript()) < 500 or len(room.core._history) < 500:
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(asyncio.gather(*(complete(r) for r in rooms)), 60)
    except TimeoutError:
        for r in rooms:  # what each peer had, for the failure report
            links = {k.hex()[:6]: (v.open, v.pc.connectionState) for k, v in r.links.items()}
            print(r.peer.public_key.hex()[:6], len(r.transcript()), r.core.counters, links)
        raise
    orders = {tuple((e.author, e.seq) for e in r.transcript()) for r in rooms}
    assert len(orders) == 1
    for peer, room in zip(crowd, rooms, strict=True):
        ids = [(e.author, e.seq) for e in peer.store.history(room.key, 10_000)]
        assert len(ids) == len(set(ids)) == 500
