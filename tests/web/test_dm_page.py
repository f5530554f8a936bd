"""Direct messages between Python and Chromium (docs/protocol.md 7.4): a real node, a real
aiortc peer, the page every node serves. The page opens the conversation from the Contacts
panel with the keyboard, sees an unread count for what came while it was closed, says
plainly what waits for the contact, and ticks what reached them; a message the page writes
while Ana is away reaches her when she comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from peer.peer import Connected, DmDelivered, Message, Peer, Room
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, PageFactory, next_of
from .contacts import contacts_on_a_page
from .test_chat_page import accessibility_problems

URL = "https://example.org/where-we-met"


async def theirs(room: Room, within: float = 20.0) -> str:
    while True:
        event = await next_of(room, Message, within=within)
        if not event.mine:
            return str(event.text)


async def test_python_and_chromium_dm_both_ways_and_a_message_waits_for_ana(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await Peer(tmp_path / "ana", [node.url], name="Ana").__aenter__()
    try:
        room, page, ben = await contacts_on_a_page(node, open_page, ana, URL)
        await ana.leave(room)

        # Ana writes first: the page shows an unread count on her row.
        dm = await ana.open_dm(ben, keep=False)
        await dm.say("hello from Python")
        await until_knocked(ana, ben)
        button = page.locator("#contacts li .dm-open")
        unread = page.locator("#contacts li .dm-open[data-unread='1']")
        deadline = time.monotonic() + 30
        while not await unread.count():  # the page reads her note at its next round
            assert time.monotonic() < deadline, "the page never joined the DM"
            await page.evaluate("window.pagemesh.peer.friends.refresh()")
            await page.evaluate("window.pagemesh.peer.dms.tick()")
            await asyncio.sleep(0.5)
        assert await button.get_attribute("aria-label") == "Message Ana, 1 unread"
        await next_of(dm, DmDelivered, within=20)

        # Ben opens it with the keyboard and answers.
        await button.focus()
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#dm-messages li.theirs .text:text-is('hello from Python')")
        assert await page.evaluate("document.activeElement.id") == "text"  # the big composer
        assert await page.get_by_role("textbox", name="Message to Ana", exact=True).count() == 1
        assert await button.get_attribute("aria-label") == "Message Ana"
        await page.keyboard.type("hello from Chromium")
        await page.keyboard.press("Enter")
        assert await theirs(dm) == "hello from Chromium"
        await page.wait_for_selector("#dm-messages li.mine[data-state=delivered]")
        await page.wait_for_selector("#dm-status:has-text('Ana is here')")

        assert await accessibility_problems(page, "the conversation") == []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for width, height in ((1280, 800), (390, 844)):
            await page.set_viewport_size({"width": width, "height": height})
            assert await page.locator("#dm-panel").is_visible()  # the main pane, at any width
            await page.screenshot(path=str(ARTIFACTS / f"dm-{width}x{height}.png"))
            assert await accessibility_problems(page, f"{width}x{height}") == []
        await page.set_viewport_size({"width": 1100, "height": 700})
    finally:
        await ana.close()

    # Ana is away: what Ben writes waits, and the page says so.
    await page.wait_for_selector("#dm-status:has-text('not here now')", timeout=30_000)
    await page.locator("#text").fill("see you later")
    await page.keyboard.press("Enter")
    await page.wait_for_selector(
        "#dm-messages li.mine[data-state=waiting] .text:text-is('see you later')"
    )
    await page.wait_for_selector(
        "#dm-status:text-is('1 message waits for Ana to come online; "
        "kept here and sent when you both are.')"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dm-waiting-1100x700.png"))

    # Ana comes back without opening anything: the page's note told her a DM waits.
    async with Peer(tmp_path / "ana", [node.url], name="Ana") as again:
        deadline = time.monotonic() + 30
        while ben not in again.dm_rooms:
            assert time.monotonic() < deadline, "Ana never joined the DM room"
            await again.refresh_presence()
            again._dm_tick()
            if ben not in again.dm_rooms:
                await asyncio.sleep(1.0)
        dm = again.dm_rooms[ben]
        got: Any = None
        while got != "see you later":
            got = await theirs(dm, within=30)
        await page.wait_for_selector(
            "#dm-messages li.mine[data-state=delivered] .text:text-is('see you later')"
        )
        assert await page.evaluate("window.pagemesh.peer.counters['refused.stranger'] ?? 0") == 0


async def until_knocked(ana: Peer, contact: bytes) -> None:
    """Ana's notes for the contact say a DM waits (her next tick published them)."""
    deadline = time.monotonic() + 15
    while contact not in ana.presence._knocks:
        assert time.monotonic() < deadline, "no knock"
        await asyncio.sleep(0.1)
    await ana.refresh_presence()


async def test_a_third_key_with_the_room_id_gets_nothing_from_the_page(
    signaling_mesh: NodeFactory, open_page: PageFactory, peers: Any
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("Ana", [node.url])
    _room, page, ben = await contacts_on_a_page(node, open_page, ana, URL)
    # The page opens the conversation; Eve learned its room id and asks for Ben.
    await page.click("#contacts li .dm-open")
    await page.wait_for_selector("#dm-status:has-text('Ana')")
    key = ana.dm_room_key(ben)
    assert key is not None
    assert (
        await page.evaluate(
            "window.pagemesh.peer.dms.roomKey(window.pagemesh.peer.friends.contacts[0].key)"
        )
        == key.hex()
    )
    eve = await peers("Eve", [node.url])
    eve.dm_room_key = lambda contact: key  # type: ignore[method-assign]
    dm_e = await eve.open_dm(ben)
    dm_a = await ana.open_dm(ben)
    await next_of(dm_a, Connected, key=ben)
    await dm_a.say("for Ben only")
    await page.wait_for_selector("#dm-messages li.theirs .text:text-is('for Ben only')")
    deadline = time.monotonic() + 5
    while not await page.evaluate("window.pagemesh.peer.counters['refused.stranger'] ?? 0"):
        assert time.monotonic() < deadline, "the page never heard of Eve"
        await asyncio.sleep(0.1)
    # Eve's link, on probation at most (7.4), closed at her first frame or its deadline
    links_js = "[...[...window.pagemesh.peer.dms.rooms.values()][0].links.keys()]"
    deadline = time.monotonic() + 10
    while await page.evaluate(links_js) != [ana.public_key.hex()]:
        assert time.monotonic() < deadline, "Eve kept a link"
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + 20
    while any(link.open for link in dm_e.links.values()):  # her side sees it closed
        assert time.monotonic() < deadline, "Eve's side of the link stayed open"
        await asyncio.sleep(0.1)
    assert dm_e.transcript() == []


async def test_what_the_page_writes_to_an_absent_contact_waits_across_a_reload(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    async with Peer(tmp_path / "ana", [node.url], name="Ana") as ana:
        _room, page, ben = await contacts_on_a_page(node, open_page, ana, URL)

    await page.click("#contacts li .dm-open")
    await page.wait_for_selector("#dm-status:has-text('not here now')", timeout=30_000)
    await page.locator("#text").fill("while you were away")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#dm-messages li.mine[data-state=waiting]")
    await asyncio.sleep(1.0)  # the room's state is saved soon after a message
    await page.reload()
    await page.wait_for_selector("body[data-contacts=ready]")
    button = page.locator("#contacts li .dm-open[data-waiting='1']")
    await button.wait_for(timeout=15_000)
    assert await button.get_attribute("aria-label") == (
        "Message Ana, 1 waiting for them to come online"
    )

    async with Peer(tmp_path / "ana", [node.url], name="Ana") as again:
        deadline = time.monotonic() + 30
        while ben not in again.dm_rooms:
            assert time.monotonic() < deadline, "Ana never joined the DM room"
            await again.refresh_presence()
            again._dm_tick()
            await asyncio.sleep(0.5)
        assert await theirs(again.dm_rooms[ben], within=30) == "while you were away"
        await page.wait_for_selector("#contacts li .dm-open:not([data-waiting])", timeout=15_000)
