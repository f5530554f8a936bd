"""A direct conversation as a chat app shows it (docs/protocol.md 7.4): a real node, a real
aiortc peer, the page every node serves. The conversation takes the main pane in the room's
stead and the big composer writes to the contact (a DM never goes to the room); Escape and
"Back to the room" bring the room back; an unread count shows on the contact's row while
the room is shown. A contact linked in the room is "here" at once, whatever presence said.
On a phone the header leaves the screen to the conversation, every control still reached
by the keyboard; the passphrase dialog has the username field browsers ask for."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from peer.messaging import read_content
from peer.peer import Connected, Message, Peer, Room
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory, next_of
from .contacts import contacts_on_a_page
from .test_chat_page import accessibility_problems

URL = "https://example.org/where-we-met"
SHOTS = Path("/tmp")


async def theirs(room: Room, within: float = 20.0) -> str:
    while True:
        event = await next_of(room, Message, within=within)
        if not event.mine:
            return str(event.text)


def room_texts(room: Room) -> list[str]:
    said = [read_content(env) for env in room.transcript()]
    return [str(getattr(content, "text", "")) for content in said if content is not None]


async def box(page: Any, selector: str) -> dict[str, float]:
    found: dict[str, float] = await page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not shown"
    return found


async def test_the_conversation_takes_the_main_pane_and_the_big_composer(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    async with Peer(tmp_path / "ana", [node.url], name="Alice") as ana:
        room, page, ben = await contacts_on_a_page(node, open_page, ana, URL)
        # Alice is linked in the room: her row says so at once (no presence note read).
        row = page.locator("#contacts li[data-online=true]")
        await row.locator(".where:text-is('here, in group 1')").wait_for(timeout=5_000)

        await page.set_viewport_size({"width": 1280, "height": 800})
        button = page.locator("#contacts li .dm-open")
        await button.focus()
        await page.keyboard.press("Enter")
        panel = page.locator("#chat #dm-panel")
        await panel.wait_for()
        assert await page.locator("#dm-title").inner_text() == "Direct messages with Ana"
        assert not await page.locator("#messages").is_visible()  # the room steps aside
        assert await page.evaluate("document.activeElement.id") == "text"
        assert await page.get_attribute("#text", "placeholder") == "Message Ana"
        assert await page.get_by_role("textbox", name="Message to Ana", exact=True).count() == 1
        text = await box(page, "#text")
        assert text["width"] > 600  # the big composer, not a sidebar's field
        for selector in ("#text", "#send", "#file-button", "#dm-close", "#blocked-panel summary"):
            shown = await box(page, selector)
            assert shown["y"] >= 0 and shown["y"] + shown["height"] <= 800, selector
        await page.screenshot(path=str(SHOTS / "dm-main-1280x800.png"))

        # What Ben types goes to Alice, and never to the room.
        dm = await ana.open_dm(ben)
        await next_of(dm, Connected, key=ben, within=30)
        await page.keyboard.type("a direct hello to Alice")
        await page.keyboard.press("Enter")
        assert await theirs(dm) == "a direct hello to Alice"
        await page.wait_for_selector("#dm-messages li.mine[data-state=delivered]")
        await page.wait_for_selector("#dm-status:has-text('Ana is here')")
        await asyncio.sleep(0.5)
        assert "a direct hello to Alice" not in room_texts(room)
        await room.say("meanwhile in the room")  # the room is one click away, and says so
        await page.wait_for_selector("#dm-close:text-is('← Back to the room (1 new)')")
        assert await accessibility_problems(page, "the conversation") == []

        # Escape: the room again, its composer with it; an answer counts on Alice's row.
        await page.keyboard.press("Escape")
        await page.locator("#messages").wait_for()
        assert not await panel.is_visible()
        assert await page.get_attribute("#text", "placeholder") == "Say something"
        assert await page.evaluate("document.activeElement.id") == "text"
        await dm.say("answer while you are in the room")
        unread = page.locator("#contacts li .dm-open[data-unread='1']")
        await unread.wait_for(timeout=20_000)
        assert await unread.get_attribute("aria-label") == "Message Ana, 1 unread"
        await page.keyboard.type("to everyone")
        await page.keyboard.press("Enter")
        deadline = time.monotonic() + 20
        while "to everyone" not in room_texts(room):
            assert time.monotonic() < deadline, "the room never got it"
            await asyncio.sleep(0.1)

        # On a phone the conversation has the screen, its composer and files in view.
        await page.set_viewport_size({"width": 390, "height": 844})
        toggle = page.locator("#people-toggle")
        badge = page.locator("#dm-unread")  # said before the side column opens
        assert await badge.is_visible() and await badge.inner_text() == "✉ 1 unread"
        await toggle.click()
        await unread.click()
        assert await toggle.get_attribute("aria-expanded") == "false"  # the pane, not the list
        await page.wait_for_selector(
            "#dm-messages li.theirs .text:text-is('answer while you are in the room')"
        )
        for selector in ("#text", "#send", "#file-button", "#dm-close", "#dm-title"):
            shown = await box(page, selector)
            assert shown["x"] >= 0 and shown["x"] + shown["width"] <= 390, selector
            assert shown["y"] >= 0 and shown["y"] + shown["height"] <= 844, selector
        assert (await box(page, "header"))["height"] <= 60
        await page.screenshot(path=str(SHOTS / "dm-main-390x844.png"))
        assert await accessibility_problems(page, "the conversation on a phone") == []
        await page.click("#dm-close")
        await page.locator("#messages").wait_for()
        # Out of the room, Alice is still linked in the conversation: online, not "here".
        await page.click("#leave")
        status = "online, in your conversation"
        await row.locator(f".where:text-is('{status}')").wait_for(timeout=5_000)
        # A phone outside any room: the contacts fill the screen, the conversation then.
        await button.click()
        await panel.wait_for()
        assert not await page.locator("#contacts-panel").is_visible()
        assert await page.locator("#dm-close").inner_text() == "← Close"
        await page.screenshot(path=str(SHOTS / "dm-main-no-room-390x844.png"))
        await page.keyboard.press("Escape")
        await page.locator("#contacts-panel").wait_for()
        await expect(button).to_be_focused()  # back on the row that opened it


async def test_on_a_phone_the_header_folds_and_every_control_is_reached(
    signaling_mesh: NodeFactory, open_page: PageFactory, peers: Any
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("Ana", [node.url])
    room = await ana.join(URL)
    logs: list[str] = []
    page = await open_page(node, "Ben", room=URL)
    page.on("console", lambda msg: logs.append(msg.text))
    await next_of(
        room, Connected, key=bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    )
    await page.set_viewport_size({"width": 390, "height": 844})
    assert (await box(page, "header"))["height"] <= 60  # was about 190 px
    assert not await page.locator("#export-identity").is_visible()
    assert not await page.locator("#room-url").is_visible()

    # "⋯" opens with the keyboard, holds notifications and the identity file; Escape closes it.
    await page.focus("#more > summary")
    assert await page.locator("#more > summary").get_attribute("aria-label") == (
        "More: notifications and your identity file"
    )
    await page.keyboard.press("Enter")
    for selector in ("#notify", "#export-identity", "#import-identity"):
        assert await page.locator(selector).is_visible(), selector
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "notify"
    await page.screenshot(path="/tmp/header-more-390x844.png")
    await page.keyboard.press("Escape")
    assert not await page.locator("#export-identity").is_visible()
    assert await page.evaluate("document.activeElement.parentElement.id") == "more"

    # "Room" unfolds the join box and puts the caret in it.
    await page.focus("#room-switch > summary")
    await page.keyboard.press("Enter")
    await expect(page.locator("#room-url")).to_be_focused()
    assert await page.locator("#join").is_visible()
    await page.keyboard.press("Escape")
    assert not await page.locator("#room-url").is_visible()

    # The export dialog: a username field for password managers, and no complaint.
    await page.set_viewport_size({"width": 1280, "height": 800})
    assert await page.locator("#export-identity").is_visible()  # a desktop shows it all
    assert (await box(page, "header"))["height"] <= 60
    await page.click("#export-identity")
    username = page.locator("#identity-form input[autocomplete=username]")
    assert await username.count() == 1
    assert await username.input_value() == await page.evaluate("window.pagemesh.peer.identityHex")
    # Exported, the header says so without growing (the note wrapped it to two rows)
    await page.fill("#identity-passphrase", "a long passphrase for the test")
    await page.fill("#identity-passphrase-again", "a long passphrase for the test")
    async with page.expect_download():
        await page.click("#identity-ok")
    await page.locator("#identity-note:text-is('Identity exported.')").wait_for()
    assert (await box(page, "header"))["height"] <= 60
    await page.screenshot(path=str(SHOTS / "identity-exported-1280x800.png"))
    await page.click("#export-identity")
    await page.keyboard.press("Escape")
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]")
    await asyncio.sleep(0.5)
    assert not [line for line in logs if "username fields" in line]
