"""Direct messages between two contacts (docs/protocol.md 7.4): real nodes, real aiortc
peers, the real presence records. A third key that learns the DM room's id gets no link
and reads nothing; a message written while the contact is away waits in the sender's
store, across a restart, and is delivered when the contact comes online."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from peer.peer import DmDelivered, Message, Peer, Room
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory, next_of
from .test_rooms_webrtc import connected

pytestmark = pytest.mark.integration

URL = "https://example.org/dm"


async def until(check: object, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def befriend(*people: Peer) -> None:
    """Everyone meets in a page's room, and each adds the others as contacts."""
    rooms = [await p.join(URL) for p in people]
    for room in rooms:
        await connected(room)
    for p in people:
        others = [q.identity_key for q in people if q is not p]
        await until(lambda p=p, others=others: all(k in p.cards for k in others))
    for p, room in zip(people, rooms, strict=True):
        for q in people:
            if q is not p:
                p.add_contact(q.identity_key, str(q.store.name), room)
    for p, room in zip(people, rooms, strict=True):
        await p.leave(room)


async def texts(room: Room, count: int, within: float = 20.0) -> list[str]:
    seen: list[str] = []
    while len(seen) < count:
        event = await next_of(room, Message, within)
        if not event.mine:
            seen.append(event.text)
    return seen


async def test_two_contacts_dm_both_ways_and_a_third_key_with_the_room_id_gets_nothing(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    a, b = await signaling_mesh(2)
    ana = await peers("ana", [a.url])
    ben = await peers("ben", [b.url])
    await befriend(ana, ben)
    key = ana.dm_room_key(ben.identity_key)
    assert key is not None and key == ben.dm_room_key(ana.identity_key)

    # Eve learns the room id somehow and joins it, asking for Ana's key.
    eve = await peers("eve", [b.url])
    eve.dm_room_key = lambda contact: key  # type: ignore[method-assign]
    dm_e = await eve.open_dm(ana.identity_key)

    here = await ana.join("https://example.org/elsewhere")
    dm_a = await ana.open_dm(ben.identity_key)
    dm_b = await ben.open_dm(ana.identity_key)
    await connected(dm_a)
    await connected(dm_b)
    await dm_a.say("hello Ben, just us")
    assert await texts(dm_b, 1) == ["hello Ben, just us"]
    await next_of(dm_a, DmDelivered, contact=ben.identity_key)
    assert dm_a.waiting() == []
    await dm_b.say("hi Ana")
    assert await texts(dm_a, 1) == ["hi Ana"]

    # Eve was seated by the node; a link on probation at most, closed by its deadline
    # (5 s), on which neither told her anything.
    eve_key = eve.public_key
    await until(lambda: eve_key not in set(dm_a.links) | set(dm_b.links), within=10.0)
    await until(lambda: not any(link.open for link in dm_e.links.values()))
    assert set(dm_a.links) == {ben.public_key} and set(dm_b.links) == {ana.public_key}
    assert eve.public_key not in dm_a.members | dm_b.members
    assert not any(link.open for link in dm_e.links.values())
    assert dm_e.transcript() == []
    assert ana.refused_strangers + ben.refused_strangers > 0
    # The DM is nobody's place: presence names the page Ana is on, never the DM.
    assert ana.presence._place is not None and ana.presence._place.room == here.key


async def test_a_message_to_an_offline_contact_waits_across_a_restart_and_is_delivered(
    tmp_path: Path, signaling_mesh: NodeFactory
) -> None:
    (node,) = await signaling_mesh(1)
    urls = [node.url]
    ana = await Peer(tmp_path / "ana", urls, name="ana").__aenter__()
    ben = await Peer(tmp_path / "ben", urls, name="ben").__aenter__()
    await befriend(ana, ben)
    await ben.close()  # Ben goes away; presence is off on both sides (the default)

    dm = await ana.open_dm(ben.identity_key, keep=False)
    await dm.say("see this when you are back")
    assert [e.body for e in ana.dm_waiting(ben.identity_key)] == [dm.transcript()[-1].body]
    await ana.close()

    # Ana restarts: the message still waits, from her store, and she waits in the room.
    ana = await Peer(tmp_path / "ana", urls, name="ana").__aenter__()
    try:
        assert len(ana.dm_waiting(ben.identity_key)) == 1
        await until(lambda: ben.identity_key in ana.dm_rooms)
        assert ana.presence.mode == "off"  # knocking needs no presence for everyone

        # Ben comes back without opening anything: Ana's note for him says a DM waits.
        ben = await Peer(tmp_path / "ben", urls, name="ben").__aenter__()
        try:
            await ben.refresh_presence()
            assert ana.identity_key in ben.presence.knocking(time.time())
            room = await asyncio.wait_for(ben.dm_opened.get(), 15)
            assert room.contact == ana.identity_key
            assert await texts(room, 1) == ["see this when you are back"]
            dm_a = ana.dm_rooms[ben.identity_key]
            await until(lambda: not ana.dm_waiting(ben.identity_key))
            assert dm_a.dm_acked >= 1
            await room.say("got it")
            assert await texts(dm_a, 1) == ["got it"]
        finally:
            await ben.close()
    finally:
        await ana.close()
    # Delivered is kept: after another restart nothing waits.
    async with Peer(tmp_path / "ana", urls, name="ana") as again:
        assert again.dm_waiting(ben.identity_key) == []


async def test_the_chat_says_plainly_what_waits_and_what_arrived(
    tmp_path: Path, signaling_mesh: NodeFactory
) -> None:
    from peer.cli import command
    from peer.dm_cli import dm_line

    (node,) = await signaling_mesh(1)
    urls = [node.url]
    async with Peer(tmp_path / "ana", urls, name="ana") as ana:
        ben = await Peer(tmp_path / "ben", urls, name="ben").__aenter__()
        await befriend(ana, ben)
        await ben.close()
        here = await ana.join(URL)
        assert await command(here, "/dm nobody hi") == [
            "* no contact 'nobody' (/contacts lists them)"
        ]
        assert await command(here, "/dm ben are you there?") == [
            "* waiting for ben to come online; kept, and sent when you both are"
        ]
        lines = await command(here, "/dm ben")
        assert lines[0].startswith("[dm ben] [") and lines[0].endswith(
            "<ana> are you there?  (waiting)"
        )
        assert (
            lines[-1]
            == "* 1 message waits for ben to come online; kept, and sent when you both are"
        )
        async with Peer(tmp_path / "ben", urls, name="ben") as ben:
            dm_b = await ben.open_dm(ana.identity_key)
            assert await texts(dm_b, 1) == ["are you there?"]
            dm_a = ana.dm_rooms[ben.identity_key]
            event = await next_of(dm_a, DmDelivered)
            assert dm_line(dm_a, event) == "[dm ben] \u2713 delivered"
            lines = await command(here, "/dm ben")
            assert lines[0].endswith("<ana> are you there?  \u2713")
            assert lines[-1] == "* everything you wrote reached ben \u2713"
            assert await command(here, "/dm ben and now?") == []
            assert await texts(dm_b, 1) == ["and now?"]


async def test_a_dm_survives_a_node_fail_over_and_what_waits_goes_through_the_other_node(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    from peer.peer import Rejoined

    a, b = await signaling_mesh(2)
    ana = await peers("ana", [a.url, b.url])
    ben = await peers("ben", [b.url])
    await befriend(ana, ben)
    dm_a = await ana.open_dm(ben.identity_key)
    dm_b = await ben.open_dm(ana.identity_key)
    await connected(dm_a)
    await a.stop()  # Ana's node goes away: the DM's data channel does not need it
    await dm_a.say("my node is gone")
    assert await texts(dm_b, 1) == ["my node is gone"]
    rejoined = await next_of(dm_a, Rejoined, within=30)
    assert rejoined.node == b.url and ana.node is not None and dm_a.key in ana.node.rooms

    # Ben goes; what Ana writes now waits, and reaches him through node b when he is back.
    await ben.close()
    await until(lambda: not dm_a.contact_linked())
    await dm_a.say("after the fail-over")
    assert len(dm_a.waiting()) == 1
    ben = await peers("ben", [b.url])
    deadline = time.monotonic() + 15
    while ana.identity_key not in ben.presence.knocking(time.time()):
        assert time.monotonic() < deadline, "Ana's note never said a DM waits"
        await ben.refresh_presence()
    ben._dm_tick()
    room = await asyncio.wait_for(ben.dm_opened.get(), 15)
    assert await texts(room, 1) == ["after the fail-over"]  # the first he had already
    await until(lambda: not dm_a.waiting())


async def test_a_file_goes_through_a_dm_like_any_room(
    tmp_path: Path, signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    from peer.peer import FileDone

    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url])
    ben = await peers("ben", [node.url], accept_files_to=tmp_path / "inbox")
    await befriend(ana, ben)
    dm_a = await ana.open_dm(ben.identity_key)
    dm_b = await ben.open_dm(ana.identity_key)
    await connected(dm_a)
    source = tmp_path / "for-ben.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    await dm_a.send_file(source)
    done = await next_of(dm_b, FileDone, within=30)
    assert done.path is not None and done.path.read_bytes() == source.read_bytes()
    assert done.sender == ana.public_key


async def test_the_chat_offers_and_gets_files_in_a_dm(
    tmp_path: Path, signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """`/dm NAME /send PATH` offers a file to the contact; their chat prints the offer,
    numbered for `/dm NAME /get N`, which saves the very bytes."""
    from peer.cli import command
    from peer.dm_cli import dm_line
    from peer.peer import FileDone, FileOffered

    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url])
    ben = await peers("ben", [node.url])
    await befriend(ana, ben)
    here_a, here_b = await ana.join(URL + "/a"), await ben.join(URL + "/b")
    dm_b = await ben.open_dm(ana.identity_key)
    await connected(await ana.open_dm(ben.identity_key))
    assert await command(here_a, "/dm ben hello") == []
    assert await texts(dm_b, 1) == ["hello"]
    assert await command(here_a, "/dm ben /send") == ["* /dm ben /send takes a file's path"]
    assert await command(here_a, "/dm ben /send /no/such/file") == ["* no such file: /no/such/file"]
    assert await command(here_b, "/dm ana /get 1") == ["* ana offered no file numbered 1"]
    assert await command(here_b, "/dm ana /get") == ["* ana offers no files now"]

    for sender, room_s, receiver, room_r, dm_r, name_s in (
        (ana, here_a, ben, here_b, dm_b, "ana"),
        (ben, here_b, ana, here_a, None, "ben"),
    ):
        name_r = "ben" if name_s == "ana" else "ana"
        dm_r = dm_r or receiver.dm_rooms[sender.identity_key]
        source = tmp_path / f"from-{name_s}.bin"
        source.write_bytes(name_s.encode() * 100_000)
        assert await command(room_s, f"/dm {name_r} /send {source}") == [
            f"[dm {name_r}] * you offer from-{name_s}.bin (300.0 kB)"
        ]
        offered = await next_of(dm_r, FileOffered, within=30)
        assert dm_line(dm_r, offered) == (
            f"[dm {name_s}] * {name_s} offers from-{name_s}.bin (300.0 kB) "
            f"\u2014 /dm {name_s} /get 1"
        )
        assert dm_line(dm_r, offered) is None  # told once
        listed = await command(room_r, f"/dm {name_s} /get")
        assert listed == [
            f"* files {name_s} offers:",
            f"*   /dm {name_s} /get 1  from-{name_s}.bin (300.0 kB)",
        ]
        inbox = tmp_path / f"inbox-{name_r}"
        inbox.mkdir()
        out = inbox
        assert await command(room_r, f"/dm {name_s} /get 1", out=out) == [
            f"[dm {name_s}] * getting from-{name_s}.bin"
        ]
        done = await next_of(dm_r, FileDone, within=30)
        assert done.path is not None and done.path.read_bytes() == source.read_bytes()
        assert dm_line(dm_r, done) == (
            f"[dm {name_s}] * saved from {name_s}: {done.path} (300.0 kB, verified)"
        )
