"""A stranger's and a rogue node's view of the browser's links.

The probe found that an unsigned `relink` made both clients close even an
open link (a stranger forced 154 renegotiations in 8 s on a working pair),
and that a member who left while a client was between nodes stayed listed
forever. Relinks are now signed end to end like offers (docs/protocol.md
5.1), no signal closes an open link, and every rejoin reconciles the
members (5.0): here the browser is attacked over a real node and through
what a rogue node could deliver, a member leaves during its outage, and the
browser's and Python's relink signatures are checked against each other.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from nacl.signing import SigningKey

from peer.peer import Message
from peer.sdp import (
    NONCE_BYTES,
    RELINK,
    DescriptionRejected,
    ReplayGuard,
    parse_description,
    sign_description,
    verify_description,
)
from peer.signaling import SignalingClient
from signaling.protocol import canonical_url, room_key, verify_signature

from .conftest import MeetFactory, next_of, say
from .test_vectors import page  # noqa: F401  (fixture)

ROOM = bytes(range(20))
URL = "https://example.org/adversarial-signals"
SDP = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
"""Enough of an SDP to sign (a fingerprint); nobody gets as far as applying it."""

SIGN_IN_JS = """async ([room, to]) => {
    const m = window.m;
    const c = await import('/web/js/crypto.js');
    const identity = await c.generateIdentity();
    const me = m.hex(await c.publicKeyBytes(identity));
    const now = Date.now() / 1000;
    const relink = await m.signDescription('relink', '', room, me, to, identity, now);
    let withSdp = null;
    try {
        await m.signDescription('relink', 'v=0', room, me, to, identity, now);
    } catch (e) {
        withSdp = e.code;
    }
    return [me, relink, withSdp];
}"""

VERIFY_IN_JS = """async ([descs, room, sender, me]) => {
    const m = window.m;
    const replays = new m.ReplayGuard();
    const out = [];
    for (const data of descs) {
        try {
            const desc = m.parseDescription(data);
            await m.verifyDescription(desc, room, sender, me, Date.now() / 1000, replays);
            out.push('ok');
        } catch (e) {
            out.push(e.code);
        }
    }
    return out;
}"""


def signer(key: SigningKey) -> Any:
    return lambda message: key.sign(message).signature


async def test_relinks_signed_in_one_client_verify_in_the_other(page: Any) -> None:  # noqa: F811
    python = SigningKey.generate()
    me = bytes(python.verify_key)
    browser, data, with_sdp = await page.evaluate(SIGN_IN_JS, [ROOM.hex(), me.hex()])
    assert with_sdp == "malformed"  # a relink carries no SDP, in both
    desc = parse_description(data)
    assert desc.kind == RELINK and desc.sdp == ""
    verify_description(
        desc, ROOM, bytes.fromhex(browser), me, time.time(), verify_signature, ReplayGuard()
    )

    def relink(key: SigningKey, sender: bytes, to: bytes) -> dict[str, Any]:
        nonce = os.urandom(NONCE_BYTES)
        signed = sign_description(RELINK, "", ROOM, sender, to, nonce, time.time(), signer(key))
        return signed.to_json()

    to = bytes.fromhex(browser)
    good = relink(python, me, to)
    forged = relink(SigningKey.generate(), me, to)  # claims to be `me`, signed by another key
    with_a_body = {**relink(python, me, to), "sdp": "v=0\r\n"}
    as_an_offer = {**relink(python, me, to), "kind": "offer"}
    got = await page.evaluate(
        VERIFY_IN_JS,
        [[good, good, forged, with_a_body, as_an_offer], ROOM.hex(), me.hex(), browser],
    )
    assert got == ["ok", "replay", "bad-signature", "malformed", "no-fingerprint"]
    for bad in (forged, with_a_body, as_an_offer):
        try:
            verify_description(
                parse_description(bad), ROOM, me, to, time.time(), verify_signature, ReplayGuard()
            )
        except DescriptionRejected:
            continue
        raise AssertionError(f"Python took {bad}")


def relink_payload(signer_key: SigningKey, claimed: bytes, to: bytes, room: bytes) -> Any:
    """A relink signed by `signer_key`, claiming to come from `claimed`."""
    nonce = os.urandom(NONCE_BYTES)
    desc = sign_description(RELINK, "", room, claimed, to, nonce, time.time(), signer(signer_key))
    return {"t": "relink", "desc": desc.to_json()}


LINK_TO = """(member) => {
    const room = window.pagemesh.room;
    const link = room.links.get(member);
    const all = [...room.byId.values()].filter((l) => l.member === member).map((l) => l.id);
    return [link?.id ?? null, link?.open ?? false, room.linksMade.get(member) ?? 0, all];
}"""

AS_A_ROGUE_NODE = """([frames, times]) => {
    // What a node could deliver: any `from`, any payload, on the browser's node connection.
    const peer = window.pagemesh.peer;
    for (let i = 0; i < times; i++) {
        for (const frame of frames) peer.onNodeFrame(peer.node, peer.nodeUrl, frame);
    }
}"""


async def test_no_signal_from_a_stranger_touches_the_browsers_open_link(
    meet: MeetFactory,
) -> None:
    m = await meet(URL)
    tab, python, node = m.page, m.python, m.nodes[0]
    room = room_key(canonical_url(URL))
    py = python.public_key
    before = await tab.evaluate(LINK_TO, py.hex())
    assert before[1] and before[3] == [before[0]]

    # A stranger, seated in the browser's layer (so the node routes its signals).
    mallory_key = SigningKey.generate()
    mallory = await SignalingClient.connect(node.url, mallory_key)
    try:
        await mallory.join(room, await tab.evaluate("window.pagemesh.room.layer"))
        await tab.wait_for_function(
            f"window.pagemesh.room.members.has('{mallory.key.hex()}')", timeout=10_000
        )
        attacks = [
            {"t": "relink"},  # unsigned, as before
            relink_payload(mallory_key, py, m.browser, room),  # claims to be the Python peer
            relink_payload(SigningKey.generate(), mallory.key, m.browser, room),  # wrong key
            {"t": "sdp", "desc": {"kind": "offer"}},  # garbage
        ]
        for _ in range(8):  # under the node's 20 frames/s, so every one gets through
            for payload in attacks:
                await mallory.signal(m.browser, payload, room)
                await asyncio.sleep(0.06)

        # What a rogue node could deliver: the same claiming to come from the Python peer
        # (whichever key is lower: a forged offer is a reason for either side to renegotiate).
        nonce = os.urandom(NONCE_BYTES)
        offer = sign_description(
            "offer", SDP, room, py, m.browser, nonce, time.time(), signer(mallory_key)
        )
        forged = [
            {"type": "signal", "room": room.hex(), "from": py.hex(), "payload": payload}
            for payload in (
                {"t": "relink"},
                relink_payload(mallory_key, py, m.browser, room),
                {"t": "relink", "desc": relink_payload(mallory_key, py, m.browser, room)},
                {"t": "sdp", "desc": offer.to_json()},
            )
        ]
        await tab.evaluate(AS_A_ROGUE_NODE, [forged, 50])
        await asyncio.sleep(1.0)

        after = await tab.evaluate(LINK_TO, py.hex())
        assert after == before  # the same link, open, and no other one made: no renegotiation
        refused = await tab.evaluate("window.pagemesh.peer.counters")
        assert refused.get("refused.signal.bad-signature", 0) >= 100, refused
        assert sum(refused.values()) >= 200 + 24, refused  # the node may drop a few of mallory's
        await say(tab, "still here")
        assert (await next_of(m.room, Message, mine=False)).text == "still here"
        await m.room.send("and so am I")
        await tab.wait_for_selector("#messages li.msg .body:has-text('and so am I')")
    finally:
        await mallory.close()


OUTAGE = """(down) => {
    // The browser's network goes away (no WebSocket opens) or comes back; links stay.
    window.realWebSocket ??= window.WebSocket;
    if (!down) {
        window.WebSocket = window.realWebSocket;
        return;
    }
    const Real = window.realWebSocket;
    function Down() { throw new Error('the network is down'); }
    for (const name of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Down[name] = Real[name];
    window.WebSocket = Down;
}"""


async def test_a_member_who_left_while_the_browser_was_away_is_reconciled_away(
    meet: MeetFactory,
) -> None:
    m = await meet(URL + "/reconcile")
    (a, _), tab, python, py = m.nodes, m.page, m.python, m.python.public_key.hex()
    await tab.evaluate(OUTAGE, True)
    await a.stop(moving=False)  # the browser's node dies, and it cannot reach another
    await tab.wait_for_function("window.pagemesh.peer.mesh.state !== 'connected'")
    await python.leave(m.room)  # the Python peer leaves meanwhile: nobody tells the browser
    await tab.wait_for_function(f"!window.pagemesh.room.links.get('{py}')?.open")
    assert await tab.evaluate(f"window.pagemesh.room.members.has('{py}')")
    await asyncio.sleep(4.0)  # its presence lapses (presence_ttl 3 s in tests)

    await tab.evaluate(OUTAGE, False)
    await tab.wait_for_selector(f'#messages li[data-left="{py}"]', timeout=40_000)
    assert not await tab.evaluate(f"window.pagemesh.room.members.has('{py}')")
    assert not await tab.query_selector(f'#members li[data-key="{py}"]')
    assert await tab.evaluate(f"window.pagemesh.room.linksMade.get('{py}')") == 1  # not retried
