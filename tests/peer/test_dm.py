"""Which DM rooms to be in (peer/dm.py) and the `dm` flag of a presence note
(docs/protocol.md 7.4): properties over any inputs, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.dm import MAX_DM_ROOMS, plan
from peer.friends import PresenceError, PresenceNote, parse_presence_note

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
