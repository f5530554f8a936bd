"""Headless Chromium (Debian's, driven by Playwright) against real nodes on loopback.

Each browser peer gets a browser context of its own (its own IndexedDB, so
its own identity). Chromium is started with the flags that keep it off the
network (no background services) and that let WebRTC use loopback with real
addresses instead of mDNS names, which aiortc cannot resolve quickly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peer.peer import Connected, Peer, Room
from signaling.node import SignalingNode
from tests.peer.conftest import PeerFactory, loopback_ice, peers  # noqa: F401  (fixtures)
from tests.signaling.conftest import NodeFactory, signaling_mesh  # noqa: F401  (fixture)

CHROMIUM = "/usr/bin/chromium"
# Chrome's own UI, which a headless run never shows: without these every new window
# (a browser context) loads the omnibox popup's WebUI, some 200 ms of script in a
# renderer of its own while the page under test joins and connects. The popup's
# feature has had several names (WebUIOmniboxPopup; in Chromium 156 the AIM
# and full popups): unknown names are ignored, so all of them are listed.
QUIET_FEATURES = [
    "PreloadTopChromeWebUI",
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
    "WebUIOmniboxFullPopup",
]
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    f"--disable-features={','.join(['WebRtcHideLocalIpsWithMdns', *QUIET_FEATURES])}",
]
ARTIFACTS = Path(os.environ.get("PAGEMESH_ARTIFACTS", "test-artifacts"))

PageFactory = Callable[..., Awaitable[Any]]


@dataclass
class Meeting:
    """A browser on node 0 and a Python peer on node 1, in one room, connected."""

    nodes: list[SignalingNode]
    python: Peer
    room: Room
    page: Any
    browser: bytes
    """The browser's public key."""
    connected: Connected
    """The Python side's Connected event for the browser."""


MeetFactory = Callable[..., Awaitable[Meeting]]


async def next_of(room: Room, kind: type, within: float = 20.0, **match: Any) -> Any:
    """The next event of `kind` (with matching fields) from a Python room."""
    async with asyncio.timeout(within):
        while True:
            event = await room.next_event(within)
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
                return event


def order(envelopes: list[Any]) -> list[tuple[str, int]]:
    """A Python transcript as (author hex, seq) pairs."""
    return [(e.author.hex(), e.seq) for e in envelopes]


async def browser_order(page: Any) -> list[tuple[str, int]]:
    """The browser's transcript as (author hex, seq) pairs."""
    pairs = await page.evaluate(
        "() => window.pagemesh.room.transcript().map(e => [e.author, e.seq])"
    )
    return [(a, s) for a, s in pairs]


async def say(page: Any, text: str) -> None:
    """Type a line into the page and press Enter, as a person does."""
    await page.fill("#text", text)
    await page.press("#text", "Enter")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.integration)


async def download_sha256(page: Any, link: Any) -> str:
    """SHA-256 (hex) of what a download link in the page holds (a blob: URL)."""
    digest: str = await page.evaluate(
        """async (a) => {
            const data = await (await fetch(a.href)).arrayBuffer();
            const d = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
            return Array.from(d, b => b.toString(16).padStart(2, '0')).join('');
        }""",
        link,
    )
    return digest


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make test installs it as root)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def open_page(chromium: Any) -> AsyncIterator[PageFactory]:
    """`await open_page(node, name, room=URL)`: the room page in a fresh browser profile."""
    logs: list[str] = []

    async def open_(node: SignalingNode, name: str, room: str | None = None, **query: str) -> Any:
        # Polling page state (wait_for_function) evaluates strings, which the node's
        # Content-Security-Policy forbids; test_demo.py runs the page under its policy.
        context = await chromium.new_context(
            viewport={"width": 1100, "height": 700}, bypass_csp=True
        )
        page = await context.new_page()
        page.on("console", lambda msg: logs.append(f"{name} {msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: logs.append(f"{name} error: {exc}"))
        params = {"name": name, **query}
        if room is not None:
            params["room"] = room
        from urllib.parse import urlencode

        await page.goto(node.url.replace("ws://", "http://") + "/?" + urlencode(params))
        await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        return page

    try:
        yield open_
    finally:
        if logs:
            print("\n".join(logs[-200:]))


@pytest.fixture
async def meet(
    signaling_mesh: NodeFactory,  # noqa: F811
    peers: PeerFactory,  # noqa: F811
    open_page: PageFactory,
) -> MeetFactory:
    """`await meet(room_url, **peer_options)`: a browser and a Python peer on two nodes."""

    async def meet_(url: str, **peer_options: Any) -> Meeting:
        a, b = await signaling_mesh(2)
        python = await peers("py", [b.url], **peer_options)
        room = await python.join(url)
        page = await open_page(a, "browser", room=url)
        browser = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
        connected = await next_of(room, Connected, key=browser)
        return Meeting([a, b], python, room, page, browser, connected)

    return meet_
