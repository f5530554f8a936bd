"""A browser and Python peers in one room: messages, files, leaving, one total order."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from peer.peer import FileDone, Message

from .conftest import (
    ARTIFACTS,
    MeetFactory,
    browser_order,
    download_sha256,
    next_of,
    order,
    say,
)

ROOM = "https://example.org/interop"
# A tiny valid PNG (1x1, red): an image the browser shows inline.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


async def test_browser_and_python_peer_on_different_nodes(
    meet: MeetFactory, tmp_path: Path
) -> None:
    m = await meet(ROOM, accept_files_to=tmp_path / "inbox")
    py, room, page = m.python, m.room, m.page

    # The browser offers (newcomer); both ends see a direct path on loopback.
    assert m.connected.path == "direct"
    badge = f'#members li[data-key="{py.public_key.hex()}"] .path[data-path="direct"]'
    await page.wait_for_selector(badge, timeout=15_000)

    # Messages both ways, interleaved; each side sees the other's in its order.
    for i in range(5):
        await say(page, f"from the browser {i}")
        await room.send(f"from python {i}")
    texts = [(await next_of(room, Message, mine=False)).text for _ in range(5)]
    assert texts == [f"from the browser {i}" for i in range(5)]
    await page.wait_for_function("document.querySelectorAll('#messages li.msg').length === 10")
    shown = await page.eval_on_selector_all(
        f'#messages li.msg[data-author="{py.public_key.hex()}"] .body',
        "nodes => nodes.map(n => n.textContent)",
    )
    assert shown == [f"from python {i}" for i in range(5)]
    await asyncio.sleep(0)  # let the last acks settle before comparing orders
    assert await browser_order(page) == order(room.transcript())

    # A file from Python to the browser (an image, shown inline) arrives verified.
    picture = tmp_path / "red.png"
    picture.write_bytes(PNG)
    await room.send_file(picture)
    link = await page.wait_for_selector('a.download[data-name="red.png"]', timeout=20_000)
    assert await download_sha256(page, link) == hashlib.sha256(PNG).hexdigest()
    await page.wait_for_selector('#messages li.file img[alt="red.png"]')

    # A file from the browser to Python (2 MB, many chunks) arrives verified on disk.
    blob = tmp_path / "upload.bin"
    blob.write_bytes(os.urandom(2 * 1024 * 1024 + 123))
    await page.set_input_files("#file", str(blob))
    done = await next_of(room, FileDone, within=30, sender=m.browser)
    while done.path is None:  # the browser's receipt for red.png may come first
        done = await next_of(room, FileDone, within=30, sender=m.browser)
    assert (
        hashlib.sha256(done.path.read_bytes()).digest()
        == hashlib.sha256(blob.read_bytes()).digest()
    )
    await page.wait_for_selector(f'#messages .delivered[data-to="{py.public_key.hex()}"]')

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "room.png"), full_page=True)

    # The Python peer leaves: the browser shows it.
    await py.leave(room)
    await page.wait_for_selector(f'#messages li[data-left="{py.public_key.hex()}"]')
    assert not await page.query_selector(f'#members li[data-key="{py.public_key.hex()}"]')
