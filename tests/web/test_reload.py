"""A browser that reloads keeps its identity, its history and its seq, and gets
what was said while it was away: nothing lost, nothing twice."""

from __future__ import annotations

from peer.peer import Connected, Message
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory
from .test_interop import browser_order, next_of, order, say

ROOM = "https://example.org/reload"


async def test_reload_resumes_without_loss_or_duplicates(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    a, b = await signaling_mesh(2)
    py = await peers("py", [b.url])
    room = await py.join(ROOM)
    page = await open_page(a, "browser", room=ROOM)
    key = await page.evaluate("window.pagemesh.peer.keyHex")
    await next_of(room, Connected)
    for i in range(3):
        await say(page, f"before {i}")
    assert [(await next_of(room, Message, mine=False)).seq for _ in range(3)] == [1, 2, 3]
    await room.send("while you were here")
    await page.wait_for_selector("#messages li.msg .body:has-text('while you were here')")

    await page.evaluate("window.pagemesh.room.save()")  # do not wait for the 100 ms debounce
    await page.goto("about:blank")  # the browser leaves; its presence lapses or is replaced
    await room.send("while you were away")

    await page.go_back()  # same profile: same IndexedDB, same key
    await page.wait_for_selector("body[data-ready=true]")
    assert await page.evaluate("window.pagemesh.peer.keyHex") == key
    await page.wait_for_selector(
        "#messages li.msg .body:has-text('while you were away')", timeout=20_000
    )
    await say(page, "after the reload")
    after = await next_of(room, Message, mine=False)
    assert (after.text, after.seq) == ("after the reload", 4)  # seq continued, not reused

    await page.wait_for_function("window.pagemesh.room.transcript().length === 6")
    assert await browser_order(page) == order(room.transcript())
    shown = await page.eval_on_selector_all("#messages li.msg", "nodes => nodes.length")
    assert shown == 6  # history restored once, nothing shown twice
