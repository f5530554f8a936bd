"""The peer store: key file mode, clocks and delivery state that survive a restart."""

from __future__ import annotations

import stat
from pathlib import Path

from nacl.signing import SigningKey

from dht.identity import verify_signature
from peer.messaging import Delivered, ReliableRoom
from peer.store import PartialDownload, PeerStore

ROOM = bytes(range(20))


def room_from(store: PeerStore) -> ReliableRoom:
    key = store.key
    seq, lamport = store.room_clock(ROOM)
    return ReliableRoom(
        ROOM,
        bytes(key.verify_key),
        lambda m: key.sign(m).signature,
        verify_signature,
        seq=seq,
        lamport=lamport,
        delivered=store.delivered(ROOM),
        history=store.history(ROOM),
    )


def drain(room: ReliableRoom, store: PeerStore) -> list[str]:
    bodies = []
    while (event := room.next_event()) is not None:
        if isinstance(event, Delivered):
            store.save_message(event.envelope, room.seq, room.lamport)
            bodies.append(event.envelope.body)
    return bodies


def exchange(a: ReliableRoom, b: ReliableRoom, now: float = 0.0) -> None:
    for _ in range(50):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for _member, frame in src.frames_to_send():
                dst.receive(src.key, frame, now)
                moved = True
        for room in (a, b):
            if (t := room.get_timer()) is not None:
                room.handle_timer(t)
                moved = True
        if not moved:
            return


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    store = PeerStore(tmp_path / "alice")
    mode = stat.S_IMODE((tmp_path / "alice" / "peer.key").stat().st_mode)
    assert mode == 0o600
    key = bytes(store.key.verify_key)
    store.name = "Alice"
    store.add_friend(b"\x01" * 32, "Bob")
    store.close()
    again = PeerStore(tmp_path / "alice")
    assert bytes(again.key.verify_key) == key and again.name == "Alice"
    assert again.friends() == {b"\x01" * 32: "Bob"}


def test_restarted_author_never_reuses_a_seq_and_reader_resumes(tmp_path: Path) -> None:
    alice_store, bob_store = PeerStore(tmp_path / "a"), PeerStore(tmp_path / "b")
    alice, bob = room_from(alice_store), room_from(bob_store)
    alice.connected(bob.key, 0.0)
    bob.connected(alice.key, 0.0)
    for text in ("one", "two"):
        alice.send(text, 0.0)
    exchange(alice, bob)
    assert drain(alice, alice_store) == ["one", "two"]
    assert drain(bob, bob_store) == ["one", "two"]

    # both processes restart
    alice, bob = room_from(alice_store), room_from(bob_store)
    assert alice.seq == 2 and alice.lamport >= 2
    env = alice.send("three", 1.0)
    assert env.seq == 3
    alice.connected(bob.key, 1.0)
    bob.connected(alice.key, 1.0)
    exchange(alice, bob, 1.0)
    assert drain(bob, bob_store) == ["three"]  # nothing twice after the restart
    assert [e.body for e in bob_store.history(ROOM)] == ["one", "two", "three"]
    assert [e.body for e in bob.transcript()] == ["one", "two", "three"]


def test_partial_downloads(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    part = PartialDownload(b"\x09" * 32, "cat.png", 1000, 256, str(tmp_path / "cat.part"))
    store.save_download(part)
    assert store.partial_download(b"\x09" * 32) == part
    store.finish_download(b"\x09" * 32)
    assert store.partial_download(b"\x09" * 32) is None


def test_a_new_key_is_generated_per_data_dir(tmp_path: Path) -> None:
    a, b = PeerStore(tmp_path / "a"), PeerStore(tmp_path / "b")
    assert isinstance(a.key, SigningKey) and a.key.verify_key != b.key.verify_key
