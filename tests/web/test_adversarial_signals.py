"""A stranger's and a rogue node's view of the browser's links.

The probe found that an unsigned `relink` made both clients close even an
open link (a stranger forced 154 renegotiations in 8 s on a working pair).
Relinks are now signed end to end like offers (docs/protocol.md 5.1), and no
signal closes an open link (5.0): here the browser is attacked over a real
node, and the browser's and Python's relink signatures are checked against
each other.
"""

from __future__ import annotations

import os
import time
from typing import Any

from nacl.signing import SigningKey

from peer.sdp import (
    NONCE_BYTES,
    RELINK,
    DescriptionRejected,
    ReplayGuard,
    parse_description,
    sign_description,
    verify_description,
)
from signaling.protocol import verify_signature

from .test_vectors import page  # noqa: F401  (fixture)

ROOM = bytes(range(20))

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
