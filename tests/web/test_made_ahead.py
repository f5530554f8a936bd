"""A join's first connection is made while the node seats the page (docs/protocol.md
5.0, "Connections made ahead"): the first offer takes it and goes before the page
hears of the seat; with nobody to offer to it is closed once the join is answered;
it has the servers the node hands out. Every RTCPeerConnection the page makes is
counted by a script that runs before the page's own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peer.peer import Connected
from signaling.node import SignalingNode
from tests.peer.conftest import PeerFactory
from tests.peer.test_relayed_path import relay_node  # noqa: F401  (fixture)
from tests.signaling.conftest import NodeFactory

from .conftest import next_of

COUNT_CONNECTIONS = """
window.__connections = [];
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Native {
    constructor(...args) {
        super(...args);
        window.__connections.push(this);
    }
};
"""

# Join `url` from the console (no room in the address, so the page joined nothing
# before): the times the page heard of the seat, and what became of every connection.
JOIN = """async ([url, holdMax]) => {
    const peer = window.pagemesh.peer;
    peer.config.holdMax = holdMax;
    let seatedAt = null;
    peer.on((event) => { if (event.type === 'seated') seatedAt ??= performance.now() / 1000; });
    const room = await peer.join(url);
    return { seatedAt, joined: room.timings.joined, warm: peer.warm !== null };
}"""
CONNECTIONS = """() => window.__connections.map((pc) => ({
    state: pc.signalingState,
    urls: pc.getConfiguration().iceServers.map((s) => [s.urls].flat()).flat(),
}))"""

Opener = Callable[[SignalingNode], Awaitable[Any]]


@pytest.fixture
async def open_counting(chromium: Any) -> Opener:
    """`await open_counting(node)`: the node's page, no room yet, connections counted."""

    async def open_(node: SignalingNode) -> Any:
        context = await chromium.new_context(bypass_csp=True)
        await context.add_init_script(COUNT_CONNECTIONS)
        page = await context.new_page()
        await page.goto(node.url.replace("ws://", "http://") + "/?name=ahead")
        await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        return page

    return open_


async def test_the_first_offer_takes_the_connection_made_ahead_and_goes_first(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_counting: Opener
) -> None:
    url = "https://example.org/ahead"
    a, b = await signaling_mesh(2)
    python = await peers("py", [b.url])
    room = await python.join(url)
    page = await open_counting(a)
    # a generous hold: the order below must not depend on how busy the machine is
    seat = await page.evaluate(JOIN, [url, 30])
    key = python.public_key.hex()
    link = await page.evaluate(
        "(key) => window.pagemesh.peer.rooms.values().next().value.links.get(key).timings", key
    )
    assert link["made"] < seat["joined"]  # made while the node seated us
    assert link["described"] <= seat["seatedAt"]  # signed before the page heard
    assert not seat["warm"]
    browser = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    await next_of(room, Connected, key=browser)
    assert [c["state"] for c in await page.evaluate(CONNECTIONS)] == ["stable"]


async def test_with_nobody_to_offer_to_it_is_closed_when_the_join_is_answered(
    signaling_mesh: NodeFactory, open_counting: Opener
) -> None:
    (node,) = await signaling_mesh(1)
    page = await open_counting(node)
    seat = await page.evaluate(JOIN, ["https://example.org/alone", 0.05])
    assert not seat["warm"]
    assert [c["state"] for c in await page.evaluate(CONNECTIONS)] == ["closed"]


async def test_it_has_the_servers_the_node_hands_out(
    relay_node: SignalingNode,  # noqa: F811
    open_counting: Opener,
) -> None:
    page = await open_counting(relay_node)
    await page.evaluate(JOIN, ["https://example.org/alone-with-a-relay", 0.05])
    handed = await page.evaluate(
        "() => window.pagemesh.peer.iceServers.map((s) => [s.urls].flat()).flat()"
    )
    assert any(url.startswith("turn") for url in handed), handed
    (made,) = await page.evaluate(CONNECTIONS)
    assert made == {"state": "closed", "urls": handed}
