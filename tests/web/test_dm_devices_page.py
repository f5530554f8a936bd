"""Devices in a DM room with the page (docs/protocol.md 7.4): a real node, real aiortc
peers, the page every node serves. Ana's phone, a device the page never met in any other
room, links on probation, shows its delegation first, and then DMs Ben's page both ways;
Mallory's forged delegation naming Ana gets her link closed with nothing of the room."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from peer.device import Delegation
from peer.peer import Connected, Message, Room
from tests.peer.test_devices_webrtc import move_identity
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory, next_of
from .contacts import contacts_on_a_page

URL = "https://example.org/where-we-met"
DM_LINKS = "[...[...window.pagemesh.peer.dms.rooms.values()][0].links.keys()]"


async def test_anas_phone_dms_the_page_both_ways_and_a_forged_delegation_is_refused(
    signaling_mesh: NodeFactory, open_page: PageFactory, peers: Any, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("Ana", [node.url])
    room, page, ben = await contacts_on_a_page(node, open_page, ana, URL)
    card = ana.cards[ben]
    await ana.leave(room)
    # Ana's phone: her identity moved there, with Ben as a contact; it never met the page.
    move_identity(tmp_path / "Ana", tmp_path / "Ana-phone")
    phone = await peers("Ana-phone", [node.url], device="phone")
    assert phone.identity_key == ana.identity_key != phone.public_key
    phone.card_received(card)
    phone.add_contact(ben, "Ben")
    key = phone.dm_room_key(ben)
    assert key is not None

    # Mallory learned the room id and shows a delegation naming Ana, signed by herself.
    mallory = await peers("Mallory", [node.url], device="phone")
    own = mallory.delegation
    assert own is not None
    mallory.delegation = Delegation(
        ana.identity_key, own.device, own.not_before, own.expires, "phone", own.signature
    )
    mallory.dm_room_key = lambda contact: key
    await page.click("#contacts li .dm-open")
    await page.wait_for_selector("#dm-status:has-text('Ana')")
    dm_m = await mallory.open_dm(ben)
    deadline = time.monotonic() + 15
    counted = "window.pagemesh.peer.counters['refused.stranger'] ?? 0"
    while not await page.evaluate(counted):
        assert time.monotonic() < deadline, "the page never refused Mallory"
        await asyncio.sleep(0.1)
    refused = "[...window.pagemesh.peer.dms.rooms.values()][0].refusedDevices"
    assert await page.evaluate(refused) == {"signature": 1}
    assert mallory.public_key.hex() not in await page.evaluate(DM_LINKS)
    assert dm_m.transcript() == [] and ben not in mallory.cards

    # Ana's phone DMs Ben both ways.
    dm_p = await phone.open_dm(ben)
    await next_of(dm_p, Connected, key=ben, within=30)
    await dm_p.say("from my phone")
    await page.wait_for_selector("#dm-messages li.theirs .text:text-is('from my phone')")
    await page.locator("#text").fill("hello phone")
    await page.keyboard.press("Enter")
    while True:
        event = await next_of(dm_p, Message, within=20)
        if not event.mine:
            assert event.text == "hello phone"
            break
    assert phone.public_key.hex() in await page.evaluate(DM_LINKS)
    person = "([k]) => [...window.pagemesh.peer.dms.rooms.values()][0].personOf(k)"
    assert await page.evaluate(person, [phone.public_key.hex()]) == ana.identity_key.hex()
    probation = "[...window.pagemesh.peer.dms.rooms.values()][0].probation.size"
    assert await page.evaluate(probation) == 0


async def test_strangers_with_the_room_id_get_nothing_from_the_page_and_are_bounded(
    signaling_mesh: NodeFactory, open_page: PageFactory, peers: Any, monkeypatch: Any
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("Ana", [node.url])
    _room, page, ben = await contacts_on_a_page(node, open_page, ana, URL)
    key = ana.dm_room_key(ben)
    await page.click("#contacts li .dm-open")
    await page.wait_for_selector("#dm-status:has-text('Ana')")
    await page.locator("#text").fill("for Ana only")
    await page.keyboard.press("Enter")

    # Three strangers with the room id say nothing on a link and note what comes.
    silent: set[Any] = set()
    linked: set[tuple[Any, bytes]] = set()
    got: list[Any] = []
    link_up, frame = Room.link_up, Room._frame

    def quiet_link_up(room: Room, member: bytes, link_id: int) -> None:
        if room.peer not in silent:
            link_up(room, member, link_id)
        elif (link := room.link(link_id)) is not None:
            room.links[member] = link
            linked.add((room.peer, member))  # a link on probation, as the stranger sees it

    def noted_frame(room: Room, member: bytes, data: Any) -> None:
        if room.peer in silent:
            got.append(data)
        else:
            frame(room, member, data)

    monkeypatch.setattr(Room, "link_up", quiet_link_up)
    monkeypatch.setattr(Room, "_frame", noted_frame)
    eves = [await peers(f"Eve{i}", [node.url]) for i in range(3)]
    silent.update(eves)
    rooms_e = []
    for eve in eves:
        eve.dm_room_key = lambda contact: key
        rooms_e.append(await eve.open_dm(ben))

    dm = "[...window.pagemesh.peer.dms.rooms.values()][0]"
    keys = {eve.public_key.hex() for eve in eves}
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:  # within the probation (5 s): at most the bound
        assert await page.evaluate(f"{dm}.probation.size") <= 2
        assert len(keys & set(await page.evaluate(DM_LINKS))) <= 2
        await asyncio.sleep(0.1)
    counted = "window.pagemesh.peer.counters['refused.stranger'] ?? 0"
    assert await page.evaluate(counted) >= 1  # the third, at once
    deadline = time.monotonic() + 10
    while keys & set(await page.evaluate(DM_LINKS)) or await page.evaluate(f"{dm}.probation.size"):
        assert time.monotonic() < deadline, "a stranger kept its link past the deadline"
        await asyncio.sleep(0.1)
    assert await page.evaluate(counted) >= 3
    assert not keys & set(await page.evaluate(f"[...{dm}.members]"))
    assert got == [] and all(r.transcript() == [] for r in rooms_e)
    to_us = {eve for eve, member in linked if member == ben}  # (and to each other)
    assert 1 <= len(to_us) <= 2, "strangers linked on probation, no more than the bound"
    assert all(ben not in eve.cards for eve in eves)

    # Ana comes: what waited reaches her.
    dm_a = await ana.open_dm(ben)
    while True:
        event = await next_of(dm_a, Message, within=30)
        if not event.mine:
            assert event.text == "for Ana only"
            break
