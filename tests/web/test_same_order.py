"""Two browsers and a Python peer talk at once and end with one message order."""

from __future__ import annotations

import asyncio

from peer.peer import Connected, Message
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory, browser_order, next_of, order

ROOM = "https://example.org/three"
EACH = 15


async def test_two_browsers_and_a_python_peer_converge(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    a, b, c = await signaling_mesh(3)
    py = await peers("py", [c.url])
    room = await py.join(ROOM)
    first = await open_page(a, "ada", room=ROOM)
    second = await open_page(b, "bob", room=ROOM)
    for _ in range(2):
        await next_of(room, Connected)
    for page in (first, second):  # each browser sees both others, directly
        await page.wait_for_function(
            "document.querySelectorAll('#members .path[data-path=direct]').length === 2",
            timeout=20_000,
        )

    # Everyone talks at the same time: the browsers through their pages' API.
    async def browser_talks(page: object, name: str) -> None:
        await page.evaluate(  # type: ignore[attr-defined]
            """async ([name, n]) => {
                const sends = [];
                for (let i = 0; i < n; i++) sends.push(window.pagemesh.room.send(`${name} ${i}`));
                await Promise.all(sends);
            }""",
            [name, EACH],
        )

    async def python_talks() -> None:
        for i in range(EACH):
            await room.send(f"py {i}")
            await asyncio.sleep(0)

    await asyncio.gather(browser_talks(first, "ada"), browser_talks(second, "bob"), python_talks())

    total = 3 * EACH
    received = 0
    while received < 2 * EACH:
        if not (await next_of(room, Message)).mine:
            received += 1
    for page in (first, second):
        await page.wait_for_function(
            f"window.pagemesh.room.transcript().length === {total}", timeout=20_000
        )
    expected = order(room.transcript())
    assert len(expected) == total
    assert await browser_order(first) == expected
    assert await browser_order(second) == expected
    # The page shows that order too.
    shown = await first.eval_on_selector_all(
        "#messages li.msg", "nodes => nodes.map(n => [n.dataset.author, +n.dataset.seq])"
    )
    assert [(a, s) for a, s in shown] == expected
