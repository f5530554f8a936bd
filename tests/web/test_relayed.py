"""Chromium's TURN client through our relay: a relay-only browser and a relay-only
Python peer connect, say `relayed`, and chat and share a file through it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from peer.peer import Connected, FileDone, Message, PeerConfig
from signaling.node import SignalingNode
from tests.peer.conftest import PeerFactory
from tests.peer.test_relayed_path import relay_node  # noqa: F401  (fixture)

from .conftest import PageFactory, next_of, say

ROOM = "https://example.org/relayed"


async def test_browser_through_the_relay(
    relay_node: SignalingNode,  # noqa: F811
    peers: PeerFactory,
    open_page: PageFactory,
    tmp_path: Path,
) -> None:
    py = await peers("py", [relay_node.url], PeerConfig(relay_only=True), accept_files_to=tmp_path)
    room = await py.join(ROOM)
    page = await open_page(relay_node, "browser", room=ROOM, relay="only")
    browser = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))

    assert (await next_of(room, Connected, key=browser)).path == "relayed"
    await page.wait_for_selector(
        f'#members li[data-key="{py.public_key.hex()}"] .path[data-path="relayed"]',
        timeout=20_000,
    )
    await say(page, "via TURN")
    assert (await next_of(room, Message, mine=False)).text == "via TURN"

    upload = tmp_path / "through-relay.bin"
    upload.write_bytes(os.urandom(500_000))
    await page.set_input_files("#file", str(upload))
    done = await next_of(room, FileDone, within=30, sender=browser)
    assert done.path is not None
    assert (
        hashlib.sha256(done.path.read_bytes()).digest()
        == hashlib.sha256(upload.read_bytes()).digest()
    )
