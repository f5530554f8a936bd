"""The devices remembered for a person blocked or muted (docs/protocol.md 5.4): the
parser of what the store keeps, and the store's rows across a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.blocks import BLOCK, MAX_BLOCKS, BlockRecordError, parse_block_device
from peer.store import DB_FILE, PeerStore

ANA, LAPTOP, PHONE = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
HEXISH = st.sampled_from(["ab" * 32, "cd" * 32, "AB" * 32, "ab" * 31, " " + "ab" * 32, ""])


@given(device=HEXISH | st.text(max_size=70) | st.none() | st.integers(), identity=HEXISH)
def test_property_a_remembered_device_parses_only_as_two_different_lower_hex_keys(
    device: object, identity: object
) -> None:
    try:
        parsed = parse_block_device(device, identity)
    except BlockRecordError:
        good = (
            isinstance(device, str) and isinstance(identity, str)
            and all(len(k) == 64 and set(k) <= set("0123456789abcdef") for k in (device, identity))
            and device != identity
        )  # fmt: skip
        assert not good
        return
    assert parsed == (bytes.fromhex(device), bytes.fromhex(identity))  # type: ignore[arg-type]
    assert parsed[0] != parsed[1] and len(parsed[0]) == len(parsed[1]) == 32


def test_remembered_devices_survive_a_restart_and_go_with_their_person(tmp_path: Path) -> None:
    store = PeerStore(tmp_path / "alice")
    store.set_block(ANA, BLOCK, "ana")
    assert store.set_block_device(LAPTOP, ANA) and store.set_block_device(PHONE, ANA)
    with sqlite3.connect(tmp_path / "alice" / DB_FILE) as db:  # someone edits the file
        db.execute("INSERT INTO meta VALUES ('block-device:zz', ?)", (ANA.hex(),))
        db.execute("INSERT INTO meta VALUES (?, 'not hex')", ("block-device:" + "04" * 32,))
    again = PeerStore(tmp_path / "alice")
    assert again.block_devices() == {LAPTOP: ANA, PHONE: ANA}  # damaged rows left out
    again.clear_block_devices(ANA)
    assert again.block_devices() == {}
    with pytest.raises(ValueError):
        again.set_block_device(b"short", ANA)


def test_at_most_max_blocks_devices_are_kept(tmp_path: Path) -> None:
    store = PeerStore(tmp_path / "alice")
    with store._write() as db:  # fill up to the bound without 10,000 writes
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("block-device:" + i.to_bytes(32, "big").hex(), ANA.hex()) for i in range(MAX_BLOCKS)],
        )
    assert not store.set_block_device(b"\xff" * 32, ANA)
    assert store.set_block_device((5).to_bytes(32, "big"), PHONE)  # replacing one is fine
    assert len(store.block_devices()) == MAX_BLOCKS
