"""Presence for contacts only (peer/friends.py, docs/protocol.md 7): attackers first.

A stranger with many keys, and a node that stores and reads every record, can
neither read a presence nor tell whose it is or for whom; a contact reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from dht.identity import Identity
from dht.records import RecordLimits, RecordStore, Refusal
from peer.friends import (
    EPOCH_OVERLAP,
    EPOCH_SECONDS,
    PAD_TO,
    PRESENCE_REFRESH,
    PRESENCE_TTL,
    ContactCard,
    GetPresence,
    Place,
    PresenceBook,
    PresenceError,
    PresenceNote,
    PutPresence,
    dm_room,
    epoch_of,
    open_presence,
    pair_secret,
    parse_card_frame,
    parse_presence_note,
    presence_slot,
    read_epochs,
    seal_presence,
    x25519_seed,
)
from signaling.protocol import Record

NOW = 1_800_000_000.0
ROOM = bytes(range(20))


@dataclasses.dataclass
class Person:
    seed: bytes

    @property
    def signing(self) -> SigningKey:
        return SigningKey(self.seed)

    @property
    def key(self) -> bytes:
        return bytes(self.signing.verify_key)

    @property
    def x(self) -> bytes:
        return x25519_seed(self.seed)

    @property
    def card(self) -> ContactCard:
        return ContactCard.create(self.signing, self.x)

    def secret_with(self, other: Person) -> bytes:
        return pair_secret(self.key, self.x, other.card)


def person(n: int) -> Person:
    return Person(bytes([n]) * 32)


def note(expires: int, room: bool = True) -> PresenceNote:
    if not room:
        return PresenceNote(True, expires)
    return PresenceNote(True, expires, ROOM, 3, "https://example.com/a", "ws://127.0.0.1:9000")


def published(a: Person, b: Person, now: float, seq: int = 1, with_room: bool = True) -> Record:
    slot = presence_slot(a.secret_with(b), a.key, b.key, epoch_of(now))
    return seal_presence(slot, note(int(now) + 180, with_room), seq, os.urandom(12))


# --- attackers --------------------------------------------------------------------------


def test_a_stranger_with_many_keys_reads_nothing() -> None:
    ana, ben = person(1), person(2)
    record = published(ana, ben, NOW)
    for n in range(3, 40):
        stranger = person(n)
        # Whatever pair the stranger makes with either of them, it is not theirs.
        for guess in (stranger.secret_with(ana), stranger.secret_with(ben)):
            for publisher, reader in ((ana.key, ben.key), (ana.key, stranger.key)):
                slot = presence_slot(guess, publisher, reader, epoch_of(NOW))
                assert slot.dht_key != record.key
                with pytest.raises(PresenceError):
                    open_presence(slot, record, NOW)
    # Ben reads it.
    mine = presence_slot(ben.secret_with(ana), ana.key, ben.key, epoch_of(NOW))
    assert open_presence(mine, record, NOW) == note(int(NOW) + 180)


def test_a_node_that_keeps_every_record_links_none_to_anyone() -> None:
    ana, ben, cat = person(1), person(2), person(3)
    people = {ana.key, ben.key, cat.key}
    records = []
    for epoch in range(6):
        now = NOW + epoch * EPOCH_SECONDS
        for a, b in ((ana, ben), (ana, cat), (ben, ana), (cat, ana)):
            records.append(published(a, b, now, seq=epoch + 1, with_room=epoch % 2 == 0))
    keys = {r.key for r in records}
    publishers = {r.publisher for r in records}
    # Every direction and every epoch has its own key and its own publisher ...
    assert len(keys) == len(records) == len(publishers)
    # ... none of them anyone's identity, nor a prefix of one, nor derived from one alone.
    assert not publishers & people
    assert not {k for k in keys if any(p.startswith(k) for p in people)}
    # Sizes say nothing of who, nor of whether a page is named.
    assert {len(r.value) for r in records} == {12 + PAD_TO + 16}
    # The node's own read of each value: it cannot be opened under any key it can make.
    node = person(99)
    for r in records:
        for guess in (node.secret_with(ana), node.secret_with(ben), b"\0" * 32):
            slot = presence_slot(guess, ana.key, ben.key, epoch_of(NOW))
            forged = dataclasses.replace(slot, dht_key=r.key)
            with pytest.raises(PresenceError):
                open_presence(dataclasses.replace(forged, signing_seed=slot.signing_seed), r, NOW)


def test_altered_or_foreign_records_are_refused() -> None:
    ana, ben, cat = person(1), person(2), person(3)
    record = published(ana, ben, NOW)
    slot = presence_slot(ben.secret_with(ana), ana.key, ben.key, epoch_of(NOW))
    flipped = bytearray(record.value)
    flipped[-1] ^= 1
    with pytest.raises(PresenceError):
        open_presence(slot, dataclasses.replace(record, value=bytes(flipped)), NOW)
    # A stranger's record under the same DHT key (anyone may store there).
    other = Record.create(
        Identity(SigningKey(b"\7" * 32)), record.key, record.value, 2, record.expires_at
    )
    with pytest.raises(PresenceError):
        open_presence(slot, other, NOW)
    # Ben, who knows the pair's slot, cannot make Ana's presence for Cat.
    cats = presence_slot(cat.secret_with(ana), ana.key, cat.key, epoch_of(NOW))
    with pytest.raises(PresenceError):
        open_presence(cats, record, NOW)
    # Expired.
    with pytest.raises(PresenceError):
        open_presence(slot, record, NOW + 181)


def test_a_card_binds_the_x25519_key_to_its_identity() -> None:
    ana, eve = person(1), person(5)
    frame = ana.card.to_frame()
    assert parse_card_frame(ana.key, frame) == ana.card
    # Eve cannot pass Ana's card off as her own, nor her X25519 key as Ana's.
    with pytest.raises(PresenceError):
        parse_card_frame(eve.key, frame)
    with pytest.raises(PresenceError):
        parse_card_frame(ana.key, {**frame, "x": eve.card.x.hex()})


# --- what the pair shares -----------------------------------------------------------------


def test_both_sides_derive_the_same_secret_slots_and_dm_room() -> None:
    ana, ben = person(1), person(2)
    assert ana.secret_with(ben) == ben.secret_with(ana)
    assert dm_room(ana.secret_with(ben)) == dm_room(ben.secret_with(ana))
    assert len(dm_room(ana.secret_with(ben))) == 20
    ab = presence_slot(ana.secret_with(ben), ana.key, ben.key, 7)
    ba = presence_slot(ana.secret_with(ben), ben.key, ana.key, 7)
    assert ab != ba


def test_readers_look_in_the_previous_epoch_only_near_its_end() -> None:
    start = epoch_of(NOW) * EPOCH_SECONDS
    assert read_epochs(start) == [epoch_of(start), epoch_of(start) - 1]
    assert read_epochs(start + EPOCH_OVERLAP) == [epoch_of(start)]


def known_answer() -> dict[str, str]:
    """Fixed inputs, every derived value: tests/web/test_friends_twins.py asks the browser."""
    ana, ben = person(1), person(2)
    secret = ana.secret_with(ben)
    slot = presence_slot(secret, ana.key, ben.key, 3_000_000)
    record = seal_presence(slot, note(1_800_000_180), 5, bytes(range(12)))
    return {
        "x25519_public": ana.card.x.hex(),
        "card_sig": ana.card.sig.hex(),
        "pair_secret": secret.hex(),
        "dm_room": dm_room(secret).hex(),
        "dht_key": slot.dht_key.hex(),
        "publisher": record.publisher.hex(),
        "aes_key": slot.aes_key.hex(),
        "value": record.value.hex(),
        "signature": record.signature.hex(),
    }


KNOWN = {
    "x25519_public": "208789be69fc53886ed8077aef0ecd3e784fe755f4958b763d2093857494c771",
    "pair_secret": "0532d75bfc912be60f6071f4ad809909feb147a38bf352b1e994ed047e0818df",
    "dm_room": "c6a6895c8980b61123ccaafb59ff1749b58ec8aa",
    "dht_key": "be96bb3d2b3d4820e2d93f9047a55c86ef0bc2b0",
    "publisher": "5fe01d77cb3384733b61d44039e7e60168576235cb106338f0aa3ad8874c4a73",
}
"""Fixed once: a change here is a change of the protocol (docs/protocol.md 7.2)."""


def test_known_answer() -> None:
    got = known_answer()
    assert {name: got[name] for name in KNOWN} == KNOWN
    assert got == known_answer()  # nothing random in it
    assert len(bytes.fromhex(got["value"])) == 12 + PAD_TO + 16


# --- parsers: anything in, a value or PresenceError out -------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    data=st.binary(max_size=600) | json_values.map(lambda v: __import__("json").dumps(v).encode())
)
def test_any_bytes_are_a_note_or_a_presence_error(data: bytes) -> None:
    with contextlib.suppress(PresenceError):
        parse_presence_note(data)


@settings(max_examples=200)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "v": st.sampled_from([1, 2, True, "1"]),
            "on": st.booleans() | st.integers(),
            "exp": st.integers(-5, 2**41),
            "room": st.text(max_size=41) | st.just(ROOM.hex()),
            "layer": st.integers(-2, 70000) | st.booleans(),
            "page": st.text(max_size=30) | st.just("https://e.com/"),
            "node": st.text(max_size=30) | st.just("ws://n:1"),
        },
    )
)
def test_any_presence_object_is_a_note_or_a_presence_error(fields: dict[str, Any]) -> None:
    try:
        got = parse_presence_note(json.dumps(fields).encode())
    except PresenceError:
        return
    assert got.online in (True, False)


@settings(max_examples=200)
@given(frame=json_values, member=st.binary(min_size=32, max_size=32))
def test_any_frame_is_a_card_or_a_presence_error(frame: Any, member: bytes) -> None:
    with contextlib.suppress(PresenceError):
        parse_card_frame(member, frame)


@settings(max_examples=150, deadline=None)
@given(
    key=st.binary(min_size=0, max_size=24),
    publisher=st.binary(min_size=0, max_size=33),
    seq=st.integers(-1, 2**64),
    expires=st.integers(-1, 2**41),
    value=st.binary(max_size=400),
    signature=st.binary(max_size=65),
)
def test_any_record_opens_or_is_a_presence_error(
    key: bytes, publisher: bytes, seq: int, expires: int, value: bytes, signature: bytes
) -> None:
    ana, ben = person(1), person(2)
    slot = presence_slot(ben.secret_with(ana), ana.key, ben.key, epoch_of(NOW))
    for k, p in ((key, publisher), (slot.dht_key, slot.publisher)):
        with contextlib.suppress(PresenceError):
            open_presence(slot, Record(k, p, seq, expires, value, signature), NOW)


@settings(max_examples=50, deadline=None)
@given(
    online=st.booleans(),
    layer=st.integers(0, 65535),
    page=st.text(max_size=200).map(lambda t: "https://e.com/" + t),
    seq=st.integers(0, 2**63 - 1),
)
def test_what_is_sealed_opens_the_same(online: bool, layer: int, page: str, seq: int) -> None:
    ana, ben = person(1), person(2)
    slot = presence_slot(ana.secret_with(ben), ana.key, ben.key, epoch_of(NOW))
    sent = PresenceNote(online, int(NOW) + 100, ROOM, layer, page, "wss://node.example:443")
    record = seal_presence(slot, sent, seq, os.urandom(12))
    assert open_presence(slot, record, NOW) == sent
    assert len(record.value) % PAD_TO == 28 % PAD_TO


# --- the book, two people and a real record store on virtual time --------------------------


def run_books(books: list[PresenceBook], store: RecordStore, now: float) -> None:
    """Every book's due work, its puts into `store` and its reads answered from it."""
    for book in books:
        book.handle_timer(now)
    drained = {id(book): book.commands() for book in books}
    for book in books:
        for command in drained[id(book)]:
            if isinstance(command, PutPresence):
                assert store.put(command.record, now) is Refusal.STORED
    for book in books:
        for command in drained[id(book)]:
            if isinstance(command, GetPresence):
                held = [r for r in store.get(command.key, now) if r.publisher == command.publisher]
                book.found(command.contact, command.epoch, held[0] if held else None, now)


def test_two_contacts_see_each_other_and_where_and_then_that_one_left() -> None:
    ana, ben, eve = person(1), person(2), person(3)
    books = {p.key: PresenceBook(p.key, p.x, os.urandom) for p in (ana, ben, eve)}
    a, b, e = books[ana.key], books[ben.key], books[eve.key]
    a.set_contacts({ben.key: ben.card})
    b.set_contacts({ana.key: ana.card})
    e.set_contacts({ana.key: ana.card, ben.key: ben.card})  # Eve has their cards, not them
    place = Place(ROOM, 4, "https://example.com/a", "ws://127.0.0.1:1")
    a.set_mode("with-room", NOW)
    a.set_place(place)
    b.set_mode("on", NOW)
    e.set_mode("on", NOW)
    store = RecordStore(RecordLimits())
    now = NOW
    run_books([a, b, e], store, now)
    assert b.online(now) == {
        ana.key: PresenceNote(True, int(now) + 180, ROOM, 4, place.page, place.node)
    }
    assert set(a.online(now)) == {ben.key} and a.online(now)[ben.key].room is None
    assert e.online(now) == {}  # neither published anything Eve can find or read
    # Ana moves: her contact sees the new layer at the next refresh.
    a.set_place(Place(ROOM, 7, place.page, place.node))
    now += PRESENCE_REFRESH
    run_books([a, b], store, now)
    assert b.online(now)[ana.key].layer == 7
    # Ana leaves: the next read says so, long before the expiry.
    a.going_offline(now)  # in the very second of its last refresh
    for command in a.commands():
        assert isinstance(command, PutPresence)
        assert store.put(command.record, now) is Refusal.STORED
    now += PRESENCE_REFRESH
    run_books([b], store, now)
    assert b.online(now) == {}
    # Ben vanishes without a word: his note lapses by TTL for Ana.
    now += 1
    run_books([a], store, now)
    assert ben.key in a.online(now)
    assert a.online(now + PRESENCE_TTL + 1) == {}


def test_presence_off_publishes_nothing_and_a_mode_off_says_offline() -> None:
    ana, ben = person(1), person(2)
    a = PresenceBook(ana.key, ana.x, os.urandom)
    a.set_contacts({ben.key: ben.card})
    a.handle_timer(NOW)
    assert all(isinstance(c, GetPresence) for c in a.commands())
    a.set_mode("on", NOW)
    a.handle_timer(NOW)
    a.commands()
    a.set_mode("off", NOW + 1)
    (put,) = [c for c in a.commands() if isinstance(c, PutPresence)]
    slot = presence_slot(ben.secret_with(ana), ana.key, ben.key, epoch_of(NOW))
    assert open_presence(slot, put.record, NOW + 1).online is False
