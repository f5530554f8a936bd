"""A rogue member of a room against the page (and its Python twin): what it says
costs the receiver no more than it costs the sender, and what it names shows as
it is.

- A `hist` frame of bad signatures costs one failed check, and one of copies of
  an envelope already kept (or of one envelope over and over) costs none, in the
  page's Room.checkEnvelopes as in peer/messaging.py; a frame over the core's
  bound is refused before any check.
- A name or a file name hides nothing: zero-width and bidi characters show as
  U+FFFD (as `pagemesh chat` prints them), so "Ana\\u200b" is not "Ana", and names
  that differ only in spacing are namesakes, told apart by their tags.
- A received file is a Blob of the offered type only if it is an inline image: a
  text/html one would open, from its link, as a document of the node's origin.
- A profile frame is told only when its name changes (the page names everyone
  again on it), and a room keeps at most MAX_NAMES profile names, in both clients."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peer import friends
from peer.friends import ContactCard, x25519_public
from peer.messaging import Envelope, ReliableRoom
from peer.peer import MAX_NAMES, Connected, Room
from peer.store import PeerStore
from peer.transfer import Transfers
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory, next_of
from .test_chat_page import (  # noqa: F401  (open_chat: fixture)
    ROOM,
    OpenChat,
    browser_key,
    chat,
    open_chat,
    python_in_room,
    teapot_png,
)
from .test_vectors import page  # noqa: F401  (fixture)

ROOM_KEY = bytes(range(20))
ME = bytes([1]) * 32


def signed(key: Ed25519PrivateKey, seq: int, body: str = "hello") -> Envelope:
    author = key.public_key().public_bytes_raw()
    env = Envelope(ROOM_KEY, author, seq, seq, int(time.time() * 1000), "text", body)
    return dataclasses.replace(env, signature=key.sign(env.signed_bytes()))


def test_python_core_checks_a_kept_envelope_once() -> None:
    checks = []

    def verify(author: bytes, data: bytes, sig: bytes) -> bool:
        checks.append(author)
        return True

    core = ReliableRoom(ROOM_KEY, ME, lambda data: bytes(64), verify)
    member = bytes([2]) * 32
    env = signed(Ed25519PrivateKey.generate(), 1)
    core.connected(member, time.time())
    core.receive(member, {"t": "hist", "envs": [env.to_json()] * 800}, time.time())
    assert len(checks) == 1  # the copies are the one kept
    core.receive(member, {"t": "msg", "env": env.to_json()}, time.time())
    assert len(checks) == 1
    forged = dataclasses.replace(env, body="other")  # its signature is the kept one's
    core.receive(member, {"t": "msg", "env": forged.to_json()}, time.time())
    assert len(checks) == 2  # not the same envelope: checked


CHECK = """async ([roomHex, frames]) => {
    const { Room } = await import('/web/js/peer.js');
    const { ReliableRoom } = await import('/web/js/messaging.js');
    const core = new ReliableRoom(roomHex, '01'.repeat(32));
    const room = { core };
    const subtle = crypto.subtle;
    const real = subtle.verify.bind(subtle);
    let checks = 0;
    subtle.verify = (...args) => { checks += 1; return real(...args); };
    const out = [];
    try {
        for (const frame of frames) {
            checks = 0;
            const checked = await Room.prototype.checkEnvelopes.call(room, frame);
            if (checked) core.receive('02'.repeat(32), checked, Date.now() / 1000);
            const passed = checked === frame ? 'unchecked' : (checked?.envs ?? []).length;
            out.push({checks, passed});
        }
    } finally {
        delete subtle.verify;
    }
    return {out, counters: core.counters};
}"""


async def test_page_checks_a_frame_of_bad_signatures_or_copies_at_most_once(
    page: Any,  # noqa: F811
) -> None:
    key = Ed25519PrivateKey.generate()
    good = signed(key, 1).to_json()
    bad = [{**signed(key, n).to_json(), "sig": "00" * 64} for n in range(2, 802)]
    frames = [
        {"t": "hist", "envs": [good] * 800},  # copies of one envelope, not yet kept
        {"t": "hist", "envs": [good] * 800},  # ... and now kept
        {"t": "hist", "envs": bad},  # 800 bad signatures
        {"t": "hist", "envs": [good] * 801},  # over the core's bound: refused whole
    ]
    result = await page.evaluate(CHECK, [ROOM_KEY.hex(), frames])
    out = result["out"]
    assert out[0] == {"checks": 1, "passed": 800}
    assert out[1] == {"checks": 0, "passed": 800}
    assert out[2] == {"checks": 1, "passed": 0}
    assert out[3] == {"checks": 0, "passed": "unchecked"}
    assert result["counters"].get("drop.bad_signature") == 1
    assert result["counters"].get("drop.bad_history") == 1


PENDING = """async () => {
    const { Room } = await import('/web/js/peer.js');
    const { ReliableRoom } = await import('/web/js/messaging.js');
    const room = Object.create(Room.prototype);
    Object.assign(room, {core: new ReliableRoom('00'.repeat(20), '01'.repeat(32)),
                         chain: Promise.resolve(), pendingFrames: new Map(), emit() {}});
    let release;
    const slow = new Promise((resolve) => (release = resolve));
    let ran = 0;
    room.fromMember('02'.repeat(32), () => slow);  // a signature check that takes its time
    for (let i = 0; i < 1000; i++) room.fromMember('02'.repeat(32), async () => { ran += 1; });
    room.fromMember('03'.repeat(32), async () => { ran += 1; });  // another member's turn
    const waiting = ['02', '03'].map((k) => room.pendingFrames.get(k.repeat(32)));
    release();
    await room.chain;
    return {waiting, ran, dropped: room.core.counters['drop.frames_pending'],
            left: room.pendingFrames.size};
}"""


async def test_a_member_s_frames_waiting_their_turn_are_bounded(page: Any) -> None:  # noqa: F811
    # Frames wait in one queue while signatures are checked: a member sending faster than
    # that grew it without bound. At most 256 of one member's wait; the rest are counted.
    got = await page.evaluate(PENDING)
    assert got == {"waiting": [256, 1], "ran": 256, "dropped": 745, "left": 0}


async def test_names_and_file_names_hide_nothing_and_files_are_not_documents(
    signaling_mesh: NodeFactory,
    peers: PeerFactory,
    open_chat: OpenChat,  # noqa: F811
    tmp_path: Path,
) -> None:
    (node,) = await signaling_mesh(1)
    ana, ana_room = await python_in_room(peers, node, "ana")
    fake, fake_room = await python_in_room(peers, node, "fake")
    spaced, spaced_room = await python_in_room(peers, node, "spaced")
    tab = await open_chat(node, "you", room=ROOM)
    me = await browser_key(tab)
    for room in (ana_room, fake_room, spaced_room):
        await next_of(room, Connected, key=me)
    chat(ana_room, "I am Ana", "Ana")
    chat(fake_room, "I am Ana too", "Ana\u200b")  # a zero-width space: looks like "Ana"
    chat(spaced_room, "and me", "Ana ")  # a trailing space: looks like "Ana"
    keys = [p.public_key.hex() for p in (ana, fake, spaced)]
    labels = {
        keys[0]: f"Ana \u00b7{keys[0][:4]}",  # a namesake of "Ana ": tagged
        keys[1]: "Ana\ufffd",  # not a namesake: what hides shows
        keys[2]: f"Ana  \u00b7{keys[2][:4]}",
    }
    for key, label in labels.items():
        selector = f"#messages li.msg .who[data-key='{key}']"
        await tab.wait_for_selector(selector)
        await tab.wait_for_function(
            "([s, label]) => document.querySelector(s).textContent === label",
            arg=[selector, label],
            timeout=10_000,
        )

    # A file whose name reverses its end ("catexe.png" on screen), and an HTML page.
    spoof = tmp_path / "cat\u202egnp.exe"
    spoof.write_bytes(b"MZ not a picture")
    await ana_room.send_file(spoof)
    row = await tab.wait_for_selector("#messages li.file:has(button.accept)")
    text = await row.text_content()
    assert "\u202e" not in text and "cat\ufffdgnp.exe" in text, text
    html = tmp_path / "invoice.html"
    html.write_bytes(b'<form action="https://example.org/steal"><input name=password></form>')
    await ana_room.send_file(html)
    await tab.click("#messages li.file:has-text('invoice.html') button.accept")
    link = await tab.wait_for_selector(
        "#messages li.file:has-text('invoice.html') a.download", timeout=20_000
    )
    assert await link.get_attribute("download") == "invoice.html"
    kind = "(a) => fetch(a.href).then((r) => r.blob()).then((b) => b.type)"
    assert await link.evaluate(kind) == "application/octet-stream"
    # An inline image keeps its type (it is shown as a picture).
    await ana_room.send_file(teapot_png(tmp_path / "teapot.png"))
    image = await tab.wait_for_selector(
        "#messages li.file:has-text('teapot.png') a.download", timeout=20_000
    )
    assert await image.evaluate(kind) == "image/png"


def test_python_room_keeps_a_bounded_number_of_profile_names() -> None:
    events: list[Any] = []
    room = SimpleNamespace(admits=lambda key: True, names={}, _emit=events.append)
    for n in range(MAX_NAMES + 100):
        Room._frame(room, n.to_bytes(32, "big"), {"t": "profile", "name": "x"})
    again = (150).to_bytes(32, "big")  # kept (the first 100 went): the same name, not told
    Room._frame(room, again, {"t": "profile", "name": "x"})
    assert len(room.names) == MAX_NAMES and len(events) == MAX_NAMES + 100
    assert next(reversed(room.names)) == again  # named again: the most recent


PROFILES = """async ([count]) => {
    const { Room } = await import('/web/js/peer.js');
    const events = [];
    const room = {admits: () => true, names: new Map(), emit: (e) => events.push(e)};
    const say = (key, name) => Room.prototype.onFrame.call(room, key, {t: 'profile', name});
    for (let n = 0; n < count; n++) say(n.toString(16).padStart(64, '0'), 'x');
    for (let n = 0; n < 100; n++) say('ff'.repeat(32), 'same');  // again and again
    return {names: room.names.size, events: events.length};
}"""


async def test_page_keeps_a_bounded_number_of_profile_names_told_once(
    page: Any,  # noqa: F811
) -> None:
    assert await page.evaluate(PROFILES, [1100]) == {"names": 1024, "events": 1101}


async def test_a_member_repeating_its_name_is_told_once(
    signaling_mesh: NodeFactory,
    peers: PeerFactory,
    open_chat: OpenChat,  # noqa: F811
) -> None:
    (node,) = await signaling_mesh(1)
    ana, ana_room = await python_in_room(peers, node, "ana")
    tab = await open_chat(node, "you", room=ROOM)
    me = await browser_key(tab)
    await next_of(ana_room, Connected, key=me)
    await tab.evaluate(
        """() => {
            window.profiles = 0;
            window.pagemesh.peer.on((e) => { if (e.type === 'profile') window.profiles += 1; });
        }"""
    )
    link = ana_room.links[me]
    for _ in range(300):
        link.send({"t": "profile", "name": "Spam"})
    link.send({"t": "profile", "name": "Marker"})
    key = ana.public_key.hex()
    await tab.wait_for_function(
        "(key) => window.pagemesh.room.names.get(key) === 'Marker'", arg=key, timeout=10_000
    )
    assert await tab.evaluate("window.profiles") == 2  # Spam once, Marker once
    await tab.wait_for_selector(f"#members li[data-key='{key}'] .name:text-is('Marker')")


# --- a contact sending card after card ---


def contact_cards(count: int) -> dict[bytes, ContactCard]:
    # Pair secrets read no signature: any 64 bytes do.
    cards = {}
    for _ in range(count):
        key = os.urandom(32)
        cards[key] = ContactCard(key, x25519_public(os.urandom(32)), bytes(64))
    return cards


def test_python_makes_a_pair_secret_again_only_for_a_changed_card(monkeypatch: Any) -> None:
    made: list[bytes] = []
    real = friends.pair_secret

    def counted(mine: bytes, x_private: bytes, theirs: ContactCard) -> bytes:
        made.append(theirs.key)
        return real(mine, x_private, theirs)

    monkeypatch.setattr(friends, "pair_secret", counted)
    book = friends.PresenceBook(os.urandom(32), os.urandom(32), os.urandom)
    cards = contact_cards(20)
    book.set_contacts(cards)
    assert len(made) == 20
    first = next(iter(cards))
    before = book._secrets[first]
    cards[first] = ContactCard(first, x25519_public(os.urandom(32)), bytes(64))
    book.set_contacts(cards)
    assert made[20:] == [first]  # the one new card, not every contact's
    assert book._secrets[first] != before and len(book._secrets) == 20


CARDS = """async ([contacts]) => {
    const { Friends } = await import('/web/js/contacts.js');
    const { fromHex } = await import('/web/js/bytes.js');
    const sig = new Uint8Array(64);
    const stored = contacts.map(([key, x]) => ({key, petname: 'c', x: fromHex(x), sig}));
    const store = {contacts: async () => stored.map((c) => ({...c}))};
    const peer = {identityHex: '11'.repeat(32), store};
    const friends = new Friends(peer, 60000, () => null);
    friends.xPrivate = crypto.getRandomValues(new Uint8Array(32));
    const subtle = crypto.subtle;
    const real = subtle.deriveBits.bind(subtle);
    let derived = 0;
    subtle.deriveBits = (...args) => { derived += 1; return real(...args); };
    const counts = [];
    try {
        await friends.reload();
        counts.push(derived, friends.secrets.size);
        await friends.reload();  // nothing changed
        counts.push(derived, friends.secrets.size);
    } finally {
        delete subtle.deriveBits;
    }
    return counts;
}"""


async def test_page_makes_a_pair_secret_again_only_for_a_changed_card(
    page: Any,  # noqa: F811
) -> None:
    cards = contact_cards(20)
    contacts = [[key.hex(), card.x.hex()] for key, card in cards.items()]
    first, secrets, again, kept = await page.evaluate(CARDS, [contacts])
    assert secrets == kept == 20 and first >= 20
    assert again == first  # no secret made again


CARD_AGAIN = """async ([count]) => {
    const { Friends } = await import('/web/js/contacts.js');
    const { cardFrame, makeCard } = await import('/web/js/friends.js');
    const { generateIdentity, publicKeyBytes, sign } = await import('/web/js/crypto.js');
    const { hex } = await import('/web/js/bytes.js');
    const identity = await generateIdentity();
    const key = await publicKeyBytes(identity);
    const x = crypto.getRandomValues(new Uint8Array(32));
    const frame = cardFrame(await makeCard((m) => sign(identity, m), key, x));
    const peer = {identityHex: '11'.repeat(32), store: {contacts: async () => []}};
    const friends = new Friends(peer, 60000, () => null);
    let drawn = 0;
    friends.on(() => { drawn += 1; });
    for (let n = 0; n < count; n++) await friends.onCard(hex(key), frame, hex(key));
    return [drawn, friends.cards.has(hex(key))];
}"""


async def test_page_draws_no_list_again_for_a_card_shown_over_and_over(
    page: Any,  # noqa: F811
) -> None:
    # Any member may send its card: kept, and nothing drawn again for a non-contact's.
    assert await page.evaluate(CARD_AGAIN, [50]) == [0, True]


# --- a member answering for a file of ours over and over ---


async def test_python_tells_a_members_done_or_decline_once(tmp_path: Path) -> None:
    events: list[Any] = []
    transfers = Transfers(
        PeerStore(tmp_path / "store"),
        lambda m, f: True,
        lambda m, label: None,
        events.append,
        1 << 20,
    )
    shared = tmp_path / "notes.txt"
    shared.write_bytes(b"notes")
    member = bytes([2]) * 32
    offer = await transfers.offer(shared, [member])
    for _ in range(100):
        for kind in ("file-done", "file-decline"):
            assert transfers.on_control(member, {"t": kind, "id": offer.id})
    assert [type(e).__name__ for e in events] == ["FileDone"]
    transfers.on_control(bytes([3]) * 32, {"t": "file-decline", "id": offer.id})
    assert [type(e).__name__ for e in events] == ["FileDone", "FileFailed"]  # another member


ANSWERS = """async () => {
    const { Transfers } = await import('/web/js/transfer.js');
    const events = [];
    const t = new Transfers({sendControl: () => true, openChannel: () => null,
                             emit: (e) => events.push(e.type), maxSize: 1 << 20});
    const member = '02'.repeat(32);
    const offer = await t.offer(new File(['notes'], 'notes.txt'), [member]);
    for (let n = 0; n < 100; n++) {
        t.onControl(member, {t: 'file-done', id: offer.id});
        t.onControl(member, {t: 'file-decline', id: offer.id});
    }
    t.onControl('03'.repeat(32), {t: 'file-decline', id: offer.id});
    t.close();
    return events;
}"""


async def test_page_tells_a_members_done_or_decline_once(
    page: Any,  # noqa: F811
) -> None:
    assert await page.evaluate(ANSWERS) == ["file-done", "file-failed"]


LONG_SESSION = """async () => {
    const ui = window.pagemesh;
    const author = '02'.repeat(32);
    const png = Uint8Array.from(atob(
        'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC'),
        (c) => c.charCodeAt(0));
    const offer = {id: 'f'.repeat(32), name: 'dot.png', size: png.length, mime: 'image/png',
                   sha256: '00'.repeat(32)};
    ui.room.emit({type: 'file-done', sender: author, id: offer.id, offer,
                  blob: new Blob([png], {type: 'image/png'})});
    const url = document.querySelector('#messages li.file img').src;
    const before = await fetch(url).then((r) => r.ok, () => false);
    for (let i = 0; i < 2100; i++) ui.room.emit({type: 'gap', author, first: i, last: i});
    const after = await fetch(url).then((r) => r.ok, () => false);
    return {lines: document.querySelectorAll('#messages > li').length,
            file: ui.files.has(offer.id), before, after};
}"""


async def test_a_long_session_keeps_the_newest_lines_and_lets_old_files_go(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    # Every line of a room stayed on the page while it was open, and every file shared
    # kept its Blob in memory: a member offering a file a second (the rate allows it), or
    # a day in a busy room, grew the page without bound. The newest 2,000 lines stay.
    (node,) = await signaling_mesh(1)
    ben = await open_page(node, "Ben", room=ROOM)
    await ben.locator("#leave:not([hidden])").wait_for()
    got = await ben.evaluate(LONG_SESSION)
    assert got == {"lines": 2000, "file": False, "before": True, "after": False}
