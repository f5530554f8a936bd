"""Files in a direct message between Python and Chromium (docs/protocol.md 5.2 and 7.4): a
real node, a real aiortc peer, the page every node serves. In the conversation opened from
the Contacts panel, an image Ana shares shows inline (the page takes it unasked, as in a
page's room), another file comes when Ben asks for it with the keyboard, and the page
shares a file with Ana through the keyboard-reachable "Share a file" button; each side
gets the very bytes sent. Unread counts survive a reload."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from peer.peer import Connected, FileDone, Peer, Room
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, PageFactory, download_sha256, next_of
from .contacts import contacts_on_a_page
from .test_chat_page import accessibility_problems

URL = "https://example.org/where-we-met"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour, which a browser decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def befriended(node: Any, open_page: PageFactory, ana: Peer) -> tuple[Any, bytes]:
    """The page (Ben) and Ana meet on a page and become contacts."""
    _room, page, ben = await contacts_on_a_page(node, open_page, ana, URL)
    deadline = time.monotonic() + 15
    while ana.dm_room_key(ben) is None:  # the cards cross on the page's room
        assert time.monotonic() < deadline, "no contact card from the page"
        await asyncio.sleep(0.1)
    return page, ben


async def test_files_both_ways_in_a_dm_an_image_inline_a_file_on_request(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    inbox = tmp_path / "inbox"
    async with Peer(tmp_path / "ana", [node.url], name="Ana", accept_files_to=inbox) as ana:
        page, ben = await befriended(node, open_page, ana)
        button = page.locator("#contacts li .dm-open")
        await button.focus()
        await page.keyboard.press("Enter")
        dm: Room = await ana.open_dm(ben)
        await next_of(dm, Connected, key=ben, within=30)
        await page.wait_for_selector("#dm-status:has-text('Ana is here')", timeout=30_000)

        # An image Ana shares shows inline, unasked, with its very bytes.
        picture = tmp_path / "red.png"
        picture.write_bytes(png(40, 30, (200, 30, 30)))
        await dm.send_file(picture)
        img = page.locator("#dm-messages li.file.theirs[data-state=done] img[alt='red.png']")
        await img.wait_for(timeout=30_000)
        assert await img.evaluate("(i) => i.complete && i.naturalWidth") == 40
        save = page.locator("#dm-messages li.file[data-state=done] a.download").first
        digest = await download_sha256(page, await save.element_handle())
        assert digest == hashlib.sha256(picture.read_bytes()).hexdigest()

        # Another file waits for Ben to ask; he does with the keyboard.
        report = tmp_path / "report.bin"
        report.write_bytes(bytes(range(251)) * 1200)  # 301,200 bytes: several chunks
        await dm.send_file(report)
        get = page.locator("#dm-messages li.file.theirs[data-state=offered] button.get")
        await get.wait_for(timeout=30_000)
        assert await get.get_attribute("aria-label") == "Get report.bin (301.2 kB)"
        await get.focus()
        await page.keyboard.press("Enter")
        link = page.locator("#dm-messages li.file[data-state=done] a[download='report.bin']")
        await link.wait_for(timeout=30_000)
        digest = await download_sha256(page, await link.element_handle())
        assert digest == hashlib.sha256(report.read_bytes()).hexdigest()
        # the keyboard's focus went from Get to Save, through the redraws
        file_id = await link.evaluate("(a) => a.closest('li').dataset.file")
        assert await page.evaluate("document.activeElement.dataset.focus") == f"save:{file_id}"

        # Ben shares a file through the button, which the keyboard reaches and opens.
        sent = tmp_path / "from-ben.txt"
        sent.write_bytes(b"notes from the page\n" * 5000)
        await page.focus("#text")  # the big composer, writing to Ana
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "file-button"
        assert await page.locator("#file-button").get_attribute("aria-label") == (
            "Share a file with Ana"
        )
        async with page.expect_file_chooser() as chooser:
            await page.keyboard.press("Enter")
        await (await chooser.value).set_files(str(sent))
        done = await next_of(dm, FileDone, within=30, sender=ben)
        while done.path is None:  # the page's word that it has Ana's files
            done = await next_of(dm, FileDone, within=30, sender=ben)
        assert done.path is not None and done.path.read_bytes() == sent.read_bytes()
        await page.wait_for_selector(
            "#dm-messages li.file.mine .tick:text-is('✓ Ana has it')", timeout=30_000
        )

        assert await accessibility_problems(page, "files in the conversation") == []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for width, height in ((1280, 800), (390, 844)):
            await page.set_viewport_size({"width": width, "height": height})
            assert await page.locator("#dm-panel").is_visible()  # the main pane, at any width
            assert await page.locator("#file-button").is_visible()
            await page.screenshot(path=str(ARTIFACTS / f"dm-files-{width}x{height}.png"))
            assert await accessibility_problems(page, f"{width}x{height}") == []


async def test_unread_counts_survive_a_reload(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    async with Peer(tmp_path / "ana", [node.url], name="Ana") as ana:
        page, ben = await befriended(node, open_page, ana)
        # The page joins the DM room without showing it (as for a note saying a DM waits).
        await page.evaluate(
            "window.pagemesh.peer.dms.open(window.pagemesh.peer.friends.contacts[0].key, false)"
        )
        dm = await ana.open_dm(ben)
        await next_of(dm, Connected, key=ben, within=30)
        await dm.say("one")
        await dm.say("two")
        unread = page.locator("#contacts li .dm-open[data-unread='2']")
        await unread.wait_for(timeout=30_000)
        await asyncio.sleep(1.0)  # the room's state and the counts are saved soon after
        await page.reload()
        await page.wait_for_selector("body[data-contacts=ready]")
        await unread.wait_for(timeout=15_000)
        assert await unread.get_attribute("aria-label") == "Message Ana, 2 unread"
        # The DM room is joined again (as when a note says a DM waits), its history comes
        # back from IndexedDB and Ana: no message counts twice.
        await page.evaluate(
            "window.pagemesh.peer.dms.open(window.pagemesh.peer.friends.contacts[0].key, false)"
        )
        await next_of(dm, Connected, key=ben, within=30)
        await dm.say("three")
        await page.locator("#contacts li .dm-open[data-unread='3']").wait_for(timeout=30_000)
        await asyncio.sleep(1.0)
        assert await unread.count() == 0
        assert await page.locator("#contacts li .dm-open[data-unread='3']").count() == 1
        # Reading them clears the count, and a reload keeps it cleared.
        await page.click("#contacts li .dm-open")
        await page.wait_for_selector("#dm-messages li.theirs .text:text-is('three')")
        await page.click("#dm-close")
        await asyncio.sleep(0.5)
        await page.reload()
        await page.wait_for_selector("body[data-contacts=ready]")
        assert await page.locator("#contacts li .dm-open").get_attribute("aria-label") == (
            "Message Ana"
        )
        # What IndexedDB holds is read with care: a count for no contact, a count that is
        # not a count, or a huge one, never shows as such.
        stranger = "ab" * 32
        await page.evaluate(
            """([ana, stranger]) => window.pagemesh.peer.store.put("rooms", "dm-unread",
                 {[ana]: 1e12, [stranger]: 4, junk: "x"})""",
            [ana.identity_key.hex(), stranger],
        )
        await page.reload()
        await page.wait_for_selector("body[data-contacts=ready]")
        row = page.locator("#contacts li .dm-open")
        await page.locator("#contacts li .dm-open[data-unread='9999']").wait_for(timeout=15_000)
        assert await row.get_attribute("aria-label") == "Message Ana, 9999 unread"
        await page.evaluate(
            """() => window.pagemesh.peer.store.put("rooms", "dm-unread", ["not", "a", "map"])"""
        )
        await page.reload()
        await page.wait_for_selector("body[data-contacts=ready]")
        assert await row.get_attribute("aria-label") == "Message Ana"
