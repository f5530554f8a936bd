"""The browser's friends.js and Python's peer/friends.py make the same bytes (docs/protocol.md 7):
the known answer, and records sealed on one side opened on the other, in Chromium."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from peer.friends import (
    ContactCard,
    PresenceError,
    PresenceNote,
    epoch_of,
    open_presence,
    pair_secret,
    parse_card_frame,
    parse_presence_note,
    presence_slot,
    seal_presence,
    x25519_seed,
)
from signaling.protocol import RECORD, Record
from tests.peer.test_friends import KNOWN, known_answer, person
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory

MODULES = """async () => {
    const m = {};
    for (const name of ['bytes', 'friends', 'identityfile']) {
        Object.assign(m, await import(`/web/js/${name}.js`));
    }
    window.m = m;
    window.card = (c) => ({
        key: m.fromHex(c.key, 32), x: m.fromHex(c.x, 32), sig: m.fromHex(c.sig, 64),
    });
    // Everything friends.js derives for an identity seed and a contact's card.
    window.derive = async (seed, card, epoch) => {
        const pair = await m.keyPairFromSeed(seed);
        const key = await m.publicKeyFromSeed(seed);
        const x = await m.x25519Seed(seed);
        const sign = async (msg) =>
            new Uint8Array(await crypto.subtle.sign('Ed25519', pair.privateKey, msg));
        const mine = await m.makeCard(sign, key, x);
        const secret = await m.pairSecret(key, x, card);
        const slot = await m.presenceSlot(secret, key, card.key, epoch);
        const back = await m.presenceSlot(secret, card.key, key, epoch);
        return { key, x, mine, secret, slot, back };
    };
}"""


@pytest.fixture
async def page(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "friends")
    await page.evaluate(MODULES)
    return page


def _card_js(card: ContactCard) -> dict[str, str]:
    return {"key": card.key.hex(), "x": card.x.hex(), "sig": card.sig.hex()}


async def test_the_known_answer_in_the_browser(page: Any) -> None:
    expected = known_answer()
    ana, ben = person(1), person(2)
    got = await page.evaluate(
        """async ([seed, card, epoch]) => {
            const m = window.m;
            const c = window.card(card);
            const d = await window.derive(m.fromHex(seed, 32), c, epoch);
            const count = (n) => Uint8Array.from({ length: n }, (_, i) => i);
            const note = { online: true, expires: 1800000180, room: count(20), layer: 3,
                           page: 'https://example.com/a', node: 'ws://127.0.0.1:9000' };
            const record = await m.sealPresence(d.slot, note, 5, count(12));
            return {
                x25519_public: m.hex(d.mine.x), card_sig: m.hex(d.mine.sig),
                pair_secret: m.hex(d.secret), dm_room: m.hex(await m.dmRoom(d.secret)),
                dht_key: m.hex(d.slot.dhtKey), publisher: m.hex(d.slot.publisher),
                aes_key: m.hex(d.slot.aesKey), value: m.hex(record.value),
                signature: m.hex(record.signature),
            };
        }""",
        [ana.seed.hex(), _card_js(ben.card), 3_000_000],
    )
    assert got == expected
    assert {name: got[name] for name in KNOWN} == KNOWN


async def test_sealed_in_one_opened_in_the_other(page: Any) -> None:
    py_seed, js_seed = os.urandom(32), os.urandom(32)
    py_card = ContactCard.create(SigningKey(py_seed), x25519_seed(py_seed))
    now = time.time()
    js = await page.evaluate(
        """async ([seed, card, epoch, now]) => {
            const m = window.m;
            const c = window.card(card);
            const d = await window.derive(m.fromHex(seed, 32), c, epoch);
            const note = { online: true, expires: Math.floor(now) + 180,
                           room: new Uint8Array(20).fill(7), layer: 1,
                           page: 'https://example.org/caf\u00e9?q=1',
                           node: 'wss://node.example:443' };
            const nonce = crypto.getRandomValues(new Uint8Array(12));
            const record = await m.sealPresence(d.slot, note, Date.now(), nonce);
            return { key: m.hex(d.key), card: m.cardFrame(d.mine), record: m.recordToWire(record) };
        }""",
        [js_seed.hex(), _card_js(py_card), epoch_of(now), now],
    )
    js_key = bytes.fromhex(js["key"])
    js_card = parse_card_frame(js_key, js["card"])
    secret = pair_secret(py_card.key, x25519_seed(py_seed), js_card)
    slot = presence_slot(secret, js_key, py_card.key, epoch_of(now))
    record = RECORD.read(js["record"])
    note = open_presence(slot, record, time.time())
    assert note.page == "https://example.org/caf\u00e9?q=1" and note.layer == 1
    # A stranger's slot does not open it.
    stranger = os.urandom(32)
    other = pair_secret(bytes(SigningKey(stranger).verify_key), x25519_seed(stranger), js_card)
    with pytest.raises(PresenceError):
        open_presence(presence_slot(other, js_key, py_card.key, epoch_of(now)), record, now)

    # Python seals for the browser; the browser opens it, and refuses it altered.
    back = presence_slot(secret, py_card.key, js_key, epoch_of(now))
    sent = PresenceNote(True, int(now) + 120, b"\1" * 20, 0, None, None)
    sealed = seal_presence(back, sent, 9, os.urandom(12))
    tampered = Record(
        sealed.key,
        sealed.publisher,
        sealed.seq,
        sealed.expires_at,
        sealed.value[:-1] + bytes([sealed.value[-1] ^ 1]),
        sealed.signature,
    )
    opened = await page.evaluate(
        """async ([seed, card, epoch, now, good, bad]) => {
            const m = window.m;
            const c = window.card(card);
            const d = await window.derive(m.fromHex(seed, 32), c, epoch);
            const note = await m.openPresence(d.back, m.recordFromWire(good), now);
            let refused = '';
            try {
                await m.openPresence(d.back, m.recordFromWire(bad), now);
            } catch (e) {
                refused = e.message;
            }
            const { online, layer, page } = note;
            return { online, room: m.hex(note.room), layer, page, refused };
        }""",
        [
            js_seed.hex(),
            _card_js(py_card),
            epoch_of(now),
            now,
            RECORD.write(sealed),
            RECORD.write(tampered),
        ],
    )
    assert opened == {
        "online": True,
        "room": "01" * 20,
        "layer": 0,
        "page": None,
        "refused": "the record's signature does not verify",
    }


# --- both parsers agree on anything (notes, cards) ------------------------------------------

NOTE_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, True, "1", 1.0]),
        "on": st.booleans() | st.integers(0, 1) | st.none(),
        "exp": st.integers(-5, 2**41)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from([5.0, 1.8e9, 2.5]),
        "room": st.sampled_from(["00" * 20, "AB" * 20, "zz" * 20, "0" * 39]) | st.text(max_size=41),
        "layer": st.integers(-2, 70000) | st.booleans() | st.none() | st.sampled_from([3.0, 0.5]),
        "page": st.sampled_from(["https://e.com/", "ftp://x", "http://a/" + "é" * 600])
        | st.text(max_size=20)
        | st.none(),
        "node": st.sampled_from(
            [
                "ws://n:1",
                "wss://n.example",
                "http://n",
                "ws://",
                "ws://u@n",
                "ws://n/p?q",
                "ws://n#f",
            ]
        )
        | st.text(max_size=20),
    },
)
NOTES = NOTE_FIELDS.map(lambda d: json.dumps(d, ensure_ascii=False).encode()) | st.binary(
    max_size=40
)


def python_note(data: bytes) -> Any:
    try:
        note = parse_presence_note(data)
    except PresenceError:
        return "refused"
    room = note.room and note.room.hex()
    return [note.online, note.expires, room, note.layer, note.page, note.node]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(notes=st.lists(NOTES, min_size=1, max_size=40))
@example(notes=[b'{"v": true, "on": false, "exp": 0}'])  # Python took true for 1
async def test_both_note_parsers_agree(page: Any, notes: list[bytes]) -> None:
    got = await page.evaluate(
        """(notes) => notes.map((n) => {
            try {
                const note = window.m.parseNote(Uint8Array.from(n));
                return [note.online, note.expires, note.room && window.m.hex(note.room),
                        note.layer, note.page, note.node];
            } catch (e) {
                if (e instanceof window.m.PresenceError) return 'refused';
                return 'threw ' + e;
            }
        })""",
        [list(n) for n in notes],
    )
    for data, browser in zip(notes, got, strict=True):
        python = python_note(data)
        assert browser == python, (data, browser, python)


def card_frames() -> st.SearchStrategy[dict[str, Any]]:
    good = person(1).card.to_frame()
    other = person(2).card.to_frame()
    return st.fixed_dictionaries(
        {"t": st.sampled_from(["card", "Card", "profile"])},
        optional={
            "x": st.sampled_from([good["x"], other["x"], good["x"].upper(), "00" * 32, "zz"])
            | st.text(max_size=66),
            "sig": st.sampled_from([good["sig"], other["sig"], good["sig"][:-2] + "=="])
            | st.text(max_size=90),
        },
    )


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(card_frames(), min_size=1, max_size=30))
async def test_both_card_parsers_agree(page: Any, frames: list[dict[str, Any]]) -> None:
    member = person(1).key
    got = await page.evaluate(
        """async ([member, frames]) => Promise.all(frames.map(async (f) => {
            try {
                const card = await window.m.parseCardFrame(window.m.fromHex(member, 32), f);
                return window.m.hex(card.x);
            } catch (e) {
                return e instanceof window.m.PresenceError ? 'refused' : 'threw ' + e;
            }
        }))""",
        [member.hex(), frames],
    )
    for frame, browser in zip(frames, got, strict=True):
        try:
            python = parse_card_frame(member, frame).x.hex()
        except PresenceError:
            python = "refused"
        assert browser == python, (frame, browser, python)


WIRE_PART = (
    st.sampled_from(["11" * 20, "22" * 32, "AB" * 20, "", "=", "AAAA", "AA==", "A===", 5, None])
    | st.text(max_size=12)
    | st.integers(-1, 2**53 - 1)
)
GOOD_WIRE = ["11" * 20, "22" * 32, 1, 2, "AAAA", base64.b64encode(b"s" * 64).decode()]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    wires=st.lists(
        st.lists(WIRE_PART, min_size=0, max_size=7)
        | st.builds(
            lambda i, v: [*GOOD_WIRE[:i], v, *GOOD_WIRE[i + 1 :]],
            st.integers(0, 5),
            WIRE_PART,
        ),
        min_size=1,
        max_size=30,
    )
)
async def test_both_record_readers_agree(page: Any, wires: list[Any]) -> None:
    got = await page.evaluate(
        """(wires) => wires.map((w) => {
            try {
                const r = window.m.recordFromWire(w);
                return [window.m.hex(r.key), r.seq, r.expiresAt, window.m.hex(r.value)];
            } catch (e) {
                return e instanceof window.m.PresenceError ? 'refused' : 'threw ' + e;
            }
        })""",
        wires,
    )
    for wire, browser in zip(wires, got, strict=True):
        try:
            r = RECORD.read(wire)
            python: Any = [r.key.hex(), r.seq, r.expires_at, r.value.hex()]
        except ValueError:
            python = "refused"
        assert browser == python, (wire, browser, python)
