"""Devices in a DM room (docs/protocol.md 7.4), with real nodes and real aiortc peers:
a key not yet known as the contact's (or our own identity's) device gets a link on
probation, on which nothing of the room goes, and must show such a delegation first.
Strangers holding the room id get nothing, are closed at the deadline and cannot hold
more than the bound; a forged delegation naming Ana is refused; Ana's phone, which never
met Ben elsewhere, DMs Ben both ways, and Ana's own devices share the DM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from peer.device import Delegation
from peer.peer import Peer, PeerConfig, Room
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory
from .test_devices_webrtc import move_identity
from .test_dm_webrtc import befriend, texts, until
from .test_rooms_webrtc import connected

pytestmark = pytest.mark.integration

PROBATION = PeerConfig(dm_probation=3.0, dm_probation_max=2)


async def test_strangers_with_the_room_id_get_nothing_are_closed_and_bounded(
    signaling_mesh: NodeFactory, peers: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await signaling_mesh(2)
    ana = await peers("ana", [a.url], config=PROBATION)
    ben = await peers("ben", [b.url])
    await befriend(ana, ben)
    key = ana.dm_room_key(ben.identity_key)
    dm_a = await ana.open_dm(ben.identity_key)
    await dm_a.say("for Ben only")

    # Three strangers learn the room id; they say nothing on a link and note what comes.
    silent: set[Peer] = set()
    linked: set[tuple[Peer, bytes]] = set()
    got: list[tuple[bytes, Any]] = []
    link_up, frame = Room.link_up, Room._frame

    def quiet_link_up(room: Room, member: bytes, link_id: int) -> None:
        if room.peer not in silent:
            link_up(room, member, link_id)
        elif (link := room.link(link_id)) is not None:
            room.links[member] = link
            linked.add((room.peer, member))  # a link on probation, as the stranger sees it

    def noted_frame(room: Room, member: bytes, data: Any) -> None:
        if room.peer in silent:
            got.append((member, data))
        else:
            frame(room, member, data)

    monkeypatch.setattr(Room, "link_up", quiet_link_up)
    monkeypatch.setattr(Room, "_frame", noted_frame)
    eves = [await peers(f"eve{i}", [a.url if i % 2 else b.url]) for i in range(3)]
    silent.update(eves)
    rooms_e = []
    for eve in eves:
        eve.dm_room_key = lambda contact: key  # type: ignore[method-assign]
        rooms_e.append(await eve.open_dm(ana.identity_key))

    keys = {eve.public_key for eve in eves}
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # within the probation: never more than the bound
        assert len(dm_a.probation) <= 2 and len(keys & set(dm_a.paths())) <= 2
        await asyncio.sleep(0.05)
    assert ana.refused_strangers >= 1  # the third was refused at once
    # at the deadline every one is closed, forgotten, refused
    await until(lambda: not dm_a.probation and not keys & set(dm_a.links), within=5.0)
    await until(lambda: not any(link.open for room in rooms_e for link in room.links.values()))
    assert not keys & dm_a.members
    to_us = {eve for eve, member in linked if member == ana.public_key}  # (and to each other)
    assert 1 <= len(to_us) <= 2, "strangers linked on probation, no more than the bound"
    assert ana.refused_strangers >= 3
    assert got == [] and all(room.transcript() == [] for room in rooms_e)
    assert all(ana.identity_key not in eve.cards for eve in eves)  # not even a card

    # Ben comes: the DM works as before, and what waited reaches him.
    dm_b = await ben.open_dm(ana.identity_key)
    await connected(dm_b)
    assert await texts(dm_b, 1) == ["for Ben only"]


async def test_a_forged_delegation_naming_ana_is_refused_in_bens_dm(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url])
    ben = await peers("ben", [node.url], config=PROBATION)
    await befriend(ana, ben)
    key = ben.dm_room_key(ana.identity_key)
    # Mallory claims Ana's identity with a delegation her own identity key signed.
    mallory = await peers("mallory", [node.url], device="phone")
    own = mallory.delegation
    assert own is not None
    mallory.delegation = Delegation(
        ana.identity_key, own.device, own.not_before, own.expires, "phone", own.signature
    )
    dm_b = await ben.open_dm(ana.identity_key)
    mallory.dm_room_key = lambda contact: key  # type: ignore[method-assign]
    dm_m = await mallory.open_dm(ben.identity_key)
    await dm_m.say("it is me, Ana, on my phone")

    await until(lambda: ben.refused_strangers >= 1 and not dm_b.probation, within=10.0)
    assert dm_b.refused_devices == {"signature": 1}
    assert mallory.public_key not in dm_b.links and mallory.public_key in dm_b.refused
    assert dm_b.transcript() == [] and dm_m.transcript()[0].author == mallory.public_key
    assert len(dm_m.transcript()) == 1  # nothing of Ben's reached her


async def test_anas_phone_that_never_met_ben_dms_him_both_ways_with_her_identity_too(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    a, b = await signaling_mesh(2)
    ana = await peers("ana", [a.url])
    ben = await peers("ben", [b.url])
    await befriend(ana, ben)
    # Ana's phone: her identity moved there, with Ben as a contact (identity file, v2).
    move_identity(tmp_path / "ana", tmp_path / "ana-phone")
    phone = await peers("ana-phone", [b.url], device="phone")
    assert phone.identity_key == ana.identity_key != phone.public_key
    phone.card_received(ben.card)
    phone.add_contact(ben.identity_key, "ben")
    assert phone.dm_room_key(ben.identity_key) == ben.dm_room_key(ana.identity_key)

    dm_b = await ben.open_dm(ana.identity_key)
    dm_p = await phone.open_dm(ben.identity_key)
    await connected(dm_p)
    await connected(dm_b)
    assert dm_b.person_of(phone.public_key) == ana.identity_key
    await dm_p.say("from my phone")
    assert await texts(dm_b, 1) == ["from my phone"]
    await dm_b.say("got it")
    assert await texts(dm_p, 1) == ["got it"]

    # Ana's identity joins too: her phone is her own device there, and all three share it.
    dm_a = await ana.open_dm(ben.identity_key)
    await until(lambda: {ben.public_key, phone.public_key} <= set(dm_a.paths()), within=30.0)
    await until(lambda: ana.public_key in dm_p.paths() and ana.public_key in dm_b.paths())
    assert sorted(await texts(dm_a, 2)) == ["from my phone", "got it"]
    await dm_b.say("to both")
    assert "to both" in await texts(dm_p, 1)
    assert dm_p.probation == {} and dm_b.probation == {} and dm_a.probation == {}
    assert ben.refused_strangers == phone.refused_strangers == ana.refused_strangers == 0
