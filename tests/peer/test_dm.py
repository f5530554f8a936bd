"""Which DM rooms to be in (peer/dm.py) and the `dm` flag of a presence note
(docs/protocol.md 7.4): properties over any inputs, no I/O."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.dm import MAX_DM_ROOMS, plan
from peer.friends import (
    PresenceBook,
    PresenceError,
    PresenceNote,
    PutPresence,
    epoch_of,
    open_presence,
    parse_presence_note,
    presence_slot,
)

from .test_friends import NOW, Person, person

keys = st.sets(st.binary(min_size=1, max_size=1), max_size=40)


@given(keys, keys, keys, keys, keys, keys, keys)
def test_the_plan_is_bounded_and_only_for_contacts(
    contacts: set[bytes],
    online: set[bytes],
    waiting: set[bytes],
    knocking: set[bytes],
    opened: set[bytes],
    joined: set[bytes],
    linked: set[bytes],
) -> None:
    decided = plan(contacts, online, waiting, knocking, opened, joined, linked)
    assert not set(decided.join) & joined
    assert set(decided.leave) <= joined
    assert set(decided.join) <= contacts
    after = (joined - set(decided.leave)) | set(decided.join)
    assert len(after) <= max(MAX_DM_ROOMS, len(joined - set(decided.leave)))
    assert len(set(decided.join)) == len(decided.join)
    if len(joined) <= MAX_DM_ROOMS:
        assert len(after) <= MAX_DM_ROOMS
    # nobody's room is kept for a stranger, and an idle room is left
    for contact in after:
        assert contact in contacts
        assert (
            contact in opened
            or contact in waiting
            or (contact in online and contact in knocking)
            or (contact in linked and contact in joined)
        )
    # what is wanted is there, while there is room for it
    wanted = (opened | waiting | (online & knocking)) & contacts
    if len(wanted | (linked & joined & contacts)) <= MAX_DM_ROOMS:
        assert wanted <= after


@given(
    st.booleans(),
    st.integers(0, 2**40 - 1),
    st.booleans(),
    st.one_of(st.none(), st.binary(min_size=20, max_size=20)),
)
def test_a_note_keeps_its_dm_flag(online: bool, expires: int, dm: bool, room: bytes | None) -> None:
    note = PresenceNote(online, expires, room, 0 if room else None, dm=dm)
    assert parse_presence_note(note.to_json()) == note
    assert (b'"dm"' in note.to_json()) == dm


@pytest.mark.parametrize("value", ['"yes"', "1", "null", "[]"])
def test_a_dm_flag_that_is_not_a_boolean_is_refused(value: str) -> None:
    with pytest.raises(PresenceError, match=r"presence\.dm"):
        parse_presence_note(f'{{"v":1,"on":true,"exp":5,"dm":{value}}}'.encode())


def _notes_for(book: PresenceBook, writer: Person, reader: Person, now: float) -> list[Any]:
    slot = presence_slot(reader.secret_with(writer), writer.key, reader.key, epoch_of(now))
    return [
        open_presence(slot, c.record, now)
        for c in book.commands()
        if isinstance(c, PutPresence) and c.record.key == slot.dht_key
    ]


def test_with_presence_off_only_the_contact_a_dm_waits_for_is_told_and_then_told_offline() -> None:
    ana, ben, cat = person(1), person(2), person(3)
    book = PresenceBook(ana.key, ana.x, os.urandom)
    book.set_contacts({ben.key: ben.card, cat.key: cat.card})
    book.handle_timer(NOW)
    book.commands()
    assert book.set_knocks(frozenset({ben.key, b"\x09" * 32}))  # a stranger is dropped
    assert not book.set_knocks(frozenset({ben.key}))
    book.handle_timer(NOW + 1)
    (note,) = _notes_for(book, ana, ben, NOW + 1)
    assert note.online and note.dm
    book.handle_timer(NOW + 2)  # not due yet: nothing
    assert book.set_knocks(frozenset())
    book.handle_timer(NOW + 3)
    commands = book.commands()
    puts = [c for c in commands if isinstance(c, PutPresence)]
    assert len(puts) == 1  # to Ben only, never to Cat
    slot = presence_slot(ben.secret_with(ana), ana.key, ben.key, epoch_of(NOW + 3))
    told = open_presence(slot, puts[0].record, NOW + 3)
    assert not told.online and not told.dm
    book.handle_timer(NOW + 3 + 61)
    assert not [c for c in book.commands() if isinstance(c, PutPresence)]
