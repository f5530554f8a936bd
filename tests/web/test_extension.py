"""The browser extension (`pagemesh extension build`) in Debian's Chromium, loaded
unpacked, against a real node, real web pages on 127.0.0.1 and 127.0.0.2 and Python
peers: the panel, opened as a tab, follows the active tab from room to room and
chats; the toolbar badge counts the people on the page; local addresses, listed
sites, a switched-off site and private windows join nothing; the node hears the
rooms' hashes and nothing of the pages' addresses."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from nacl.signing import SigningKey

from pagemesh.extension import build
from peer.identity_file import import_identity
from peer.peer import Connected, MemberLeft, Message, Room
from signaling.rooms import canonical_url, room_key
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, next_of
from .test_chat_page import AXE, AXE_FOUND, NodeEars, accessibility_problems, ears  # noqa: F401

# The test's web pages are aiohttp applications too: made with the class as it was
# before `ears` starts recording every application (the node's) made after.
Application = web.Application
LISTED_HOST = "mail.example.com"  # a mail site: the built-in list keeps pagemesh out
WIDE = {"width": 1280, "height": 800}
SIDE_PANEL = {"width": 400, "height": 800}  # about a side panel's width
PASSPHRASE = "tide lantern orbit walnut"


@dataclass
class WebPages:
    """Two sites with a few pages each (any path answers), on two loopback addresses."""

    first: str  # http://127.0.0.1:PORT
    second: str  # http://127.0.0.2:PORT
    listed: str  # http://mail.example.com:PORT (the browser resolves it to 127.0.0.1)


async def serve_pages(runners: list[web.AppRunner], host: str) -> int:
    async def page(request: web.Request) -> web.Response:
        title = request.path.strip("/") or "home"
        body = f"<!doctype html><title>{title}</title><h1>{title}</h1><p>A page to talk about.</p>"
        return web.Response(text=body, content_type="text/html")

    app = Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, host, 0)
    await site.start()
    return int(runner.addresses[0][1])


@pytest.fixture
async def pages() -> AsyncIterator[WebPages]:
    runners: list[web.AppRunner] = []
    try:
        first = await serve_pages(runners, "127.0.0.1")
        second = await serve_pages(runners, "127.0.0.2")
        yield WebPages(
            f"http://127.0.0.1:{first}",
            f"http://127.0.0.2:{second}",
            f"http://{LISTED_HOST}:{first}",
        )
    finally:
        for runner in runners:
            await runner.cleanup()


@dataclass
class Extension:
    context: Any
    worker: Any
    """The extension's service worker (chrome.action, chrome.tabs for the test)."""
    id: str
    logs: list[str]

    def url(self, path: str) -> str:
        return f"chrome-extension://{self.id}/{path}"

    async def open(
        self,
        path: str,
        viewport: dict[str, int] = WIDE,
        watch: Callable[[Any], None] | None = None,
        ready: bool = True,
    ) -> Any:
        page = await self.context.new_page()
        await page.set_viewport_size(viewport)
        if watch is not None:
            watch(page)  # before the page loads: its first frames too
        page.on("console", lambda msg: self.logs.append(f"{path} {msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.logs.append(f"{path} error: {exc}"))
        await page.goto(self.url(path))
        if ready:
            await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        return page

    async def badge(self, tab_id: int) -> str:
        text: str = await self.worker.evaluate(
            "(tabId) => chrome.action.getBadgeText({tabId})", tab_id
        )
        return text


LoadExtension = Callable[..., Awaitable[Extension]]


@pytest.fixture
async def load_extension(tmp_path: Path) -> AsyncIterator[LoadExtension]:
    """`await load_extension(node_urls)`: the extension built for those nodes, in a
    fresh Chromium profile (headless, Debian's binary)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make test installs it as root)")
    from playwright.async_api import async_playwright

    contexts: list[Any] = []
    logs: list[str] = []
    async with async_playwright() as playwright:

        async def load(nodes: list[str]) -> Extension:
            folder, _ = build(tmp_path / "extension", nodes)
            context = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                args=[
                    *CHROMIUM_FLAGS,
                    f"--disable-extensions-except={folder}",
                    f"--load-extension={folder}",
                    # a name on the built-in list, answered by the test's first site
                    f"--host-resolver-rules=MAP {LISTED_HOST} 127.0.0.1",
                ],
            )
            contexts.append(context)
            worker = context.service_workers[0] if context.service_workers else None
            if worker is None:
                worker = await context.wait_for_event("serviceworker", timeout=15_000)
            return Extension(context, worker, worker.url.split("/")[2], logs)

        try:
            yield load
        finally:
            for context in contexts:
                await context.close()
            problems = [line for line in logs if "error" in line or "warning" in line]
            if problems:
                print("\n".join(problems[-100:]))


async def tab_id(ext: Extension, url: str) -> int:
    """The id chrome.tabs gives the tab showing `url`."""
    found: list[int] = await ext.worker.evaluate(
        """(url) => chrome.tabs.query({})
            .then(tabs => tabs.filter(t => t.url === url).map(t => t.id))""",
        url,
    )
    assert len(found) == 1, found
    return found[0]


async def here(panel: Any, state: str, room: str | None = None) -> None:
    """Wait for the panel's room indicator to say `state` (and the room, if given)."""
    selector = f"#here[data-state={state}]"
    if room is not None:
        selector += f'[data-room="{room}"]'
    try:
        await panel.wait_for_selector(selector, state="attached", timeout=20_000)
    except Exception as error:
        seen = await panel.evaluate(
            """() => [{...document.getElementById('here').dataset}, window.pagemesh.panel.tab,
                window.pagemesh.statusLog, document.getElementById('banner').textContent]"""
        )
        raise AssertionError(f"the panel is not {selector}: {seen}") from error


async def badge_is(ext: Extension, tab: int, text: str) -> None:
    """Wait (up to 10 s) for the tab's toolbar badge to say `text`."""
    for _ in range(100):
        if (shown := await ext.badge(tab)) == text:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the badge says {shown!r}, not {text!r}")


async def python_in(peers: PeerFactory, node: Any, name: str, canonical: str) -> Room:
    """A Python peer on `node` in the room of `canonical` (the URL as every client derives it)."""
    python = await peers(name, [node.url])
    return await python.join(canonical)


async def test_the_panel_follows_the_tab_from_room_to_room(
    ears: NodeEars,  # noqa: F811
    signaling_mesh: NodeFactory,
    peers: PeerFactory,
    pages: WebPages,
    load_extension: LoadExtension,
) -> None:
    node, home = await signaling_mesh(2)  # the Python peers' home is another node
    # What the tab shows, and the canonical URL a Python peer joins (no tracking, no fragment).
    first_url = f"{pages.first}/a-page-about-tea?utm_source=newsletter#comments"
    first = canonical_url(first_url)
    assert first == f"{pages.first}/a-page-about-tea"
    second = f"{pages.second}/a-page-about-coffee"
    ana = await python_in(peers, home, "ana", first)
    bo = await python_in(peers, home, "bo", second)

    ext = await load_extension([node.url])
    panel = await ext.open("extension/panel.html", watch=ears.listen("panel"))
    assert await panel.evaluate("document.body.dataset.mode") == "tab"
    tab = await ext.context.new_page()
    await tab.goto(first_url)
    tab_page = await tab_id(ext, first_url)

    # By default a local address has no room: the panel says so and joins nothing.
    await here(panel, "local")
    assert "local and private addresses" in await panel.inner_text("#here-text")
    assert await panel.evaluate("window.pagemesh.room") is None
    assert await ext.badge(tab_page) == ""

    # The options allow local addresses (the test's pages are on loopback): the panel joins.
    options = await ext.open("extension/options.html")
    await options.check("#allow-local")
    await options.click("#save")
    await options.wait_for_selector("#saved:text-is('Saved.')")
    await options.close()
    await tab.bring_to_front()
    await here(panel, "joined", first)
    me = bytes.fromhex(await panel.evaluate("window.pagemesh.peer.keyHex"))
    await next_of(ana, Connected, key=me)
    assert await panel.inner_text("#here-site") == first.split("/")[2]
    await panel.wait_for_selector("#here-count:text-is('2 people here')")
    await badge_is(ext, tab_page, "2")
    # Ana's home node is one more to try next time (the panel was built with the first only).
    learned = await panel.evaluate("chrome.storage.local.get('learned').then(s => s.learned)")
    assert home.url in learned and node.url not in learned

    # It chats like the node's page: both ways.
    await panel.fill("#text", "hello from the panel")
    await panel.press("#text", "Enter")
    assert (await next_of(ana, Message, mine=False)).text == "hello from the panel"
    await ana.say("hello, panel")
    await panel.wait_for_selector("#messages li.msg .body:text-is('hello, panel')")

    # The tab goes to another site's page: the panel leaves the first room for the second.
    await tab.goto(second)
    await here(panel, "joined", second)
    await next_of(ana, MemberLeft, key=me)
    await next_of(bo, Connected, key=me)
    await badge_is(ext, tab_page, "2")
    await panel.fill("#text", "and hello here")
    await panel.press("#text", "Enter")
    assert (await next_of(bo, Message, mine=False)).text == "and hello here"

    # The site's switch: off leaves the room and stays off for the site; on comes back.
    await panel.uncheck("#site-switch")
    await here(panel, "off")
    await next_of(bo, MemberLeft, key=me)
    await badge_is(ext, tab_page, "")
    await tab.goto(f"{pages.second}/another-page")  # the whole site is off
    await here(panel, "off")
    await panel.check("#site-switch")
    await here(panel, "joined", f"{pages.second}/another-page")

    # A site on the built-in list: never, and no switch to say otherwise.
    await tab.goto(f"{pages.listed}/inbox")
    await here(panel, "listed")
    assert await panel.inner_text("#here-text") == "pagemesh never joins on mail sites"
    assert await panel.is_hidden("#site-row")
    assert await panel.evaluate("window.pagemesh.room") is None

    # Switching tabs switches rooms too; the badge goes with the room.
    other = await ext.context.new_page()
    await other.goto(first_url)
    await here(panel, "joined", first)
    await next_of(ana, Connected, key=me)
    await badge_is(ext, await tab_id(ext, first_url), "2")
    await tab.bring_to_front()
    await here(panel, "listed")
    await next_of(ana, MemberLeft, key=me)
    await badge_is(ext, await tab_id(ext, first_url), "")

    # One panel holds the identity: a second one waits, and takes over once the first closes.
    second_panel = await ext.open("extension/panel.html", ready=False)
    await second_panel.wait_for_selector("#panel-hint:has-text('open in another window')")
    await other.bring_to_front()
    await here(panel, "joined", first)
    await next_of(ana, Connected, key=me)
    await panel.close()
    await next_of(ana, MemberLeft, key=me)
    await second_panel.wait_for_selector("body[data-ready=true]", timeout=15_000)
    await here(second_panel, "joined", first)
    await next_of(ana, Connected, key=me)  # the same identity (the extension's IndexedDB)
    # What the first panel learned is where this one fails over to, not a node it goes
    # back to (docs/protocol.md 3.1): the chosen node alone is the person's.
    chosen, nodes = await second_panel.evaluate(
        "[window.pagemesh.peer.mesh.chosen, window.pagemesh.peer.mesh.nodes]"
    )
    assert chosen == [node.url] and home.url in nodes

    # The node heard the rooms' hashes, and nothing of the pages' addresses.
    frames = ears.frames["panel"]
    assert any(room_key(first).hex() in frame for frame in frames)
    assert any(room_key(second).hex() in frame for frame in frames)
    for text in ("a-page-about", "another-page", "inbox", "127.0.0.2", LISTED_HOST):
        assert ears.heard(text, "panel") == [], text
    for port in (pages.first.rsplit(":", 1)[1], pages.second.rsplit(":", 1)[1]):
        assert [r for r in ears.requests + frames if f":{port}" in r] == [], port

    await ana.say("welcome back")
    await second_panel.wait_for_selector("#messages li.msg .body:text-is('welcome back')")
    await screenshots(second_panel)

    # What the node's page promises a screen reader and a keyboard, the panel keeps.
    if AXE_FOUND:  # evaluated: the panel's policy refuses the <script> axe usually comes in
        await second_panel.evaluate(AXE.read_text())
    await second_panel.click("#you summary")
    problems = await accessibility_problems(second_panel, "panel, side panel's width")
    await second_panel.set_viewport_size(WIDE)
    problems += await accessibility_problems(second_panel, "panel, wide")
    assert problems == [], "\n".join(problems)


async def screenshots(panel: Any) -> None:
    """The panel in a room, wide and as narrow as a side panel, for the docs."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in (("extension-panel-wide", WIDE), ("extension-panel", SIDE_PANEL)):
        await panel.set_viewport_size(viewport)
        await panel.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def test_the_extension_stays_out_of_private_windows_and_asks_no_host_access(
    signaling_mesh: NodeFactory, pages: WebPages, load_extension: LoadExtension, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    ext = await load_extension([node.url])
    manifest = await ext.worker.evaluate("chrome.runtime.getManifest()")
    assert manifest["incognito"] == "not_allowed"
    assert await ext.worker.evaluate("chrome.extension.isAllowedIncognitoAccess()") is False
    # No page's content: no host permissions, no content scripts, nothing a page may load.
    assert sorted(manifest["permissions"]) == ["sidePanel", "storage", "tabs"]
    for key in ("host_permissions", "content_scripts", "web_accessible_resources"):
        assert key not in manifest, key

    assert await ext.worker.evaluate("chrome.sidePanel.getPanelBehavior()") == {
        "openPanelOnActionClick": True
    }

    # The panel exports the extension's one identity, as the node's page does (docs/identity.md).
    panel = await ext.open("extension/panel.html", SIDE_PANEL)
    key = await panel.evaluate("window.pagemesh.peer.keyHex")
    await panel.click("#you summary")
    await panel.fill("#name", "Bea")
    await panel.press("#name", "Enter")
    await panel.click("#export-identity")
    await panel.fill("#identity-passphrase", PASSPHRASE)
    await panel.fill("#identity-passphrase-again", PASSPHRASE)
    async with panel.expect_download() as info:
        await panel.click("#identity-ok")
    download = await info.value
    saved = tmp_path / "bea.pagemesh-identity"
    await download.save_as(saved)
    seed, name = import_identity(saved.read_bytes(), PASSPHRASE)
    assert (bytes(SigningKey(seed).verify_key).hex(), name) == (key, "Bea")

    # A private window opened by the extension itself: made, and invisible to it.
    private = f"{pages.first}/a-private-page"
    made = await ext.worker.evaluate(
        "(url) => chrome.windows.create({incognito: true, url})", private
    )
    assert made is None  # Chrome tells an extension kept out of private windows nothing
    windows = await ext.worker.evaluate(
        """chrome.windows.getAll({populate: true})
            .then(ws => ws.map(w => [w.incognito, w.tabs.map(t => t.url)]))"""
    )
    assert all(not incognito and private not in urls for incognito, urls in windows), windows
    cdp = await ext.context.new_cdp_session(ext.context.pages[0])
    for _ in range(100):  # the window is there, in another (off-the-record) browser context
        targets = (await cdp.send("Target.getTargets"))["targetInfos"]
        if any(t["url"] == private for t in targets):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no private window: {targets}")
    ours = {t["browserContextId"] for t in targets if t["url"].startswith(ext.url(""))}
    assert all(t["browserContextId"] not in ours for t in targets if t["url"] == private)
