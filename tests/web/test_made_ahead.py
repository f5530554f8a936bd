"""A join's first connection is made while the node seats the page (docs/protocol.md
5.0, "Connections made ahead"): the first offer takes it and goes before the page
hears of the seat; on a first join the page hears of the seat once that link is open,
and of the link with it, or once `holdOpen` passed when its member never answers;
with nobody to offer to it is closed once the join is answered;
it has the servers the node hands out. Every RTCPeerConnection the page makes is
counted by a script that runs before the page's own."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from peer.peer import Connected
from peer.signaling import SignalingClient
from signaling.config import IceConfig
from signaling.node import SignalingNode
from signaling.rooms import canonical_url, room_key
from tests.peer.conftest import PeerFactory
from tests.peer.test_relayed_path import loopback_relay, relay_node  # noqa: F401  (fixture)
from tests.signaling.conftest import FAST_DHT, FAST_NODE, NodeFactory

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
JOIN = """async ([url, holdMax, holdOpen = 0.25]) => {
    const peer = window.pagemesh.peer;
    Object.assign(peer.config, { holdMax, holdOpen });
    let seatedAt = null;
    const heard = []; // what the page heard, in order, and when its join() returned
    peer.on((event) => {
        if (event.type === 'seated') seatedAt ??= performance.now() / 1000;
        heard.push(event.type === 'connected' ? `connected ${event.key}` : event.type);
    });
    const room = await peer.join(url);
    heard.push('returned');
    return { seatedAt, joined: room.timings.joined, warm: peer.warm !== null, heard };
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


async def meet(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_counting: Opener, url: str
) -> tuple[Any, Any, Any]:
    """A Python peer in `url`'s room at one node, the page (no room yet) at another:
    (page, the Python peer, its room)."""
    a, b = await signaling_mesh(2)
    python = await peers("py", [b.url])
    room = await python.join(url)
    return await open_counting(a), python, room


async def test_the_first_offer_takes_the_connection_made_ahead_and_goes_first(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_counting: Opener
) -> None:
    url = "https://example.org/ahead"
    page, python, room = await meet(signaling_mesh, peers, open_counting, url)
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
    # the one made at open gathered host candidates with no servers: closed for one
    # with the servers the node handed out, itself closed once the join was answered
    blank, made = await page.evaluate(CONNECTIONS)
    assert blank == {"state": "closed", "urls": []}
    assert made == {"state": "closed", "urls": handed}


async def test_with_no_servers_handed_out_it_gathers_from_the_page_opening(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_counting: Opener
) -> None:
    # Host candidates need no server: the connection the page made when it opened has
    # them before it joins, and a node that hands out no servers finds it ready.
    url = "https://example.org/gathered-at-open"
    page, python, _ = await meet(signaling_mesh, peers, open_counting, url)
    await page.evaluate(JOIN, [url, 30])
    timings = await page.evaluate(
        """(key) => {
            const room = window.pagemesh.peer.rooms.values().next().value;
            const link = room.links.get(key);
            return { room: room.timings, link: link.timings, enough: link.gathering.enoughAt };
        }""",
        python.public_key.hex(),
    )
    # offer set, candidates gathered, before the join was asked for
    assert timings["link"]["local"] < timings["room"]["joining"]
    assert timings["enough"] < timings["room"]["joining"]
    assert [c["state"] for c in await page.evaluate(CONNECTIONS)] == ["stable"]


async def test_a_first_join_is_heard_with_its_first_link_open(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_counting: Opener
) -> None:
    # A fresh page draws the room when its join returns: after the link is open, so
    # the drawing does not fall on the answer and the handshakes.
    url = "https://example.org/heard-open"
    page, python, _ = await meet(signaling_mesh, peers, open_counting, url)
    seat = await page.evaluate(JOIN, [url, 30, 30])  # generous: order, not speed
    key = python.public_key.hex()
    link = await page.evaluate(
        "(key) => window.pagemesh.peer.rooms.values().next().value.links.get(key).timings", key
    )
    assert link["open"] <= seat["seatedAt"]
    heard = seat["heard"]
    assert heard.index(f"connected {key}") < heard.index("returned")


async def test_a_member_that_never_answers_holds_the_seat_only_hold_open(
    signaling_mesh: NodeFactory, open_counting: Opener
) -> None:
    # A member seated by a client that never answers an offer (a stranger with a key):
    # the page hears of its seat once holdOpen has passed, its link still not open.
    url = "https://example.org/silent-member"
    (node,) = await signaling_mesh(1)
    silent = await SignalingClient.connect(node.url, SigningKey.generate())
    try:
        await silent.join(room_key(canonical_url(url)))
        page = await open_counting(node)
        seat = await page.evaluate(JOIN, [url, 0.05, 0.5])
        waited = seat["seatedAt"] - seat["joined"]
        assert 0.45 <= waited < 5  # the hold's bound ended it, not connectTimeout (30 s)
        assert not any(event.startswith("connected") for event in seat["heard"])
        opened = await page.evaluate(
            "(key) => window.pagemesh.peer.rooms.values().next().value.links.get(key).open",
            silent.key.hex(),
        )
        assert opened is False
    finally:
        await silent.close()


async def test_a_page_opened_on_a_room_gathers_from_its_welcome_without_asking(
    signaling_mesh: NodeFactory, peers: PeerFactory, chromium: Any
) -> None:
    # The connection is begun when the page opens (its offer made) and set once the
    # welcome hands out the servers: one connection, and no `ice-servers` request.
    url = "https://example.org/ahead-from-the-welcome"
    a, b = await signaling_mesh(2)
    python = await peers("py", [b.url])
    room = await python.join(url)
    context = await chromium.new_context(bypass_csp=True)
    await context.add_init_script(COUNT_CONNECTIONS)
    page = await context.new_page()
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(str(payload))))
    await page.goto(a.url.replace("ws://", "http://") + f"/?name=ahead&room={url}")
    browser = bytes.fromhex(
        await page.evaluate(
            "() => new Promise((ok) => { const p = () => window.pagemesh?.peer?.keyHex;"
            " const t = setInterval(() => { if (p()) { clearInterval(t); ok(p()); } }, 20); })"
        )
    )
    await next_of(room, Connected, key=browser)
    kinds = [json.loads(frame).get("type") for frame in sent if frame.startswith("{")]
    assert "join" in kinds and "ice-servers" not in kinds, kinds
    assert [c["state"] for c in await page.evaluate(CONNECTIONS)] == ["stable"]
    await context.close()


# --- the servers a page keeps for its next opening (gathering.js, serversHint) -------


@pytest.fixture
async def stun_node(tmp_path: Path) -> AsyncIterator[SignalingNode]:
    """A node that hands out a STUN server (the relay's, run beside it) and no TURN."""
    _, relay = await loopback_relay(tmp_path, "relay")
    stun = tuple(url for url in relay.urls if url.startswith("stun:"))
    assert stun, relay.urls
    config = dataclasses.replace(
        FAST_NODE, data_dir=str(tmp_path / "node"), ice=IceConfig(stun_urls=stun)
    )
    node = await SignalingNode.start(config, FAST_DHT)
    yield node
    await node.stop(moving=False)
    await relay.stop()


async def open_twice(page: Any, url: str) -> list[list[dict[str, Any]]]:
    """Join `url`, then open the page again (same browser profile) and join it again: the
    connections each opening made."""
    made = []
    for _ in range(2):
        await page.evaluate(JOIN, [url, 0.05])
        made.append(await page.evaluate(CONNECTIONS))
        await page.reload()
        await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    return made


async def test_a_second_opening_gathers_with_the_stun_servers_it_kept(
    stun_node: SignalingNode, open_counting: Opener
) -> None:
    page = await open_counting(stun_node)
    first, second = await open_twice(page, "https://example.org/alone-with-stun")
    (stun,) = stun_node.config.ice.stun_urls
    # the first opening knew nothing: none, then one made with the welcome's STUN server
    assert [c["urls"] for c in first] == [[], [stun]]
    # the second began with it, and the join took that one
    assert [c["urls"] for c in second] == [[stun]]
    kept = await page.evaluate("localStorage.getItem('pagemesh.servers')")
    assert json.loads(kept) == {"v": 1, "stun": [stun]}


async def test_a_second_opening_at_a_turn_node_waits_for_the_welcome(
    relay_node: SignalingNode,  # noqa: F811
    open_counting: Opener,
) -> None:
    # TURN credentials are minted per client and expire: never kept; the connection made
    # at open waits for the welcome's and is configured with them (one connection).
    page = await open_counting(relay_node)
    first, second = await open_twice(page, "https://example.org/alone-with-a-relay-again")
    assert len(first) == 2 and len(second) == 1
    assert any(url.startswith("turn") for url in second[0]["urls"])
    kept = await page.evaluate("localStorage.getItem('pagemesh.servers')")
    assert json.loads(kept) == {"v": 1, "relay": True}


async def test_a_hint_the_browser_refuses_is_dropped_and_the_page_joins(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_counting: Opener
) -> None:
    # Storage is anyone's on this origin to write: a hint that passes the parser but that
    # RTCPeerConnection refuses costs nothing but the early servers.
    url = "https://example.org/bad-hint"
    page, _, room = await meet(signaling_mesh, peers, open_counting, url)
    await page.evaluate(
        """() => localStorage.setItem('pagemesh.servers',
            JSON.stringify({ v: 1, stun: ['stun:[zz::'] }))"""
    )
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    await page.evaluate(JOIN, [url, 30])
    browser = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    await next_of(room, Connected, key=browser)
