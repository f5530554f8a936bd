"""The widget a site embeds (docs/widget.md), in Chromium: a site's page on one loopback
origin, under a strict Content-Security-Policy of its own (script-src and frame-src the
node, nothing inline), adds `/embed.js` from a node on another origin. A visitor opens
the launcher from the keyboard and chats with a Python peer who joined the page's
canonical URL; Escape closes the panel; messages that come while it is closed show on
the launcher. The iframe takes its room from its parent only: a foreign frame's message
and a room of another site are refused and counted. The node frames nothing else, and
neither its request log nor the WebSocket frames carry the page's address."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.web import Application as HostApplication  # not the one `ears` listens to

from peer.peer import Connected, Message
from signaling.node import WEB_DIR, SignalingNode
from signaling.rooms import canonical_url
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, next_of
from .test_chat_page import (  # noqa: F401  (ears: a fixture)
    DESKTOP,
    PHONE,
    NodeEars,
    accessibility_problems,
    ears,
)

ARTICLE = "/articles/tea-secret-page?id=7"
VISITED = ARTICLE + "&utm_source=newsletter#comments"  # canonical: no utm_, no fragment

ARTICLE_HTML = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Brewing oolong at home</title><link rel="stylesheet" href="/site.css"></head>
<body>
<nav><a href="/">Tea notes</a> · <a href="/articles/">Articles</a></nav>
<main>
<h1>Brewing oolong at home</h1>
<p class="lede">Three short steepings, water just off the boil, and a small pot.</p>
<p>Oolong sits between green and black tea: partly oxidised, rolled or twisted, and happy
to be steeped many times. Rinse the leaves once, then steep for 30 seconds, 45 and a minute.</p>
<p>Taste each steeping on its own; the second is often the best.</p>
{sibling}
</main>
<script src="{node}/embed.js" referrerpolicy="no-referrer" {options} async></script>
</body>
</html>"""

SITE_CSS = """body { margin: 0 auto; max-width: 44rem; padding: 1.5rem;
  font: 17px/1.6 Georgia, serif; color: #2b2118; background: #fbf7ef; }
nav { font: 14px system-ui, sans-serif; } nav a { color: #7a4b1c; }
h1 { font-size: 2rem; line-height: 1.2; } .lede { font-size: 1.15rem; color: #5c4a3a; }
iframe.sibling { width: 300px; height: 60px; border: 1px dashed #c9b79c; }"""

FRAMES_ROOT = """<!doctype html><html lang="en">
<head><meta charset="utf-8"><title>framing</title></head>
<body><iframe src="{node}/" title="the node's page"></iframe></body></html>"""

SIBLING = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>an ad</title></head>
<body>an advertisement from elsewhere</body></html>"""


@dataclass
class Sites:
    """The site's server (its page embeds the widget) and a foreign one (a frame in it)."""

    origin: str
    foreign: str
    node: SignalingNode


SiteFactory = Callable[..., Awaitable[Sites]]


def http(node: SignalingNode) -> str:
    return node.url.replace("ws://", "http://")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def page_with(text: str, headers: dict[str, str]) -> Any:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/html", headers=headers)

    return handler


def page(text: str, content_type: str = "text/html") -> Any:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type)

    return handler


@pytest.fixture
async def sites() -> AsyncIterator[SiteFactory]:
    """`await sites(node, **data)`: a site whose pages embed `node`'s widget with `data-`
    options, and a foreign origin whose page the site frames (an advertisement)."""
    runners: list[web.AppRunner] = []

    async def start(node: SignalingNode, sibling: bool = False, **data: str) -> Sites:
        foreign_app = HostApplication()
        foreign_app.router.add_get("/ad", page(SIBLING))
        foreign_runner, foreign = await serve(foreign_app)
        runners.append(foreign_runner)
        options = " ".join(f'data-{k}="{v}"' for k, v in data.items())
        ad = f'<iframe class="sibling" src="{foreign}/ad" title="an ad"></iframe>'
        frame = ad if sibling else ""
        # What docs/widget.md asks of a site's policy, and nothing more.
        policy = (
            f"default-src 'none'; style-src 'self'; script-src {http(node)}; "
            f"frame-src {http(node)} {foreign}"
        )

        async def article(_request: web.Request) -> web.Response:
            body = ARTICLE_HTML.format(node=http(node), options=options, sibling=frame)
            return web.Response(
                text=body, content_type="text/html", headers={"Content-Security-Policy": policy}
            )

        app = HostApplication()
        app.router.add_get("/articles/tea-secret-page", article)
        app.router.add_get("/site.css", page(SITE_CSS, "text/css"))
        app.router.add_get("/frames-root", page(FRAMES_ROOT.format(node=http(node))))
        runner, origin = await serve(app)
        runners.append(runner)
        return Sites(origin, foreign, node)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def visitor(chromium: Any) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`await visitor(url, viewport)`: a fresh profile on a site's page, under its CSP
    (unless `bypass_csp`, for axe-core's script)."""
    contexts: list[Any] = []
    logs: list[str] = []

    async def open_(
        url: str, viewport: dict[str, int] = DESKTOP, watch: Any = None, bypass_csp: bool = False
    ) -> Any:
        context = await chromium.new_context(viewport=viewport, bypass_csp=bypass_csp)
        contexts.append(context)
        page = await context.new_page()
        if watch is not None:
            watch(page)
        page.on("console", lambda msg: logs.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: logs.append(f"error: {exc}"))
        await page.goto(url)
        page.logs = logs
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            await context.close()
        if logs:
            print("\n".join(logs[-100:]))


async def until(frame: Any, expression: str, test: Callable[[Any], bool]) -> bool:
    """Whether `expression`, evaluated in `frame`, passes `test` within five seconds (the
    widget's CSP forbids wait_for_function's strings)."""
    for _ in range(50):
        if test(await frame.evaluate(expression)):
            return True
        await asyncio.sleep(0.1)
    return False


INK = "(el) => getComputedStyle(el).color"


async def key_of(frame: Any) -> bytes:
    return bytes.fromhex(await frame.evaluate("window.pagemesh.peer.keyHex"))


def launcher(page: Any) -> Any:
    return page.get_by_role("button", name="Chat with people on this page")


async def widget_frame(page: Any) -> Any:
    """The widget's frame (once the launcher made it)."""
    iframe = await page.wait_for_selector("[data-pagemesh] iframe", state="attached")
    return await iframe.content_frame()


async def open_widget(page: Any) -> Any:
    """Reach the launcher with Tab alone, open it with Enter, wait for the room."""
    for _ in range(12):
        await page.keyboard.press("Tab")
        if await launcher(page).evaluate("(el) => el.matches(':focus')"):
            break
    else:
        raise AssertionError("Tab never reached the launcher")
    await page.keyboard.press("Enter")
    frame = await widget_frame(page)
    await frame.wait_for_selector("body[data-ready=true]", timeout=15_000)
    await frame.wait_for_selector("#leave:not([hidden])", timeout=15_000)
    return frame


async def test_a_visitor_chats_on_a_site_that_embeds_the_widget(
    signaling_mesh: NodeFactory, sites: SiteFactory, peers: PeerFactory, visitor: Any
) -> None:
    a, b = await signaling_mesh(2)
    site = await sites(a, accent="#0b6e4f")
    python = await peers("Ana", [b.url])
    room = await python.join(canonical_url(site.origin + ARTICLE))

    page = await visitor(site.origin + VISITED)
    assert await launcher(page).get_attribute("aria-expanded") == "false"
    frame = await open_widget(page)
    assert await launcher(page).get_attribute("aria-expanded") == "true"
    assert await frame.evaluate("window.pagemesh.room.url") == site.origin + ARTICLE
    await next_of(room, Connected, key=await key_of(frame))
    # The panel opened with the composer focused: the visitor types straight away.
    assert await frame.evaluate("document.activeElement.id") == "text"
    await page.keyboard.type("hello from the article")
    await page.keyboard.press("Enter")
    assert (await next_of(room, Message, mine=False)).text == "hello from the article"
    await room.say("hi! try the second steeping")
    await frame.wait_for_selector("#messages li.msg .body:text-is('hi! try the second steeping')")

    # The site's colour: the launcher's and, since text in it reads on white, the chat's.
    assert await launcher(page).evaluate("(el) => getComputedStyle(el).backgroundColor") == (
        "rgb(11, 110, 79)"
    )
    assert await launcher(page).evaluate(INK) == "rgb(255, 255, 255)"
    accent = "getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()"
    assert await frame.evaluate(accent) == "#0b6e4f"

    # Escape ends a reply being written first, then closes the panel and gives the focus
    # back to the launcher.
    await frame.locator("#messages li.msg").first.hover()
    await frame.locator("#messages li.msg button.reply").first.click()
    await frame.wait_for_selector("#reply-bar:not([hidden])")
    await page.keyboard.press("Escape")
    await frame.wait_for_selector("#reply-bar", state="hidden")
    assert await launcher(page).get_attribute("aria-expanded") == "true"
    await page.keyboard.press("Escape")
    await page.wait_for_selector("iframe[title='Chat with people on this page']", state="hidden")
    assert await launcher(page).get_attribute("aria-expanded") == "false"
    assert await launcher(page).evaluate("(el) => el.matches(':focus')")
    # What comes while it is closed shows on the launcher, and is read out by its name.
    await room.say("anyone else brewing today?")
    await page.wait_for_selector("[data-pagemesh] .badge:text-is('1')")
    assert await launcher(page).get_attribute("aria-label") == (
        "Chat with people on this page (1 new message)"
    )
    await page.keyboard.press("Enter")
    await frame.wait_for_selector("#messages li.msg .body:text-is('anyone else brewing today?')")
    await page.wait_for_selector("[data-pagemesh] .badge", state="hidden")
    # the message box takes the focus once the frame hears it is shown (a postMessage
    # away from the host page's own change, which the badge shows)
    assert await until(frame, "document.activeElement?.id", lambda focused: focused == "text")
    # The close button in the panel closes it too.
    await frame.click("#widget-close")
    await page.wait_for_selector("iframe[title='Chat with people on this page']", state="hidden")


async def test_the_iframe_takes_its_room_from_its_parent_only(
    signaling_mesh: NodeFactory, sites: SiteFactory, visitor: Any
) -> None:
    (node,) = await signaling_mesh(1)
    site = await sites(node, sibling=True)
    page = await visitor(site.origin + VISITED)
    frame = await open_widget(page)
    here = site.origin + ARTICLE
    assert await frame.evaluate("window.pagemesh.widget.link.origin") == site.origin

    # A frame of another origin in the same page (an advertisement) cannot even find the
    # widget (Chromium lists no frame of a shadow root in `parent.frames`), and what it
    # posts to the page is not taken by embed.js: the panel stays open.
    ad = next(f for f in page.frames if f.url.startswith(site.foreign))
    assert await ad.evaluate("parent.length") == 1
    await ad.evaluate("parent.postMessage({pagemesh: 'close'}, '*')")
    # A window that holds a reference to the widget (one it opened) names another room.
    async with page.context.expect_page() as opened:
        await frame.evaluate("(url) => { window.open(url); }", site.foreign + "/ad")
    popup = await opened.value
    await popup.wait_for_load_state()
    await popup.evaluate(
        "opener.postMessage({pagemesh: 'room', url: 'https://elsewhere.example/'}, '*')"
    )
    refused = "window.pagemesh.widget.link.refused"
    assert await until(frame, refused, lambda counts: counts["not-parent"] >= 1)
    # The parent itself may not name another site's page.
    await page.evaluate(
        """(node) => document.querySelector('[data-pagemesh]').shadowRoot.querySelector('iframe')
            .contentWindow.postMessage(
                {pagemesh: 'room', url: 'https://elsewhere.example/'}, node)""",
        http(node),
    )
    assert await until(frame, refused, lambda counts: counts["foreign-url"] >= 1)
    assert await launcher(page).get_attribute("aria-expanded") == "true"
    assert await frame.evaluate(refused) == {
        "not-parent": 1,
        "opaque-origin": 0,
        "other-origin": 0,
        "malformed": 0,
        "bad-url": 0,
        "foreign-url": 1,
    }
    assert await frame.evaluate("window.pagemesh.room.url") == here
    assert any("refused (not-parent)" in line for line in page.logs)
    assert any("refused (foreign-url)" in line for line in page.logs)

    # The site moves to another page of its own without loading one (pushState), and back.
    room_url = "window.pagemesh.room?.url"
    await page.evaluate("history.pushState(null, '', '/articles/green?id=8#top')")
    assert await until(frame, room_url, lambda url: url == site.origin + "/articles/green?id=8")
    await page.evaluate("history.back()")
    assert await until(frame, room_url, lambda url: url == here)


async def test_the_hostlink_rules(signaling_mesh: NodeFactory, open_page: Any) -> None:
    """The rule on its own (hostlink.js), fed messages by hand, in the node's page."""
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "rules")
    outcomes = await page.evaluate(
        """async () => {
            const { HostLink } = await import('/web/js/hostlink.js');
            const { readsOnWhite } = await import('/web/js/people.js');
            const site = 'https://site.example';
            const link = new HostLink();
            const said = (fromParent, origin, data) => link.receive({fromParent, origin, data});
            const out = [
                said(false, site, {pagemesh: 'room', url: site + '/a'}),        // not the parent
                said(true, site, {pagemesh: 'room', url: site + '/a?utm_x=1#f', accent: '#ABC'}),
                said(true, 'https://other.example', {pagemesh: 'shown'}),        // origin pinned
                said(true, site, {pagemesh: 'room', url: 'https://other.example/'}),
                said(true, site, {pagemesh: 'room', url: 'ftp://site.example/'}),
                said(true, site, {pagemesh: 'room', url: site + '/', scope: 'planet'}),
                said(true, site, {pagemesh: 'room', url: site + '/x'.repeat(5000)}),
                said(true, site, 'room'),
                said(true, site,
                     {pagemesh: 'room', url: site + '/b', scope: 'site', accent: 'red;'}),
                said(true, site, {pagemesh: 'hidden'}),
            ];
            const opaque = new HostLink();
            out.push(opaque.receive({fromParent: true, origin: 'null', data: {pagemesh: 'shown'}}));
            const colours = ['#ffcc00', '#0b6e4f', '#2459c4', '#777', '#767676', '#fff', '#000'];
            return {out, refused: link.refused, opaque: opaque.refused,
                    colours: colours.map(readsOnWhite)};
        }"""
    )
    assert outcomes["out"] == [
        None,
        {"type": "room", "room": "https://site.example/a", "scope": "page", "accent": "#ABC"},
        None,
        None,
        None,
        None,
        None,
        None,
        {"type": "room", "room": "https://site.example/", "scope": "site", "accent": None},
        {"type": "hidden"},
        None,
    ]
    assert outcomes["refused"] == {
        "not-parent": 1,
        "opaque-origin": 0,
        "other-origin": 1,
        "malformed": 3,
        "bad-url": 1,
        "foreign-url": 1,
    }
    assert outcomes["opaque"]["opaque-origin"] == 1
    assert outcomes["colours"] == [False, True, True, False, True, False, True]


SELF_HOSTED_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>self-hosted</title></head>
<body><h1>A site that serves the widget's script itself</h1>
<script src="{src}" {attributes} async></script>
</body></html>"""


async def test_a_site_serves_embed_js_itself_or_pins_it(
    signaling_mesh: NodeFactory, peers: PeerFactory, visitor: Any
) -> None:
    # docs/widget.md "Who sees what": embed.js runs with the site's own rights, so a site
    # may keep its own copy (data-node names the node) or pin the node's copy with a
    # Subresource Integrity hash; a node that then serves other bytes runs nothing.
    (node,) = await signaling_mesh(1)
    embed = (WEB_DIR / "embed.js").read_bytes()
    pin = "sha384-" + base64.b64encode(hashlib.sha384(embed).digest()).decode()
    wrong = "sha384-" + base64.b64encode(hashlib.sha384(b"other").digest()).decode()
    policy = f"default-src 'none'; script-src 'self' {http(node)}; frame-src {http(node)}"
    pages = {
        "own": ("/embed.js", f'data-node="{http(node)}"'),
        "pinned": (f"{http(node)}/embed.js", f'integrity="{pin}" crossorigin="anonymous"'),
        "altered": (f"{http(node)}/embed.js", f'integrity="{wrong}" crossorigin="anonymous"'),
        "bad-node": ("/embed.js", 'data-node="javascript:alert(1)"'),
    }
    app = HostApplication()
    for name, (src, attributes) in pages.items():
        body = SELF_HOSTED_HTML.format(src=src, attributes=attributes)
        headers = {"Content-Security-Policy": policy}
        app.router.add_get(f"/{name}", page_with(body, headers))
    app.router.add_get("/embed.js", page(embed.decode(), "text/javascript"))
    runner, origin = await serve(app)
    try:
        python = await peers("Ana", [node.url])
        for name in ("own", "pinned"):
            room = await python.join(canonical_url(f"{origin}/{name}"))
            visit = await visitor(f"{origin}/{name}")
            frame = await open_widget(visit)
            assert frame.url.startswith(http(node) + "/widget"), name
            assert await frame.evaluate("window.pagemesh.room.url") == f"{origin}/{name}"
            await next_of(room, Connected, key=await key_of(frame))
        for name in ("altered", "bad-node"):
            visit = await visitor(f"{origin}/{name}")
            await visit.wait_for_load_state("load")
            assert await visit.locator("[data-pagemesh]").count() == 0, name
    finally:
        await runner.cleanup()


async def test_the_node_frames_nothing_but_the_widget(
    signaling_mesh: NodeFactory, sites: SiteFactory, visitor: Any
) -> None:
    (node,) = await signaling_mesh(1)
    site = await sites(node)
    page = await visitor(site.origin + "/frames-root")
    said = "frame-ancestors 'none'"
    assert await until(page, "true", lambda _: any(said in line for line in page.logs)), page.logs
    (child,) = page.frames[1:]
    assert child.url == "chrome-error://chromewebdata/"  # Chromium's page for a refused frame


async def test_the_node_never_learns_the_page(
    ears: NodeEars,  # noqa: F811
    signaling_mesh: NodeFactory,
    sites: SiteFactory,
    peers: PeerFactory,
    visitor: Any,
) -> None:
    (node,) = await signaling_mesh(1)
    site = await sites(node)
    python = await peers("Ana", [node.url])
    room = await python.join(canonical_url(site.origin + ARTICLE))
    page = await visitor(site.origin + VISITED, watch=ears.listen("visitor"))
    frame = await open_widget(page)
    await next_of(room, Connected, key=await key_of(frame))
    await page.keyboard.type("hello")
    await page.keyboard.press("Enter")
    assert (await next_of(room, Message, mine=False)).text == "hello"

    assert any(r.startswith("GET /embed.js") for r in ears.requests)  # the node was heard
    assert any(r.startswith("GET /widget") for r in ears.requests)
    assert any(room.key.hex() in frame for frame in ears.frames["visitor"])  # the join, by hash
    host = site.origin.removeprefix("http://")
    for needle in ["tea-secret-page", "utm_source", host, "oolong"]:
        assert ears.heard(needle, "visitor") == [], needle


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_the_widget_open_on_a_site_as_the_readme_shows_it(
    size: str,
    signaling_mesh: NodeFactory,
    sites: SiteFactory,
    peers: PeerFactory,
    visitor: Any,
) -> None:
    a, b = await signaling_mesh(2)
    site = await sites(a)
    ana = await peers("Ana", [b.url])
    room = await ana.join(canonical_url(site.origin + ARTICLE))
    viewport = DESKTOP if size == "desktop" else PHONE
    page = await visitor(site.origin + VISITED, viewport=viewport, bypass_csp=True)
    frame = await open_widget(page)
    await next_of(room, Connected, key=await key_of(frame))
    await frame.fill("#name", "Kim")
    await frame.dispatch_event("#name", "change")
    await room.say("Has anyone tried the second steeping? It is the best one for me.")
    await frame.wait_for_selector("#messages li.msg .body:has-text('second steeping')")
    await page.keyboard.press("Tab")  # leave the name box; the composer next
    await frame.focus("#text")
    await page.keyboard.type("Yes, 45 seconds, lovely!")
    await page.keyboard.press("Enter")
    await next_of(room, Message, mine=False)
    await frame.wait_for_selector("#messages li.msg.mine")
    # Nothing in the panel is cut off sideways; the composer is in view.
    assert await frame.evaluate("document.documentElement.scrollWidth <= innerWidth")
    box = await frame.eval_on_selector("#compose", "(el) => el.getBoundingClientRect().bottom")
    assert box <= await frame.evaluate("innerHeight")
    await frame.evaluate("document.activeElement?.blur()")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"widget-{size}.png"))
    # axe-core (when installed) and our own checks find nothing serious, in the panel and
    # on the page around it (the launcher, in its shadow root).
    problems = await accessibility_problems(frame, f"{size} panel")
    problems += await accessibility_problems(page, f"{size} page")
    assert problems == []


async def test_a_site_wide_room_in_the_left_corner(
    signaling_mesh: NodeFactory, sites: SiteFactory, peers: PeerFactory, visitor: Any
) -> None:
    (node,) = await signaling_mesh(1)
    site = await sites(node, scope="site", position="bottom-left", accent="#ffcc00")
    python = await peers("Ana", [node.url])
    room = await python.join(site.origin + "/")
    page = await visitor(site.origin + VISITED)
    button = page.get_by_role("button", name="Chat with people on this site")
    box = await button.bounding_box()
    assert box is not None and box["x"] < 100
    # A colour too light for white text: black on the launcher, the chat keeps its own.
    assert await button.evaluate("(el) => getComputedStyle(el).color") == "rgb(0, 0, 0)"
    await button.click()
    frame = await widget_frame(page)
    await frame.wait_for_selector("#leave:not([hidden])", timeout=15_000)
    assert await frame.evaluate("window.pagemesh.room.url") == site.origin + "/"
    assert await frame.inner_text("header h1") == "Chat on this site"
    accent = "getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()"
    assert await frame.evaluate(accent) == "#2459c4"
    await next_of(room, Connected, key=await key_of(frame))
    # Leave, and come back from the keyboard.
    await frame.click("#leave")
    await frame.wait_for_selector("#rejoin")
    assert await frame.evaluate("document.activeElement.id") == "rejoin"
    await page.keyboard.press("Enter")
    await frame.wait_for_selector("#leave:not([hidden])", timeout=15_000)
    assert await frame.evaluate("window.pagemesh.room.url") == site.origin + "/"


async def test_a_site_served_over_plain_http_is_told_why_there_is_no_chat(
    signaling_mesh: NodeFactory, sites: SiteFactory
) -> None:
    """A page that is not a secure context (http:// on a name that is not loopback) gives
    its frames none either: no WebCrypto, no WebRTC. The panel says so."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make test installs it as root)")
    from playwright.async_api import async_playwright

    (node,) = await signaling_mesh(1)
    site = await sites(node)
    port = site.origin.rsplit(":", 1)[1]
    # site.test resolves to loopback in this browser only: nothing leaves the machine.
    flags = [*CHROMIUM_FLAGS, "--host-resolver-rules=MAP site.test 127.0.0.1"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        try:
            page = await (await browser.new_context()).new_page()
            await page.goto(f"http://site.test:{port}{VISITED}")
            await launcher(page).click()
            frame = await widget_frame(page)
            await frame.wait_for_selector("body[data-ready=true]", timeout=15_000)
            assert not await frame.evaluate("isSecureContext")
            assert "served over HTTPS" in await frame.inner_text("#banner")
            assert await frame.evaluate("window.pagemesh.peer") is None
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "widget-insecure.png"))
        finally:
            await browser.close()
