"""Blocks and mutes on disk and by name (peer/blocks.py, peer/store.py; docs/protocol.md 5.4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.blocks import (
    BLOCK,
    MUTE,
    AmbiguousName,
    BlockEntry,
    BlockRecordError,
    find_key,
    parse_block_row,
)
from peer.store import MIGRATIONS, SCHEMA_VERSION, PeerStore

A, B, C = bytes([0xA1]) * 32, bytes([0xB2]) * 32, bytes([0xA1, 0x77]) + bytes(30)


def test_blocks_and_mutes_survive_a_restart(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    store.set_block(A, BLOCK, "Mallory", 1_763_880_000)
    store.set_block(B, MUTE, "Bob")
    store.close()
    again = PeerStore(tmp_path)
    assert again.blocks() == {
        A: BlockEntry(A, BLOCK, "Mallory", 1_763_880_000),
        B: BlockEntry(B, MUTE, "Bob", 0),
    }
    again.set_block(B, BLOCK)  # a mute becomes a block
    assert not again.clear_block(B, MUTE)  # /unmute does not undo a block
    assert again.clear_block(A) and set(again.blocks()) == {B}
    with pytest.raises(ValueError):
        again.set_block(b"short", BLOCK)
    with pytest.raises(ValueError):
        again.set_block(C, "ban")


def test_a_version_3_store_gets_the_blocks_table(tmp_path: Path) -> None:
    path = tmp_path / "peer.sqlite3"
    with sqlite3.connect(path) as db:  # a store as version 3 wrote it
        for step in MIGRATIONS[:3]:
            step(db)
        db.execute("PRAGMA user_version = 3")
    store = PeerStore(tmp_path)
    assert store.blocks() == {}
    store.set_block(A, BLOCK)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4


def test_a_damaged_row_is_left_out_not_fatal(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    store.set_block(A, BLOCK)
    with sqlite3.connect(tmp_path / "peer.sqlite3") as db:
        db.execute("INSERT INTO blocks VALUES (?, 'block', '', 0)", (b"xx",))
        db.execute("INSERT INTO blocks VALUES (?, 'ban', '', 0)", (B,))
    assert set(PeerStore(tmp_path).blocks()) == {A}


ROWS = st.one_of(
    st.tuples(
        st.binary(min_size=30, max_size=34) | st.text(max_size=3) | st.none(),
        st.sampled_from([BLOCK, MUTE, "ban", "", None, 1]),
        st.text(max_size=70) | st.integers() | st.none(),
        st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=2) | st.booleans(),
    ),
    st.lists(st.none() | st.integers() | st.binary(max_size=40), max_size=6),
    st.none() | st.integers() | st.text(max_size=5),
)


@given(ROWS)
def test_property_a_row_parses_or_is_refused_never_anything_else(row: Any) -> None:
    try:
        entry = parse_block_row(row)
    except BlockRecordError:
        return
    assert len(entry.key) == 32 and entry.level in (BLOCK, MUTE) and len(entry.label) <= 64
    assert parse_block_row((entry.key, entry.level, entry.label, entry.since)) == entry


NAMES = st.dictionaries(st.binary(min_size=32, max_size=32), st.text(max_size=8), max_size=6)


@given(NAMES, st.text(max_size=70))
def test_property_find_key_names_one_key_or_says_why(names: dict[bytes, str], spec: str) -> None:
    try:
        key = find_key(spec, names)
    except AmbiguousName:
        return
    if key is not None and len(spec.strip().lstrip("\u00b7")) != 64:
        assert key in names


def test_find_key_by_name_tag_or_whole_key() -> None:
    names = {A: "Mallory", B: "Bob", C: "bob"}
    assert find_key("mallory", names) == A
    assert find_key("\u00b7b2b2", names) == B
    assert find_key(B.hex(), {}) == B
    assert find_key("nobody", names) is None
    with pytest.raises(AmbiguousName):
        find_key("bob", names)
    assert find_key("a1", names) is None  # under four hex digits names nothing
    with pytest.raises(AmbiguousName):
        find_key("a1a1", {A: "x", bytes([0xA1, 0xA1]) + bytes(30): "y"})
