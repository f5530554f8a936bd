"""Block and flood cut between real aiortc peers through a real node (docs/protocol.md 5.4).

The attacker's tests: a blocked key gets no link, no message and no file
through, is not listed, and stays so after a restart; a member flooding at
500 messages a second is cut while two honest members chat."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from dht.identity import Identity
from peer.blocks import MAX_FLOOD_MUTED
from peer.chatscreen import ChatScreen
from peer.cli import command
from peer.messaging import Envelope, RoomConfig, short_tag
from peer.peer import (
    Connected,
    FileOffered,
    Flooding,
    MemberLeft,
    Message,
    Peer,
    PeerConfig,
    Room,
)
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory, next_of

pytestmark = pytest.mark.integration

URL = "https://example.org/blocking"


class Seen:
    """Everything a room emits, read in the background."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.events: list[object] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.room.events():
            self.events.append(event)

    def messages(self, author: bytes) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Message) and e.author == author]

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, check: object, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            # what is awaited (counters, lists) is not an event of the room: polled
            while not check():  # type: ignore[operator]  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.task.cancel()


async def linked(room: Room, key: bytes, within: float = 20.0) -> None:
    if key in room.links and room.links[key].open:
        return
    await next_of(room, Connected, within, key=key)


async def test_a_blocked_key_gets_nothing_through_and_is_not_shown_after_restart_too(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    bob = await peers("bob", [node.url])
    mallory = await peers("mallory", [node.url])
    room_b = await bob.join(URL)
    room_m = await mallory.join(URL)
    async with Peer(tmp_path / "alice", [node.url], name="alice") as alice:
        room_a = await alice.join(URL)
        await linked(room_a, mallory.public_key)
        await linked(room_a, bob.public_key)
        seen = Seen(room_a)
        await seen.until(lambda: room_a.name_of(mallory.public_key) == "mallory")
        room_a.block(mallory.public_key)
        await seen.until(lambda: seen.of(MemberLeft))
        assert mallory.public_key not in room_a.members and mallory.public_key not in room_a.links
        # Mallory talks and offers a file; Bob hears it, Alice does not.
        source = tmp_path / "spam.txt"
        source.write_bytes(b"spam" * 1000)
        await room_m.say("can you hear me?")
        await room_m.send_file(source)
        await next_of(room_b, FileOffered, sender=mallory.public_key)
        await room_b.say("bob here")
        await seen.until(lambda: seen.messages(bob.public_key) == ["bob here"])
        # Mallory keeps trying to link (offers or relinks on backoff): never answered.
        await seen.until(lambda: alice.refused_blocked > 0)
        await asyncio.sleep(1.0)
        assert seen.messages(mallory.public_key) == []
        assert not seen.of(FileOffered)
        assert all(e.author != mallory.public_key for e in room_a.transcript())
        assert room_a.name_of(mallory.public_key) is None
        link = room_m.links.get(alice.public_key)
        assert link is None or not link.open  # to Mallory, Alice is unreachable
        seen.stop()
    # Alice restarts: still blocked, from the store.
    alice = await peers("alice", [node.url])
    assert mallory.public_key in alice.blocked
    room_a = await alice.join(URL)
    seen = Seen(room_a)
    await linked(room_a, bob.public_key)
    await room_m.say("and now?")
    await room_b.say("welcome back")
    await seen.until(lambda: "welcome back" in seen.messages(bob.public_key))
    await seen.until(lambda: alice.refused_blocked > 0)
    assert seen.messages(mallory.public_key) == []
    assert mallory.public_key not in room_a.members | set(room_a.links)
    assert all(e.author != mallory.public_key for e in room_a.transcript())
    # The chat lists the block by the name Mallory had; /unblock NAME undoes it.
    listed = await command(room_a, "/blocked")
    assert listed == [
        f"*   blocked  mallory{short_tag(mallory.public_key)}  {mallory.public_key.hex()}"
    ]
    assert await command(room_a, "/mute bob") == [
        "* muted bob: their messages are hidden; /unmute to undo"
    ]
    await room_b.say("hidden")
    await room_b.say("hidden too")
    await asyncio.sleep(1.0)
    assert await command(room_a, "/unmute bob") == ["* unmuted bob"]
    assert seen.messages(bob.public_key) == ["welcome back"]  # a mute keeps the link
    kept = [e for e in room_a.transcript() if e.author == bob.public_key]
    assert len(kept) >= 3  # muted messages are received, kept and acknowledged
    # Unblocked, Mallory is a member again and heard.
    assert await command(room_a, "/unblock mallory") == [
        f"* unblocked mallory{short_tag(mallory.public_key)}"
    ]
    await linked(room_a, mallory.public_key, within=30.0)
    await room_m.say("thanks")
    await seen.until(lambda: "thanks" in seen.messages(mallory.public_key))
    seen.stop()


async def test_a_member_flooding_at_500_a_second_is_cut_while_two_honest_members_chat(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    (node,) = await signaling_mesh(1)
    # The flooder's own client would refuse to run 1,000 messages ahead; this one will.
    rogue = PeerConfig(room=dataclasses.replace(RoomConfig(), max_unacked=10**6))
    alice = await peers("alice", [node.url])
    bob = await peers("bob", [node.url])
    flooder = await peers("flooder", [node.url], config=rogue)
    rooms = [await p.join(URL) for p in (alice, bob, flooder)]
    room_a, room_b, room_f = rooms
    for room, others in ((room_a, (bob, flooder)), (room_b, (alice, flooder))):
        for other in others:
            await linked(room, other.public_key)
    seen_a, seen_b = Seen(room_a), Seen(room_b)
    config = RoomConfig()
    start, sent, said = time.monotonic(), 0, 0
    while (elapsed := time.monotonic() - start) < 4.0:
        while sent < elapsed * 500:
            await room_f.send(f"flood {sent} " + "x" * 100)
            sent += 1
        if said < elapsed * 4:  # each honest member says something four times a second
            await room_a.say(f"a{said}")
            await room_b.say(f"b{said}")
            said += 1
        await asyncio.sleep(0.005)
    want_a = [f"a{i}" for i in range(said)]
    want_b = [f"b{i}" for i in range(said)]
    await seen_b.until(lambda: seen_b.messages(alice.public_key) == want_a)
    await seen_a.until(lambda: seen_a.messages(bob.public_key) == want_b)
    for room, seen in ((room_a, seen_a), (room_b, seen_b)):
        flooding = seen.of(Flooding)
        assert flooding and flooding[0].author == flooder.public_key  # type: ignore[attr-defined]
        assert flooder.public_key in room.muted  # shown as muted for flooding
        shown = seen.messages(flooder.public_key)
        # the bucket, and what refilled it before the first drop; none after the report
        assert len(shown) <= config.flood_messages + config.flood_rate * 4
        core = room.core
        delivered = sum(1 for e in core.transcript() if e.author == flooder.public_key)
        assert delivered <= config.flood_messages + config.flood_rate * 10
        # how many reach it depends on the link's queue (the glue refuses past 1 MiB)
        assert core.counters["drop.flood"] > 0
        assert core.early_envelopes <= config.max_early
    screen = ChatScreen(room_a, time.time())
    first, again = (screen.feed(Flooding(flooder.public_key, n)) for n in (1, 480))
    assert first == [
        "* muted flooder for flooding: they sent faster than the room takes, 1 dropped "
        "(/unmute to show them again, /block to cut them off)"
    ]
    assert again == ["* flooder: 480 more messages dropped for flooding"]
    print(f"flood over aiortc: {sent} sent in 4 s, {delivered} delivered to one member")
    seen_a.stop()
    seen_b.stop()


async def test_a_member_forwarding_floods_of_many_authors_mutes_a_bounded_few(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """The attacker: one member forwards, in history frames, envelopes of hundreds of
    made-up authors, each just over the flood cut. Each is muted for flooding until the
    room closes, but what the room remembers of them (and lists as muted for flooding,
    and the page draws as rows) stays within MAX_FLOOD_MUTED: the oldest goes first, and
    the flood cut still holds it to its rate."""
    (node,) = await signaling_mesh(1)
    tight = PeerConfig(room=dataclasses.replace(RoomConfig(), flood_messages=1, flood_rate=0.001))
    alice = await peers("alice", [node.url], config=tight)
    rogue = await peers("rogue", [node.url])
    room_a, room_r = await alice.join(URL), await rogue.join(URL)
    await linked(room_r, alice.public_key)
    await linked(room_a, rogue.public_key)
    authors = MAX_FLOOD_MUTED + 100
    now_ms = int(time.time() * 1000)
    envs = []
    for i in range(authors):
        who = Identity.from_seed(i.to_bytes(4, "big") + b"\1" * 28)
        for seq in (1, 2):
            env = Envelope(room_a.key, who.public_key, seq, now_ms + seq, now_ms, "text", "x")
            signed = dataclasses.replace(env, signature=who.sign(env.signed_bytes()))
            envs.append(signed.to_json())
    link = room_r.links[alice.public_key]
    for first in range(0, len(envs), 100):
        link.send({"t": "hist", "envs": envs[first : first + 100]})
    seen = Seen(room_a)
    await seen.until(lambda: room_a.core.counters.get("drop.flood", 0) >= authors, 30)
    assert len(seen.of(Flooding)) >= authors  # every one was cut and told
    assert len(room_a.flood_muted) <= MAX_FLOOD_MUTED
    newest = Identity.from_seed((authors - 1).to_bytes(4, "big") + b"\1" * 28).public_key
    assert newest in room_a.flood_muted
    # The terminal's screen remembers whom it reported as few; a forgotten one is told again.
    screen = ChatScreen(room_a, time.time())
    for event in seen.of(Flooding):
        screen.feed(event)
    assert len(screen.flooding) <= MAX_FLOOD_MUTED
    seen.stop()
