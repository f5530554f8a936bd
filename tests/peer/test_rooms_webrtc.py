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
    assert room_b.names[alice.public_key] == "alice" and room_a.names[bob.public_key] == "bob"


class Watcher:
    """Reads one room's events: which members are linked, which messages arrived."""

    def __init__(self, room: Room, members: int, messages: int) -> None:
        self.room = room
        self.linked: set[bytes] = set()
        self.seen: set[tuple[bytes, int]] = set()
        self.all_linked = asyncio.Event()
        self.all_delivered = asyncio.Event()
        self.members, self.messages = members, messages
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.room.events():
            if isinstance(event, Connected):
                self.linked.add(event.key)
            elif isinstance(event, Message):
                self.seen.add((event.author, event.seq))
            if len(self.linked) >= self.members:
                self.all_linked.set()
            if len(self.seen) >= self.messages:
                self.all_delivered.set()


async def test_five_peers_three_nodes_500_messages_through_forced_drops(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    nodes = await signaling_mesh(3)
    crowd = [await peers(f"p{i}", [nodes[i % 3].url]) for i in range(5)]
    rooms = [await peer.join(URL) for peer in crowd]
    watchers = [Watcher(room, members=4, messages=500) for room in rooms]
    await asyncio.wait_for(asyncio.gather(*(w.all_linked.wait() for w in watchers)), 30)
    rng = random.Random(7)
    for i in range(500):
        await rooms[i % 5].send(f"{i}")
        if i % 60 == 59:  # force a random connection down
            victim = rng.choice(rooms)
            await rng.choice(list(victim.links.values())).pc.close()
        if i % 25 == 0:
            await asyncio.sleep(0.01)  # let the links breathe: this is a chat, not a flood
    try:
        await asyncio.wait_for(asyncio.gather(*(w.all_delivered.wait() for w in watchers)), 60)
    except TimeoutError:
        for w in watchers:  # what each peer had, for the failure report
            links = {k.hex()[:6]: (v.open, v.pc.connectionState) for k, v in w.room.links.items()}
            print(len(w.seen), w.room.core.counters, links)
        raise
    for w in watchers:
        w.task.cancel()
    orders = {tuple((e.author, e.seq) for e in r.transcript()) for r in rooms}
    assert len(orders) == 1 and len(orders.pop()) == 500
    for peer, room in zip(crowd, rooms, strict=True):
        ids = [(e.author, e.seq) for e in peer.store.history(room.key, 10_000)]
        assert len(ids) == len(set(ids)) == 500
