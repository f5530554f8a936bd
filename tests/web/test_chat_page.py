"""The page as a chat app, in Chromium against real nodes and Python peers: the
transcript scrolls inside its box under a fixed header and composer at desktop
and phone sizes, a hidden tab counts unread messages in its title, everything
works from the keyboard alone (join, send, reply, react, share a file, leave),
the room's URL never reaches the node (it travels in the fragment), an idle page
stays connected, and axe-core finds no serious or critical accessibility
violation."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from peer.messaging import MessageRef
from peer.peer import Connected, FileDone, MemberLeft, Message, Room
from signaling.node import SignalingNode
from signaling.session import SessionLimits
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, next_of

ROOM = "https://example.org/a-page-about-tea"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# axe-core's browser build, installed by `make test` (npm) beside the venv.
AXE = Path(
    os.environ.get(
        "PAGEMESH_AXE",
        Path(__file__).parents[2] / ".venv/node/node_modules/axe-core/axe.min.js",
    )
)

OpenChat = Callable[..., Awaitable[Any]]


def page_url(node: SignalingNode, fragment: dict[str, str] | None = None, query: str = "") -> str:
    """The node's page with the room in the fragment (`#room=...`), as the page writes it."""
    base = node.url.replace("ws://", "http://") + "/" + (f"?{query}" if query else "")
    if not fragment:
        return base
    return base + "#" + "&".join(f"{k}={quote(v, safe='')}" for k, v in fragment.items())


@pytest.fixture
async def open_chat(chromium: Any) -> AsyncIterator[OpenChat]:
    """`await open_chat(node, name, room=URL, viewport=..., init=JS)`: a fresh profile's page."""
    logs: list[str] = []
    contexts: list[Any] = []

    async def open_(
        node: SignalingNode,
        name: str,
        room: str | None = None,
        viewport: dict[str, int] | None = None,
        init: str | None = None,
        url: str | None = None,
        ready: bool = True,
        watch: Callable[[Any], None] | None = None,
    ) -> Any:
        context = await chromium.new_context(viewport=viewport or DESKTOP, bypass_csp=True)
        contexts.append(context)
        page = await context.new_page()
        if watch is not None:
            watch(page)  # before the page loads: its first request and frames too
        page.on("console", lambda msg: logs.append(f"{name} {msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: logs.append(f"{name} error: {exc}"))
        if init is not None:
            await page.add_init_script(init)
        fragment = {"room": room} if room else None
        await page.goto(url or page_url(node, fragment, f"name={name}"))
        if ready:
            await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        return page

    open_.logs = logs  # type: ignore[attr-defined]
    try:
        yield open_
    finally:
        for context in contexts:
            await context.close()
        problems = [line for line in logs if " error" in line or "warning" in line]
        if problems:
            print("\n".join(problems[-100:]))


async def python_in_room(
    peers: PeerFactory, node: SignalingNode, name: str, url: str = ROOM, **options: Any
) -> tuple[Any, Room]:
    python = await peers(name, [node.url], **options)
    return python, await python.join(url)


def chat(room: Room, text: str, name: str | None = None, reply_to: MessageRef | None = None) -> Any:
    """A `chat` envelope from a Python peer: its text, its signed name, what it answers."""
    env = room.core.say(text, time.time(), name=name, reply_to=reply_to)
    room._service()  # as Room.send does after the core numbered and signed it
    return env


def said(room: Room, message: Message) -> Any:
    """The envelope a Python peer's Message came in, as signed (kind and body)."""
    return next(
        e for e in room.core.transcript() if (e.author, e.seq) == (message.author, message.seq)
    )


async def browser_key(page: Any) -> bytes:
    return bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))


async def in_viewport(page: Any, selector: str) -> bool:
    """Whether the element's whole box lies inside the window and inside every scrolling box."""
    result: bool = await page.eval_on_selector(
        selector,
        """(el) => {
            const box = el.getBoundingClientRect();
            if (box.height === 0) return false;
            const inside = (outer) => box.top >= outer.top - 1 && box.bottom <= outer.bottom + 1
                && box.left >= outer.left - 1 && box.right <= outer.right + 1;
            if (!inside({top: 0, left: 0, bottom: innerHeight, right: innerWidth})) return false;
            for (let p = el.parentElement; p; p = p.parentElement) {
                const style = getComputedStyle(p);
                const scrolls = /(auto|scroll|hidden)/.test(style.overflowY);
                const page = p === document.body || p === document.documentElement;
                if (scrolls && !page && !inside(p.getBoundingClientRect())) return false;
            }
            return true;
        }""",
    )
    return result


# --- the transcript scrolls in its box; the composer and the newest message stay in view ---


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_sixty_messages_keep_the_composer_and_the_newest_in_view(
    size: str, signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    (node,) = await signaling_mesh(1)
    ana, room = await python_in_room(peers, node, "ana")
    viewport = DESKTOP if size == "desktop" else PHONE
    page = await open_chat(node, "you", room=ROOM, viewport=viewport)
    await next_of(room, Connected, key=await browser_key(page))
    for i in range(60):
        line = f"message {i}: " + ("a longer line that wraps on a phone, " * (i % 3))
        chat(
            room,
            line.strip() + (" see https://example.org/tea?kind=green" if i % 7 == 0 else ""),
            "Ana",
        )
    await page.wait_for_function(
        "document.querySelectorAll('#messages li.msg').length === 60", timeout=20_000
    )
    newest = "#messages li.msg:last-of-type"
    await page.wait_for_function(  # the list follows to the bottom
        "(() => { const m = document.querySelector('#messages');"
        " return m.scrollHeight - m.scrollTop - m.clientHeight < 2; })()"
    )
    assert (
        await page.inner_text(f"{newest} .body")
        == "message 59: a longer line that wraps on a phone, a longer line that wraps on a phone,"
    )
    for selector in ["#compose", "#text", "#send", "#file-button", newest, "header"]:
        assert await in_viewport(page, selector), f"{selector} is out of view at {size}"
    # The page itself does not scroll: only the transcript does.
    assert await page.evaluate("document.scrollingElement.scrollHeight <= innerHeight + 1")
    link = page.locator("#messages li.msg a[href='https://example.org/tea?kind=green']").first
    assert await link.get_attribute("rel") == "noopener noreferrer"
    assert await link.get_attribute("target") == "_blank"

    # Scrolled up to read: what arrives is counted on a pill, which jumps down.
    await page.eval_on_selector("#messages", "m => { m.scrollTop = 0; }")
    await page.wait_for_function("document.querySelector('#messages').scrollTop === 0")
    chat(room, "are you still reading?", "Ana")
    chat(room, "there is more below", "Ana")
    pill = page.locator("#new-pill")
    await pill.wait_for(state="visible", timeout=10_000)
    await page.wait_for_selector("#new-pill:text-is('2 new messages ↓')")
    assert await page.eval_on_selector("#messages", "m => m.scrollTop") == 0  # not yanked down
    await pill.click()
    await pill.wait_for(state="hidden")
    assert await in_viewport(page, "#messages li.msg:last-of-type")
    assert await page.inner_text("#messages li.msg:last-of-type .body") == "there is more below"

    # A reply and reactions, for the screenshot of the README as much as for the test.
    ana_key = ana.public_key.hex()
    await page.hover(f"#messages li.msg[data-author='{ana_key}']:last-of-type")
    await page.click(f"#messages li.msg[data-author='{ana_key}']:last-of-type button.reply")
    await page.wait_for_selector("#reply-bar:has-text('Replying to Ana')")
    await page.fill("#text", "Still here, and see https://example.org/tea for the rest")
    await page.press("#text", "Enter")
    reply = "#messages li.msg.mine:last-of-type"
    await page.wait_for_selector(f"{reply} .quote:has-text('there is more below')")
    chat(room, "🎉 lovely", "Ana")
    await page.wait_for_selector("#messages li.msg:last-of-type .body:text-is('🎉 lovely')")
    target = page.locator(f"#messages li.msg[data-author='{ana_key}']").nth(-2)
    await target.hover()
    await target.locator("button.react").click()
    await target.locator(".picker button[aria-label='React with heart']").click()
    await target.locator(".reactions button[aria-pressed=true]:has-text('❤️ 1')").wait_for()
    assert await in_viewport(page, "#compose")
    await page.mouse.move(0, 0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"chat-{size}.png"))


# --- names that hold, namesakes told apart ---


async def test_names_come_from_history_and_namesakes_are_told_apart(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    (node,) = await signaling_mesh(1)
    first, room1 = await python_in_room(peers, node, "first")
    second, room2 = await python_in_room(peers, node, "second")
    page = await open_chat(node, "you", room=ROOM)
    me = await browser_key(page)
    await next_of(room1, Connected, key=me)
    await next_of(room2, Connected, key=me)
    chat(room1, "I am Ana", "Ana")
    chat(room2, "so am I", "Ana")
    keys = [first.public_key.hex(), second.public_key.hex()]
    for key in keys:  # each label carries its key's tag: "Ana ·3fa9"
        await page.wait_for_selector(
            f"#messages li.msg .who[data-key='{key}']:text-is('Ana ·{key[:4]}')"
        )
    # Both messages carry a face; which comes first is the room's order (two senders at
    # the same millisecond), so the faces are compared by key.
    await page.wait_for_function(
        "document.querySelectorAll('#messages li.msg .avatar[data-key]').length >= 2"
    )
    faces = await page.eval_on_selector_all(
        "#messages li.msg .avatar",
        "faces => faces.map(f => [f.dataset.key, f.textContent, f.style.backgroundColor])",
    )
    by_key = {key: (text, colour) for key, text, colour in faces}
    hues = {key: int(key[4:8], 16) % 360 for key in keys}
    assert sorted(by_key) == sorted(keys) and all(by_key[k][0] == "A" for k in keys)
    colours = [(key, *by_key[key]) for key in keys]
    # hsl(H 65% 40%) with H from the key: told apart, unless the two random keys share a
    # hue (1 run in 360; CI met one) or sit a degree apart, which rounding to RGB may merge
    apart = min((hues[keys[0]] - hues[keys[1]]) % 360, (hues[keys[1]] - hues[keys[0]]) % 360)
    assert colours[0][2] != colours[1][2] or apart < 2, (colours, apart)
    assert (
        await page.evaluate(
            "(hue) => { const d = document.createElement('div');"
            " d.style.backgroundColor = `hsl(${hue} 65% 40%)`; return d.style.backgroundColor; }",
            hues[keys[0]],
        )
        == colours[0][2]
    )

    # The second Ana leaves; a newcomer still reads her name from history, not a key.
    await second.leave(room2)
    await page.wait_for_selector(f"#messages li[data-left='{keys[1]}']")
    newcomer = await open_chat(node, "late", room=ROOM)
    await newcomer.wait_for_selector(
        f"#messages li.msg .who[data-key='{keys[1]}']:text-is('Ana ·{keys[1][:4]}')", timeout=20_000
    )
    # A rename shows on every message of hers, and the other Ana needs no tag any more.
    chat(room1, "call me Ana Lima now", "Ana Lima")
    await newcomer.wait_for_selector(
        f"#messages li.msg .who[data-key='{keys[0]}']:text-is('Ana Lima')"
    )
    await newcomer.wait_for_selector(f"#messages li.msg .who[data-key='{keys[1]}']:text-is('Ana')")
    assert (
        await newcomer.text_content(f"#messages li.msg[data-author='{keys[0]}'] .avatar >> nth=-1")
        == "AL"
    )


# --- what a member writes stays text; only http(s) becomes a link ---


async def test_only_http_links_are_made_and_markup_stays_text(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    (node,) = await signaling_mesh(1)
    _, room = await python_in_room(peers, node, "ana")
    page = await open_chat(node, "you", room=ROOM)
    await next_of(room, Connected, key=await browser_key(page))
    text = (
        '<img src=x onerror="window.owned=1"> javascript:alert(1) data:text/html,hi '
        "ftp://example.org/f (see https://example.org/a_(b)), http://example.org/x."
    )
    chat(room, text, "<b>Ana</b>")
    body = await page.wait_for_selector("#messages li.msg .body")
    assert await body.text_content() == text
    links = await body.eval_on_selector_all(
        "a", "links => links.map(a => [a.href, a.rel, a.target, a.textContent])"
    )
    assert links == [
        ["https://example.org/a_(b)", "noopener noreferrer", "_blank", "https://example.org/a_(b)"],
        ["http://example.org/x", "noopener noreferrer", "_blank", "http://example.org/x"],
    ]
    assert await body.eval_on_selector_all("img", "imgs => imgs.length") == 0
    assert await page.evaluate("window.owned") is None
    assert await page.inner_text("#messages li.msg .who") == "<b>Ana</b>"


# --- a hidden tab counts what arrived; desktop notifications only when asked for ---

# Visibility as a background tab has it, and a Notification that records what the
# page does with it (headless Chromium has no desktop to show one on).
HIDDEN_TAB = """
(() => {
  let hidden = false;
  const state = () => (hidden ? "hidden" : "visible");
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: state });
  window.setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
  window.noticeLog = { asked: 0, shown: [] };
  class RecordedNotification {
    static permission = "default";
    static async requestPermission() {
      window.noticeLog.asked += 1;
      RecordedNotification.permission = "granted";
      return "granted";
    }
    constructor(title, options) {
      window.noticeLog.shown.push({ title, body: options.body });
    }
    close() {}
  }
  window.Notification = RecordedNotification;
})();
"""


async def test_a_hidden_tab_counts_unread_messages_in_its_title(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    (node,) = await signaling_mesh(1)
    _, room = await python_in_room(peers, node, "ana")
    page = await open_chat(node, "you", room=ROOM, init=HIDDEN_TAB)
    await next_of(room, Connected, key=await browser_key(page))
    assert await page.title() == "pagemesh"
    assert await page.evaluate("window.noticeLog.asked") == 0  # nothing asked on load

    # Opting in asks for permission on that click, not before.
    await page.click("#notify")
    await page.wait_for_function("window.noticeLog.asked === 1")
    assert await page.is_checked("#notify")

    await page.evaluate("window.setHidden(true)")
    for text in ["one", "two", "three"]:
        chat(room, text, "Ana")
    await page.wait_for_function("document.title === '(3) pagemesh'", timeout=10_000)
    shown = await page.evaluate("window.noticeLog.shown")
    assert shown == [{"title": "Ana", "body": t} for t in ["one", "two", "three"]]

    # Back to the tab: the count is read; a message while visible changes nothing.
    await page.evaluate("window.setHidden(false)")
    await page.wait_for_function("document.title === 'pagemesh'")
    chat(room, "four", "Ana")
    await page.wait_for_selector("#messages li.msg .body:text-is('four')")
    assert await page.title() == "pagemesh"
    assert len(await page.evaluate("window.noticeLog.shown")) == 3
    # The live region says what arrived, for a screen reader.
    assert await page.get_attribute("#announce", "aria-live") == "polite"
    assert await page.inner_text("#announce") == "Ana: four"

    # Opting out holds: hidden again, counted in the title, no notification.
    await page.click("#notify")
    await page.evaluate("window.setHidden(true)")
    chat(room, "five", "Ana")
    await page.wait_for_function("document.title === '(1) pagemesh'", timeout=10_000)
    assert len(await page.evaluate("window.noticeLog.shown")) == 3


# --- everything from the keyboard ---


async def tab_to(page: Any, selector: str, limit: int = 60) -> None:
    """Press Tab until `selector` has the focus (at most `limit` times)."""
    for _ in range(limit):
        if await page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


async def focus_is_visible(page: Any) -> bool:
    style: dict[str, str] = await page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return {style: s.outlineStyle, width: s.outlineWidth}; })()"
    )
    return style["style"] != "none" and style["width"] not in ("0px", "")


async def test_keyboard_alone_joins_sends_replies_reacts_shares_and_leaves(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    ana, room = await python_in_room(peers, node, "ana", accept_files_to=tmp_path / "inbox")
    page = await open_chat(node, "you")  # the start page: no room yet
    assert await page.is_disabled("#text")

    await tab_to(page, "#room-url")
    assert await focus_is_visible(page)
    await page.keyboard.type(ROOM)
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#leave:not([hidden])", timeout=15_000)
    me = await browser_key(page)
    await next_of(room, Connected, key=me)
    assert await page.evaluate("document.activeElement.id") == "text"  # ready to type
    assert await page.is_visible("#room-quiet")  # nothing written yet: what to do

    await page.keyboard.type("hello from the keyboard")
    await page.keyboard.press("Enter")
    assert (await next_of(room, Message, mine=False)).text == "hello from the keyboard"
    assert await page.is_hidden("#room-quiet")
    await page.keyboard.type("two")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("lines")
    await page.keyboard.press("Enter")
    assert (await next_of(room, Message, mine=False)).text == "two\nlines"
    assert await page.input_value("#text") == ""

    # Reply to Ana's message and react to it, all by Tab and Enter.
    asked = chat(room, "tea or coffee?", "Ana")
    ana_message = f"#messages li.msg[data-author='{ana.public_key.hex()}']"
    await page.wait_for_selector(f"{ana_message} .body:text-is('tea or coffee?')")
    # The transcript is one Tab stop: Up reaches the newest message, Tab its Reply.
    await tab_to(page, "#messages")
    await page.keyboard.press("End")  # the list's own End scrolls it; ours goes to the last
    await page.keyboard.press("ArrowDown")
    assert await page.evaluate("(s) => document.activeElement.matches(s)", ana_message)
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "reply"
    assert await focus_is_visible(page)
    assert await page.is_visible(f"{ana_message} .actions")  # shown while focused
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#reply-bar:not([hidden]):has-text('Replying to Ana')")
    assert await page.evaluate("document.activeElement.id") == "text"
    await page.keyboard.type("tea, of course")
    await page.keyboard.press("Enter")
    reply = await next_of(room, Message, mine=False)
    assert json.loads(said(room, reply).body) == {
        "text": "tea, of course",
        "name": "you",
        "re": {"author": ana.public_key.hex(), "seq": asked.seq},
    }
    await page.wait_for_selector("#messages li.msg.mine .quote:has-text('tea or coffee?')")
    assert await page.is_hidden("#reply-bar")

    await tab_to(page, f"{ana_message} button.react")
    label = "document.activeElement.getAttribute('aria-label')"
    assert await page.evaluate(label) == "React to Ana"  # whose message, as Reply says
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f"{ana_message} .picker")
    assert (
        await page.evaluate("document.activeElement.getAttribute('aria-label')")
        == "React with thumbs up"
    )
    await page.keyboard.press("Enter")
    chip = f"{ana_message} .reactions button[aria-pressed=true]"
    await page.wait_for_selector(f"{chip}:has-text('👍 1')")
    reaction = said(room, await next_of(room, Message, mine=False))
    assert (reaction.kind, json.loads(reaction.body)["emoji"]) == ("reaction", "👍")
    await tab_to(page, chip)  # the chip toggles it off again
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f"{ana_message} .reactions", state="hidden")

    # The file picker is a real button.
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"keyboard only\n" * 100)
    await tab_to(page, "#file-button")
    assert await focus_is_visible(page)
    async with page.expect_file_chooser() as chooser:
        await page.keyboard.press("Enter")
    await (await chooser.value).set_files(str(upload))
    done = await next_of(room, FileDone, within=20)
    assert done.path.read_bytes() == upload.read_bytes()

    await tab_to(page, "#leave")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#room-title:text-is('No room yet')")
    await next_of(room, MemberLeft, key=me)
    assert await page.evaluate("location.hash") == ""
    assert await page.evaluate("document.activeElement.id") == "room-url"
    assert await page.is_disabled("#text")
    assert await page.locator("#messages li").count() == 0


# --- the node never learns the page's URL ---

SECRET = "https://example.org/secret-tea-room"
OLD_SECRET = "https://example.org/an-old-link-room"


@dataclasses.dataclass
class NodeEars:
    """Everything a node received over HTTP (request lines and headers), and what one page
    sent it over WebSockets, as text."""

    requests: list[str] = dataclasses.field(default_factory=list)
    frames: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def listen(self, name: str) -> Callable[[Any], None]:
        sent = self.frames.setdefault(name, [])

        def watch(page: Any) -> None:
            def on_socket(ws: Any) -> None:
                sent.append(f"open {ws.url}")
                ws.on("framesent", lambda payload: sent.append(str(payload)))

            page.on("websocket", on_socket)

        return watch

    def heard(self, text: str, frames_of: str) -> list[str]:
        needle = text.lower()
        return [r for r in self.requests + self.frames[frames_of] if needle in r.lower()]


@pytest.fixture
def ears(monkeypatch: pytest.MonkeyPatch) -> NodeEars:
    """Every aiohttp application made from now on records its requests (the node's)."""
    heard = NodeEars()
    make = web.Application

    @web.middleware
    async def record(request: web.Request, handler: Any) -> Any:
        headers = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        heard.requests.append(f"{request.method} {request.path_qs} | {headers}")
        return await handler(request)

    def application(*args: Any, middlewares: Any = (), **kwargs: Any) -> web.Application:
        return make(*args, middlewares=[record, *middlewares], **kwargs)

    monkeypatch.setattr(web, "Application", application)
    return heard


async def test_the_transcript_is_one_tab_stop_whatever_it_holds(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    # Every message put Reply and React (and its links) in the Tab order: past twenty
    # messages the message box was over forty Tabs from the list.
    (node,) = await signaling_mesh(1)
    _ana, room = await python_in_room(peers, node, "ana")
    page = await open_chat(node, "you", room=ROOM)
    await next_of(room, Connected, key=await browser_key(page))
    for n in range(20):
        chat(room, f"message {n} https://example.org/{n}", "Ana")
    await page.locator("#messages li.msg:has-text('message 19')").wait_for()
    await page.focus("#messages")
    tabs = 0
    while not await page.evaluate("document.activeElement.id === 'text'"):
        await page.keyboard.press("Tab")
        tabs += 1
        assert tabs < 10, "the message box is far from the transcript"
    await page.focus("#messages")
    await page.keyboard.press("ArrowUp")  # the newest, then the one before it
    await page.keyboard.press("ArrowUp")
    second = await page.evaluate("document.activeElement.querySelector('.body').textContent")
    assert "message 18" in second
    await page.keyboard.press("Tab")  # its link, then its Reply
    assert await page.evaluate("document.activeElement.href") == "https://example.org/18"


async def test_a_room_that_opens_while_the_name_is_typed_leaves_the_keystrokes_there(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    # A newcomer typed their name while the page joined: the room took the focus midway,
    # the rest of the name went to the message box and Enter posted it to the room.
    (node,) = await signaling_mesh(1)
    _, room = await python_in_room(peers, node, "ana")
    page = await open_chat(node, "you")  # the start page: no room yet
    await page.fill("#room-url", ROOM)
    await page.click("#name")
    await page.keyboard.press("ControlOrMeta+a")
    await page.keyboard.type("nin")
    # the room opens now, the focus still in the name field (as a room in the address does)
    await page.evaluate("document.getElementById('join-form').requestSubmit()")
    await page.wait_for_selector("#leave:not([hidden])", timeout=15_000)
    await next_of(room, Connected, key=await browser_key(page))
    assert await page.evaluate("document.activeElement.id") == "name"
    await page.keyboard.type("a-lopez")
    await page.keyboard.press("Enter")
    assert await page.input_value("#name") == "nina-lopez"
    assert await page.input_value("#text") == ""
    await page.keyboard.press("Tab")  # the name is taken when the field is left
    await page.wait_for_function("window.pagemesh.peer.name === 'nina-lopez'")
    assert await page.locator("#messages li.msg.mine").count() == 0


async def test_the_room_url_travels_in_the_fragment_and_never_reaches_the_node(
    ears: NodeEars, signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    (node,) = await signaling_mesh(1)
    _, room = await python_in_room(peers, node, "ana", url=SECRET)
    page = await open_chat(node, "you", room=SECRET, watch=ears.listen("new"))
    await next_of(room, Connected, key=await browser_key(page))
    await page.fill("#text", "hello")
    await page.press("#text", "Enter")
    assert (await next_of(room, Message, mine=False)).text == "hello"
    await page.click("#leave")
    await page.wait_for_selector("#room-title:text-is('No room yet')")

    assert any(room.key.hex() in frame for frame in ears.frames["new"])  # the join, by hash
    assert any(r.startswith("GET /web/js/app.js") for r in ears.requests)  # the node was heard
    assert ears.heard("secret-tea-room", "new") == []

    # An old link (`?room=`) is rewritten into the fragment before the page connects: the
    # request for the page itself carried it (the browser sent it), nothing after that.
    old = await open_chat(
        node,
        "old",
        url=page_url(node, None, f"name=old&room={quote(OLD_SECRET, safe='')}&group=1"),
        watch=ears.listen("old"),
    )
    await old.wait_for_selector("#leave:not([hidden])", timeout=15_000)
    assert await old.evaluate("location.search") == "?name=old"
    assert await old.evaluate("location.hash") == "#room=" + quote(OLD_SECRET, safe="")
    heard = ears.heard("an-old-link-room", "old")
    assert len(heard) == 1 and heard[0].startswith("GET /?name=old&room="), heard
    # A room link opened in the same tab (only the fragment changes) goes there.
    await old.evaluate("location.hash = '#room=' + encodeURIComponent('https://example.org/next')")
    await old.wait_for_selector("#room-title:text-is('https://example.org/next')", timeout=15_000)
    # The invite link the page hands out keeps the room in the fragment too.
    invite = await old.evaluate(
        "import('/web/js/address.js').then(a => a.inviteLink(location,"
        " {room: window.pagemesh.room.url, friend: window.pagemesh.peer.keyHex}))"
    )
    assert "?" not in invite and "#room=" in invite and "&friend=" in invite


# --- an idle page stays connected ---

IDLE = 5.0  # the node's idle timeout here (60 s by default): three of them pass idle


async def stays_connected(page: Any, seconds: float) -> None:
    """Watch the page for `seconds`: connected throughout, no banner, no reconnection."""
    log_before = await page.evaluate("window.pagemesh.statusLog.length")
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        assert await page.get_attribute("#status", "data-state") == "connected"
        assert await page.is_hidden("#banner"), await page.inner_text("#banner")
        await asyncio.sleep(0.5)
    assert await page.evaluate("window.pagemesh.statusLog.length") == log_before


async def test_an_idle_page_stays_connected_with_no_room_and_in_one(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    (node,) = await signaling_mesh(
        1, limits=dataclasses.replace(SessionLimits(), idle_timeout=IDLE)
    )
    assert node.config.limits.idle_timeout == IDLE
    page = await open_chat(node, "you")  # the start page
    await page.wait_for_selector("#status[data-state=connected]", timeout=10_000)
    await stays_connected(page, 3 * IDLE)
    assert len(node.clients) == 1

    _, room = await python_in_room(peers, node, "ana")
    await page.fill("#room-url", ROOM)
    await page.press("#room-url", "Enter")
    me = await browser_key(page)
    await next_of(room, Connected, key=me)
    await stays_connected(page, 3 * IDLE)
    assert me in room.members  # still seated: the node never dropped it
    await page.fill("#text", "still here")
    await page.press("#text", "Enter")
    assert (await next_of(room, Message, mine=False)).text == "still here"


async def test_an_address_typed_without_https_joins_that_page(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    # The box was type=url: "example.org/post", as people type addresses, met the
    # browser's "Please enter a URL." and joined nothing.
    (node,) = await signaling_mesh(1)
    _, room = await python_in_room(peers, node, "ana")
    page = await open_chat(node, "you")
    await page.fill("#room-url", ROOM.removeprefix("https://"))
    await page.press("#room-url", "Enter")
    await next_of(room, Connected, key=await browser_key(page))
    assert await page.input_value("#room-url") == ROOM


# --- accessibility ---

# What every control needs, checked without axe: a name a screen reader can say, a
# place in the keyboard's order (no positive tabindex), and nothing focusable hidden.
OWN_CHECKS = """
(() => {
  const problems = [];
  const visible = (el) =>
    el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const named = (el) => {
    if (el.getAttribute("aria-label")?.trim()) return true;
    const by = el.getAttribute("aria-labelledby");
    const text = (id) => document.getElementById(id)?.textContent.trim();
    if (by && by.split(/\\s+/).some(text)) return true;
    if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return true;
    if (["BUTTON", "A", "SUMMARY"].includes(el.tagName) && el.textContent.trim()) return true;
    return Boolean(el.getAttribute("title")?.trim());
  };
  const controls = "button, input, textarea, select, a[href], summary, [tabindex]";
  for (const el of document.querySelectorAll(controls)) {
    const what = `${el.tagName.toLowerCase()}#${el.id || "?"}.${el.className || ""}`;
    if (el.tabIndex > 0) problems.push(`${what}: positive tabindex`);
    if (el.type === "file" && el.hidden) continue;  // opened by its button
    if (!visible(el) || el.closest("[hidden]")) continue;
    if (!["LI", "UL"].includes(el.tagName) && !named(el)) problems.push(`${what}: no name`);
  }
  for (const region of document.querySelectorAll("[aria-live]")) {
    const live = region.getAttribute("aria-live");
    if (!["polite", "assertive", "off"].includes(live)) problems.push(`aria-live=${live}`);
  }
  return problems;
})()
"""
SERIOUS = ("serious", "critical")
AXE_FOUND = AXE.exists()
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


async def accessibility_problems(page: Any, where: str) -> list[str]:
    """axe-core's serious and critical violations (when installed), and our own checks."""
    problems = [f"{where}: {p}" for p in await page.evaluate(OWN_CHECKS)]
    if AXE_FOUND:
        if not await page.evaluate("typeof window.axe === 'object'"):
            await page.add_script_tag(path=str(AXE))
        result = await page.evaluate(
            "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
        )
        for violation in result["violations"]:
            if violation["impact"] in SERIOUS:
                targets = [n["target"] for n in violation["nodes"]][:5]
                problems.append(f"{where}: {violation['id']} ({violation['impact']}) {targets}")
    return problems


async def test_accessibility_at_desktop_phone_and_200_percent_zoom(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat, tmp_path: Path
) -> None:
    if not AXE_FOUND:
        print(f"axe-core not found at {AXE} (make test installs it with npm): own checks only")
    (node,) = await signaling_mesh(1)
    _, room = await python_in_room(peers, node, "ana")
    start = await open_chat(node, "you")
    problems = await accessibility_problems(start, "start page")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    page = await open_chat(node, "you", room=ROOM)
    await next_of(room, Connected, key=await browser_key(page))
    first = chat(room, "hello, see https://example.org/tea", "Ana")
    chat(room, "a reply", "Ana", reply_to=MessageRef(first.author, first.seq))
    await room.react(MessageRef(first.author, first.seq), "👍")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"not an image, so the page asks\n")
    await room.send_file(notes)
    await page.wait_for_selector("#messages li.file button.accept")
    await page.wait_for_selector("#messages li.msg .reactions button:has-text('👍 1')")
    await page.click("#groups summary")
    await page.wait_for_selector("#group-list li")
    message = page.locator("#messages li.msg").first
    await message.locator("button.reply").focus()
    await page.keyboard.press("Enter")
    await message.locator("button.react").focus()
    await page.keyboard.press("Enter")  # the emoji picker is open during the scan
    await page.wait_for_selector("#messages .picker")
    problems += await accessibility_problems(page, "desktop")

    for where, viewport, scale in [
        ("phone", PHONE, 1),
        ("200% zoom", {"width": 640, "height": 400}, 2),
    ]:
        zoomed = await (
            await page.context.browser.new_context(
                viewport=viewport, device_scale_factor=scale, bypass_csp=True
            )
        ).new_page()
        await zoomed.goto(page_url(node, {"room": ROOM}, "name=zoomed"))
        await zoomed.wait_for_selector("#leave:not([hidden])", timeout=15_000)
        await zoomed.wait_for_selector("#messages li.msg .body:text-is('a reply')", timeout=15_000)
        problems += await accessibility_problems(zoomed, where)
        # Nothing is cut off sideways, and every control can be reached and seen.
        assert await zoomed.evaluate("document.documentElement.scrollWidth <= innerWidth"), where
        for control in [
            "#room-url",
            "#name",
            "#leave",
            "#text",
            "#file-button",
            "#send",
            "#notify",
        ]:
            # a phone folds the join box ("Room") and the notifications ("⋯") away:
            # their summaries, reached by the keyboard, unfold them
            fold = {"#room-url": "#room-switch", "#notify": "#more"}.get(control)
            folded = fold is not None and not await zoomed.locator(control).is_visible()
            if folded:
                await zoomed.locator(f"{fold} > summary").focus()
                await zoomed.keyboard.press("Enter")
            await zoomed.locator(control).scroll_into_view_if_needed()
            assert await zoomed.locator(control).is_visible(), f"{control} at {where}"
            if folded:
                await zoomed.keyboard.press("Escape")
                assert not await zoomed.locator(control).is_visible(), f"{control} at {where}"
        await zoomed.screenshot(path=str(ARTIFACTS / f"chat-a11y-{where.split()[0]}.png"))
        if where == "phone":
            await zoomed.click("#people-toggle")
            await zoomed.wait_for_selector("#members li[data-key]")
            assert await zoomed.get_attribute("#people-toggle", "aria-expanded") == "true"
        await zoomed.context.close()
    assert problems == []


# --- the README's pictures: a short conversation at desktop and phone sizes ---


def teapot_png(path: Path) -> Path:
    """A small picture to share (drawn here: nothing is fetched)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 200), "#f3efe6")
    draw = ImageDraw.Draw(image)
    draw.ellipse((90, 60, 230, 170), fill="#6b8f71")  # the pot
    draw.rectangle((140, 45, 180, 65), fill="#4d6b52")  # its lid
    draw.polygon([(225, 100), (290, 70), (285, 85), (228, 125)], fill="#6b8f71")  # spout
    draw.arc((40, 80, 110, 150), 90, 270, fill="#4d6b52", width=10)  # handle
    image.save(path)
    return path


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_a_conversation_as_the_readme_shows_it(
    size: str,
    signaling_mesh: NodeFactory,
    peers: PeerFactory,
    open_chat: OpenChat,
    tmp_path: Path,
) -> None:
    a, b = await signaling_mesh(2)
    ana, ana_room = await python_in_room(peers, a, "Ana")
    bo, bo_room = await python_in_room(peers, b, "Bo")
    page = await open_chat(a, "Kim", room=ROOM, viewport=DESKTOP if size == "desktop" else PHONE)
    kim = await browser_key(page)
    await next_of(ana_room, Connected, key=kim)
    await next_of(bo_room, Connected, key=kim)

    asked = await ana_room.say("Has anyone tried the oolong from https://example.org/tea/oolong ?")
    await page.wait_for_selector("#messages li.msg >> nth=0")
    tip = await bo_room.say("Yes! 90 °C, three short steepings.\nThe second one is the best.")
    await page.wait_for_selector("#messages li.msg >> nth=1")
    await bo_room.send_file(teapot_png(tmp_path / "teapot.png"))
    await page.wait_for_selector('#messages li.file img[alt="teapot.png"]', timeout=20_000)
    await ana_room.react(MessageRef(tip.author, tip.seq), "👍")

    bo_message = page.locator(f"#messages li.msg[data-author='{bo.public_key.hex()}']").first
    await bo_message.hover()
    await bo_message.locator("button.reply").click()
    await page.keyboard.type("Thanks, trying it tonight")
    await page.keyboard.press("Enter")
    said_by_kim = await next_of(bo_room, Message, mine=False, author=kim)
    assert said_by_kim.text == "Thanks, trying it tonight"
    await bo_message.hover()
    await bo_message.locator("button.react").click()
    await bo_message.locator(".picker button[aria-label='React with heart']").click()
    await bo_message.locator(".reactions button:has-text('👍 1')").wait_for()
    await bo_message.locator(".reactions button[aria-pressed=true]:has-text('❤️ 1')").wait_for()
    await ana_room.say("🎉 enjoy", reply_to=MessageRef(asked.author, asked.seq))
    await page.wait_for_selector("#messages li.msg .body:text-is('🎉 enjoy')")
    await page.wait_for_selector(
        f"#members li[data-key='{ana.public_key.hex()}'] .name:text-is('Ana')", state="attached"
    )

    await page.evaluate("document.activeElement?.blur()")
    await page.mouse.move(0, 0)
    assert await in_viewport(page, "#compose")
    assert await in_viewport(page, "#messages li.msg:last-of-type")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"conversation-{size}.png"))


# --- typing indicators: ephemeral control frames, shown a few seconds at most ---


async def test_typing_shows_under_the_messages_and_ends_with_the_message(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_chat: OpenChat
) -> None:
    a, b = await signaling_mesh(2)
    _, py_room = await python_in_room(peers, b, "Py")
    kim = await open_chat(a, "Kim", room=ROOM)
    lee = await open_chat(b, "Lee", room=ROOM)
    kim_key, lee_key = await browser_key(kim), await browser_key(lee)
    await next_of(py_room, Connected, key=kim_key)
    await next_of(py_room, Connected, key=lee_key)
    await kim.wait_for_selector(
        f"#members li[data-key='{lee_key.hex()}'] .path[data-path=direct]", state="attached"
    )

    await kim.focus("#text")
    await kim.keyboard.type("I think the sec")
    await lee.wait_for_selector("#typing:text-is('Kim is typing…')")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await lee.screenshot(path=str(ARTIFACTS / "typing.png"))
    # one frame per few seconds however fast she types
    sent = await kim.evaluate("window.pagemesh.room.typing.sentAt")
    await kim.keyboard.type("ond steeping")
    assert await kim.evaluate("window.pagemesh.room.typing.sentAt") == sent
    await kim.keyboard.press("Enter")
    await lee.wait_for_selector("#messages li.msg .body:text-is('I think the second steeping')")
    assert await lee.text_content("#typing") == ""
    # the Python peer took the frame and said nothing of it
    said_by_kim = await next_of(py_room, Message, author=kim_key)
    assert said_by_kim.text == "I think the second steeping"
    assert not [k for k in py_room.core.counters if "drop" in k]

    # a typist who stops is no longer shown after a few seconds, on the page's own timer
    await lee.focus("#text")
    await lee.keyboard.type("Agreed")
    await kim.wait_for_selector("#typing:text-is('Lee is typing…')")
    await kim.wait_for_selector("#typing:text-is('')", timeout=10_000)


async def test_the_typing_core_on_virtual_time(
    open_chat: OpenChat, signaling_mesh: NodeFactory
) -> None:
    (node,) = await signaling_mesh(1)
    page = await open_chat(node, "Kim")
    result = await page.evaluate(
        """async () => {
            const { Typing, typingLine } = await import('/web/js/typing.js');
            const t = new Typing({ sendEvery: 3, showFor: 6, maxTypists: 3 });
            const out = {};
            out.sends = [0, 1, 2.9, 3, 3.1, 6.5].map((now) => t.typed(now));
            t.sent();
            out.afterSend = t.typed(7);
            out.first = t.heard('a', 10);
            out.again = t.heard('a', 11);
            t.heard('b', 12);
            out.typists = t.typists(12.5);
            out.next = t.nextChange(12.5);
            out.expired = t.typists(17.5);
            out.stopped = t.stopped('b', 17.5);
            out.stoppedAgain = t.stopped('b', 17.5);
            for (const k of ['c', 'd', 'e', 'f']) t.heard(k, 20);
            out.bounded = t.heardAt.size;
            const who = ['Ana', 'Bo', 'Cy', 'Di', 'Ed'];
            out.lines = [0, 1, 2, 3, 5].map((n) => typingLine(who.slice(0, n)));
            return out;
        }"""
    )
    assert result["sends"] == [True, False, False, True, False, True]
    assert result["afterSend"] is True
    assert (result["first"], result["again"]) == (True, False)
    assert result["typists"] == ["b", "a"]
    assert result["next"] == 17
    assert result["expired"] == ["b"]
    assert (result["stopped"], result["stoppedAgain"]) == (True, False)
    assert result["bounded"] == 3
    assert result["lines"] == [
        "",
        "Ana is typing…",
        "Ana and Bo are typing…",
        "Ana, Bo and Cy are typing…",
        "Ana, Bo and 3 others are typing…",
    ]


async def test_a_message_arriving_before_the_scroll_event_does_not_pull_the_reader_down(
    open_chat: OpenChat, signaling_mesh: NodeFactory
) -> None:
    # The scroll event comes a frame after the reader scrolled; a message that lands in
    # between is counted on the pill, not followed (this raced on a loaded machine).
    (node,) = await signaling_mesh(1)
    page = await open_chat(node, "Kim")
    result = await page.evaluate(
        """async () => {
            const { TranscriptFollower } = await import('/web/js/follow.js');
            const list = document.createElement('ul');
            list.style.cssText = 'height: 100px; overflow-y: auto';
            const pill = document.createElement('button');
            document.body.append(list, pill);
            const follower = new TranscriptFollower(list, pill);
            const add = () => {
                const li = document.createElement('li');
                li.style.height = '40px';
                list.append(li);
                follower.added({ isNew: true });
            };
            for (let i = 0; i < 20; i++) add();
            const followed = list.scrollTop;
            list.style.height = '300px';  // the header reflows: the list grows ...
            add();                          // ... and it still follows
            const grown = list.scrollHeight - list.scrollTop - list.clientHeight;
            list.scrollTop = 0;  // the reader scrolls up ...
            add();               // ... and a message lands before the scroll event
            const out = { followed, grown, top: list.scrollTop, pill: pill.hidden,
                          text: pill.textContent };
            list.remove(); pill.remove();
            return out;
        }"""
    )
    assert result["followed"] > 600
    assert result["grown"] < 2
    assert result["top"] == 0
    assert result["pill"] is False
    assert result["text"] == "1 new message ↓"
