"""The browser's node goes away: the page says so, moves to another node, and the chat goes on."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from peer.peer import Message
from signaling.node import SignalingNode
from tests.signaling.conftest import FAST_DHT

from .conftest import MeetFactory, next_of, say

ROOM = "https://example.org/failover"


async def test_lost_node_is_shown_and_another_node_is_used(meet: MeetFactory) -> None:
    m = await meet(ROOM)
    (a, b), room, page = m.nodes, m.room, m.page
    known = await page.evaluate("window.pagemesh.peer.nodes")
    assert b.url in known  # learned from the welcome (the node directory)

    await a.stop(moving=False)  # as if it crashed: no `moving` frame
    await page.wait_for_function(
        f"document.querySelector('#status').textContent === 'connected to {b.url}'",
        timeout=20_000,
    )
    log = await page.evaluate("window.pagemesh.statusLog")
    assert f"lost lost the node {a.url}; trying others" in log
    assert await page.is_hidden("#banner")  # shown while it was away, gone now
    await page.wait_for_selector("#messages li.note:has-text('moved to node')", timeout=10_000)

    # The data channel never needed the node: the chat goes on both ways.
    await say(page, "still here")
    assert (await next_of(room, Message, mine=False)).text == "still here"
    await room.send("me too")
    await page.wait_for_selector("#messages li.msg .body:has-text('me too')")

    # Every node gone: the page says so and keeps trying; the chat still works.
    await b.stop(moving=False)
    banner = await page.wait_for_selector("#banner:has-text('no signaling node reachable')")
    assert await banner.is_visible()
    await say(page, "nodes are gone, peers are not")
    assert (await next_of(room, Message, mine=False)).text == "nodes are gone, peers are not"


async def test_after_failing_over_the_page_goes_back_to_its_own_node(meet: MeetFactory) -> None:
    # The node the page came from is the person's; one learned from its welcome is a
    # fall-back. Once the page's own node is back, the page returns to it (mesh.js
    # `returnAfter`, shortened here) and the chat goes on.
    m = await meet(ROOM + "/back")
    (a, b), room, page = m.nodes, m.room, m.page
    await page.evaluate(
        "Object.assign(window.pagemesh.peer.mesh.config, { returnAfter: 0.5, returnCap: 1 })"
    )
    port = urlsplit(a.url).port
    await a.stop(moving=False)
    await page.wait_for_function(
        f"document.querySelector('#status').textContent === 'connected to {b.url}'",
        timeout=20_000,
    )
    seeds = (f"127.0.0.1:{b.dht.address[1]}",)
    again = await SignalingNode.start(
        dataclasses.replace(a.config, port=port, bootstrap=seeds), FAST_DHT
    )
    try:
        assert again.url == a.url
        await page.wait_for_function(
            f"document.querySelector('#status').textContent === 'connected to {a.url}'",
            timeout=20_000,
        )
        await say(page, "home again")
        assert (await next_of(room, Message, mine=False)).text == "home again"
    finally:
        await again.stop(moving=False)
