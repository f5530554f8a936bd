"""Blocking a person, not a key (docs/protocol.md 5.4 with 5.3), with real aiortc peers
through a real node.

The attacker's tests: Ana, with two devices, is blocked from one device's message;
neither device gets a link or is shown, after our restart too, nor a third device she
comes back with; Mallory, claiming Ana's identity with a delegation Ana never signed,
is her own key, neither blocked nor hidden."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peer.cli import command
from peer.device import Delegation
from peer.messaging import short_tag
from peer.peer import Message, Peer, Room
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory
from .test_block_peers import Seen, linked
from .test_devices_webrtc import move_identity, until_linked

pytestmark = pytest.mark.integration

URL = "https://example.org/blocking-people"


def nothing_of(room: Room, seen: Seen, keys: set[bytes]) -> None:
    """None of `keys` is a member, linked, shown, named or in the transcript."""
    assert not keys & (room.members | set(room.links))
    assert not [e for e in seen.of(Message) if e.author in keys]  # type: ignore[attr-defined]
    assert all(e.author not in keys for e in room.transcript())
    assert all(room.name_of(k) is None for k in keys)


async def test_a_person_blocked_from_one_device_message_gets_nothing_through_on_any_device(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    laptop = await peers("ana-laptop", [node.url], device="laptop")
    move_identity(tmp_path / "ana-laptop", tmp_path / "ana-phone")
    phone = await peers("ana-phone", [node.url], device="phone")
    bob = await peers("bob", [node.url])
    ana = laptop.identity_key
    room_l, room_p, room_b = [await p.join(URL) for p in (laptop, phone, bob)]
    devices = {laptop.public_key, phone.public_key}

    async with Peer(tmp_path / "alice", [node.url], name="alice") as alice:
        room_a = await alice.join(URL)
        await until_linked(room_a, devices | {bob.public_key})
        seen = Seen(room_a)
        await room_l.say("hello from the laptop")
        await seen.until(lambda: seen.messages(laptop.public_key) == ["hello from the laptop"])
        assert room_a.person_of(phone.public_key) == ana
        # Alice blocks the author of that message: the person, both devices.
        room_a.block(laptop.public_key)
        assert set(alice.blocks) == {ana}  # the identity is stored, not the device key
        assert alice.blocks[ana].label == "ana-laptop"
        assert devices <= alice.blocked
        await seen.until(lambda: not devices & (room_a.members | set(room_a.links)))
        await room_p.say("from the phone")
        await room_l.say("from the laptop")
        await seen.until(lambda: alice.refused_blocked > 0)  # both keep trying to link
        await until_linked(room_b, devices)
        await room_b.say("bob here")
        await seen.until(lambda: "bob here" in seen.messages(bob.public_key))
        await asyncio.sleep(1.0)
        assert seen.messages(phone.public_key) == []
        assert all(e.author not in devices for e in room_a.transcript())  # the first one too
        assert all(room_a.name_of(k) is None for k in devices)
        link = room_p.links.get(alice.public_key)
        assert link is None or not link.open  # to the phone Alice is unreachable
        seen.stop()

    # Alice restarts: both devices are caught before any link opens.
    alice = await peers("alice", [node.url])
    assert {ana} | devices <= alice.blocked
    room_a = await alice.join(URL)
    seen = Seen(room_a)
    await linked(room_a, bob.public_key)
    await room_l.say("after the restart")
    await room_b.say("welcome back")
    await seen.until(lambda: "welcome back" in seen.messages(bob.public_key))
    await seen.until(lambda: alice.refused_blocked > 0)
    nothing_of(room_a, seen, devices)

    # Ana comes back with a third device: its link closes at its device frame.
    move_identity(tmp_path / "ana-laptop", tmp_path / "ana-tablet")
    tablet = await peers("ana-tablet", [node.url], device="tablet")
    room_t = await tablet.join(URL)
    await seen.until(lambda: tablet.public_key in alice.blocked)
    await seen.until(lambda: tablet.public_key not in room_a.members | set(room_a.links))
    await until_linked(room_t, {bob.public_key})
    await room_t.say("a new device")
    await seen.until(lambda: any("a new device" in e.body for e in room_b.transcript()), 30)
    await room_b.say("bob again")
    await seen.until(lambda: "bob again" in seen.messages(bob.public_key))
    await asyncio.sleep(1.0)
    nothing_of(room_a, seen, devices | {tablet.public_key})
    assert alice.block_devices == dict.fromkeys(devices | {tablet.public_key}, ana)

    # Mallory claims Ana's identity with a delegation Ana never signed: her own key.
    mallory = await peers("mallory", [node.url], device="x")
    own = mallory.delegation
    assert own is not None
    mallory.delegation = Delegation(
        ana, own.device, own.not_before, own.expires, "phone", own.signature
    )
    room_m = await mallory.join(URL)
    await seen.until(lambda: mallory.public_key in room_a.paths(), 30)
    await room_m.say("I am Ana, honest")
    await seen.until(lambda: seen.messages(mallory.public_key) == ["I am Ana, honest"])
    assert room_a.refused_devices.get("signature") == 1
    assert room_a.person_of(mallory.public_key) == mallory.public_key
    assert mallory.public_key not in alice.blocked and mallory.public_key in room_a.links

    # The chat lists the person, by the name she had and her devices; /unblock undoes it.
    assert await command(room_a, "/blocked") == [
        f"*   blocked  ana-laptop{short_tag(ana)} (3 devices)  {ana.hex()}"
    ]
    unblocked = await command(room_a, "/unblock ana-laptop")
    assert unblocked == [f"* unblocked ana-laptop{short_tag(ana)}"]
    assert not alice.blocked and not alice.block_devices
    await seen.until(lambda: tablet.public_key in room_a.paths(), 30)
    await room_t.say("thanks")
    await seen.until(lambda: "thanks" in seen.messages(tablet.public_key))
    seen.stop()


async def test_blocking_a_device_key_blocks_its_person_in_the_chat_and_mute_too(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """`pagemesh chat`: /block NAME of one device blocks the person; /mute hides every
    device's messages and keeps the links."""
    (node,) = await signaling_mesh(1)
    laptop = await peers("ana", [node.url], device="laptop")
    alice = await peers("alice", [node.url])
    room_a = await alice.join(URL)
    room_l = await laptop.join(URL)
    await linked(room_a, laptop.public_key, within=30.0)
    seen = Seen(room_a)
    await room_l.say("hi")
    await seen.until(lambda: seen.messages(laptop.public_key) == ["hi"])
    ana = laptop.identity_key
    assert await command(room_a, "/mute ana") == [
        "* muted ana [laptop] (1 device): their messages are hidden; /unmute to undo"
    ]
    assert set(alice.blocks) == {ana} and laptop.public_key in alice.muted
    await room_l.say("hidden")
    await asyncio.sleep(1.0)
    assert seen.messages(laptop.public_key) == ["hi"]
    assert laptop.public_key in room_a.links  # a mute keeps the link
    assert await command(room_a, "/block ana") == [
        "* blocked ana [laptop] (1 device): no link, nothing of theirs shown; /unblock to undo"
    ]
    assert alice.blocks[ana].level == "block"
    await seen.until(lambda: laptop.public_key not in room_a.links)
    seen.stop()


async def test_a_device_that_talked_before_showing_its_delegation_is_taken_back(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    """Ana is blocked; a new device of hers talks first without a delegation (a stranger,
    shown), then shows one (as a renewal sends it): its link closes at that frame, what
    it said leaves the transcript, and nothing after it is shown. Bob, who blocked no
    one, keeps it all in the room's one order."""
    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url])  # the identity itself, blocked by key
    alice = await peers("alice", [node.url])
    bob = await peers("bob", [node.url])
    alice.block(ana.identity_key, "ana")
    room_a, room_b = await alice.join(URL), await bob.join(URL)
    await linked(room_a, bob.public_key)
    seen = Seen(room_a)
    move_identity(tmp_path / "ana", tmp_path / "ana-tablet")
    tablet = await peers("ana-tablet", [node.url], device="tablet")
    delegation, tablet.delegation = tablet.delegation, None
    room_t = await tablet.join(URL)
    await until_linked(room_t, {alice.public_key, bob.public_key})
    await room_t.say("hi, new here")
    await seen.until(lambda: seen.messages(tablet.public_key) == ["hi, new here"])
    assert tablet.public_key not in alice.blocked  # no delegation: its own key
    tablet.delegation = delegation
    for link in room_t.links.values():
        link.send(tablet.device_frame())
    await seen.until(lambda: tablet.public_key in alice.blocked)
    await seen.until(lambda: tablet.public_key not in room_a.links)
    assert alice.block_devices == {tablet.public_key: ana.identity_key}
    await room_t.say("still here?")
    await seen.until(lambda: sum(tablet.public_key == e.author for e in room_b.transcript()) == 2)
    await asyncio.sleep(1.0)
    assert seen.messages(tablet.public_key) == ["hi, new here"]  # nothing after
    assert all(e.author != tablet.public_key for e in room_a.transcript())
    assert room_b.person_of(tablet.public_key) == ana.identity_key  # Bob blocked no one
    seen.stop()
