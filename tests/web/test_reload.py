"""A browser that reloads keeps its identity, its history and its seq, and gets
what was said while it was away: nothing lost, nothing twice."""

from __future__ import annotations

from peer.peer import Message

from .conftest import MeetFactory, browser_order, next_of, order, say

ROOM = "https://example.org/reload"


async def test_reload_resumes_without_loss_or_duplicates(meet: MeetFactory) -> None:
    m = await meet(ROOM)
    room, page, key = m.room, m.page, m.browser.hex()
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
