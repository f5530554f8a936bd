"""Offers before seated (docs/protocol.md 2.5.3), from the page's side, as
tests/peer/test_early_offers.py for the Python client: the page offers to the members
its join's `sign` request names, and to those a `members` frame names later, once it
has signed, before `joined`; `joined` offers to no one twice and lets go of a named
member it does not list; a node naming blocked keys, or sending `members` outside a
join, reaches no one. On a first join the page still hears of its seat and its first
link together (5.0, `holdOpen`). Debian's Chromium and real aiortc peers on loopback,
against real signaling nodes (one a DHT holder that stops answering, so the join's
store waits while the link is made) and the stand-in node of tests/peer/layernode.py,
whose `joined` the test holds back so the order is seen, not timed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peer.peer import Connected, MemberLeft
from signaling.node import SignalingNode
from signaling.protocol import MemberList, canonical_url, room_key
from tests.peer.conftest import PeerFactory
from tests.peer.layernode import LayerNode
from tests.peer.test_early_offers import node, nodes, offers_to  # noqa: F401  (fixtures)

from .conftest import PageFactory, next_of

pytestmark = pytest.mark.integration

URL = "https://example.org/early-offers"
ROOM = room_key(canonical_url(URL))

# Join from the console: what the page heard, in order; when `joined` came; each
# link's times (made, open) on the same clock, stamped as each thing happened.
START = """([url]) => {
    const peer = window.pagemesh.peer;
    peer.config.holdOpen = 30; // generous: the order below must not depend on load
    window.__heard = [];
    peer.on((event) => {
        window.__heard.push(event.type === 'connected' ? `connected ${event.key}` : event.type);
    });
    window.__join = peer.join(url).then((room) => {
        window.__heard.push('returned');
        return room;
    });
}"""
LINKS = """() => {
    const room = window.pagemesh.peer.rooms.values().next().value;
    if (room === undefined) return {}; // the join has not made its room yet
    return Object.fromEntries([...room.links].map(([k, l]) => [k, {...l.timings, open: l.open}]));
}"""
JOINED_AT = "() => window.pagemesh.peer.rooms.values().next().value.timings.joined ?? null"
DONE = "async () => { await window.__join; return window.__heard; }"


async def key_of(page: Any) -> bytes:
    return bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))


async def linked_before_joined(page: Any, member: bytes) -> None:
    """Wait for the page's link to `member` to open, `joined` not come yet."""
    async with asyncio.timeout(20):
        while True:
            links = await page.evaluate(LINKS)
            link = links.get(member.hex())
            if link is not None and link["open"]:
                break
            await asyncio.sleep(0.05)
    assert await page.evaluate(JOINED_AT) is None  # `joined` has not come


async def test_the_page_links_to_the_member_its_sign_request_names_before_joined(
    nodes: list[SignalingNode],  # noqa: F811
    peers: PeerFactory,
    open_page: PageFactory,
) -> None:
    a, b = nodes
    python = await peers("py", [a.url])
    room = await python.join(URL)
    page = await open_page(a, "early")
    b.dht._transport.pause_reading()  # type: ignore[union-attr]  # a holder gone quiet
    try:
        await page.evaluate(START, [URL])
        await linked_before_joined(page, python.public_key)
    finally:
        b.dht._transport.resume_reading()  # type: ignore[union-attr]
    heard = await page.evaluate(DONE)
    key = python.public_key.hex()
    # the page heard of its seat and its link together, before its join returned (5.0)
    assert heard.index("seated") < heard.index(f"connected {key}") < heard.index("returned")
    assert heard.count(f"connected {key}") == 1
    links = await page.evaluate(LINKS)
    assert list(links) == [key] and links[key]["open"] < await page.evaluate(JOINED_AT)
    await next_of(room, Connected, key=await key_of(page))


async def test_a_members_frame_names_one_more_member_before_joined(
    node: LayerNode,  # noqa: F811
    peers: PeerFactory,
    open_page: PageFactory,
) -> None:
    alice = await peers("alice", [node.url])
    room_a = await alice.join(URL)
    carol = await peers("carol", [node.url])
    await next_of(await carol.join(URL), Connected)
    node.name_in_sign = [alice.public_key]
    node.name_later = [carol.public_key]
    node.hold_joined = asyncio.Event()
    page = await open_page(node, "early")
    await page.evaluate(START, [URL])
    await linked_before_joined(page, alice.public_key)
    await linked_before_joined(page, carol.public_key)
    node.hold_joined.set()
    heard = await page.evaluate(DONE)
    assert heard.index("seated") < heard.index("returned")
    me = await key_of(page)
    offered = [offers_to(node, k, me) for k in (alice.public_key, carol.public_key)]
    # One each: `joined` offered no more. A member that found the link failed asks for
    # another with a relink (on a loaded machine, ICE consent can lapse): each relink
    # may be answered with one more offer, and nothing else may.
    relinks = [offers_to(node, me, k, "relink") for k in (alice.public_key, carol.public_key)]
    assert all(1 <= n <= 1 + r for n, r in zip(offered, relinks, strict=True)), (
        offered,
        relinks,
    )
    assert set(await page.evaluate(LINKS)) == {alice.public_key.hex(), carol.public_key.hex()}
    await next_of(room_a, Connected, key=await key_of(page))


async def test_a_member_named_early_outside_the_layer_the_page_sits_in_is_let_go(
    node: LayerNode,  # noqa: F811
    peers: PeerFactory,
    open_page: PageFactory,
) -> None:
    alice = await peers("alice", [node.url])
    room_a = await alice.join(URL)
    node.move_on = 1
    node.hold_joined = asyncio.Event()
    page = await open_page(node, "early")
    await page.evaluate(START, [URL])
    await linked_before_joined(page, alice.public_key)
    me = await key_of(page)
    await next_of(room_a, Connected, key=me)
    node.hold_joined.set()
    await page.evaluate(DONE)
    assert await page.evaluate("window.pagemesh.peer.rooms.values().next().value.layer") == 1
    assert await page.evaluate(LINKS) == {}
    counters = await page.evaluate("window.pagemesh.peer.mesh.counters")
    assert counters["named.not_listed"] == 1
    await next_of(room_a, MemberLeft, key=me)


async def test_a_node_naming_blocked_keys_or_members_outside_a_join_reaches_no_one(
    node: LayerNode,  # noqa: F811
    peers: PeerFactory,
    open_page: PageFactory,
) -> None:
    mallory = await peers("mallory", [node.url])
    await mallory.join(URL)
    alice = await peers("alice", [node.url])
    await alice.join(URL)
    page = await open_page(node, "early")
    await page.evaluate("(key) => window.pagemesh.peer.block(key)", mallory.public_key.hex())
    node.hold_joined = asyncio.Event()
    await page.evaluate(START, [URL])  # its sign request names alice and mallory
    await linked_before_joined(page, alice.public_key)
    node.hold_joined.set()
    await page.evaluate(DONE)
    assert offers_to(node, mallory.public_key, await key_of(page)) == 0
    assert set(await page.evaluate(LINKS)) == {alice.public_key.hex()}
    # seated: `members` frames without an id (this room, another) are dropped, counted
    me = node.clients[await key_of(page)]
    stranger = node._member(bytes(range(32)))
    await node._send(me, MemberList(ROOM, 0, (stranger,), 4))
    elsewhere = room_key(canonical_url("https://example.org/elsewhere"))
    await node._send(me, MemberList(elsewhere, 0, (stranger,), 1))
    await page.evaluate("() => window.pagemesh.peer.node.request({ type: 'ping' })")
    assert await page.evaluate("window.pagemesh.peer.node.unaskedMembers") == 2
    assert set(await page.evaluate(LINKS)) == {alice.public_key.hex()}
    assert offers_to(node, mallory.public_key, await key_of(page)) == 0
