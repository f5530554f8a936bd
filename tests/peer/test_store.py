"""The peer store: key file mode, clocks and delivery state that survive a restart, schema
versions (older stores migrated, newer ones refused)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from dht.identity import verify_signature
from peer import store as store_module
from peer.messaging import Delivered, Envelope, ReliableRoom, RoomConfig
from peer.peer import Peer, PeerConfig, Room
from peer.store import (
    MIGRATIONS,
    PRUNE_EVERY,
    SCHEMA_VERSION,
    Contact,
    PartialDownload,
    PeerStore,
    StoreVersionError,
)

ROOM = bytes(range(20))


def room_from(store: PeerStore, now: float | None = None) -> ReliableRoom:
    """The room restored from the store, as `peer.peer.Room` restores it (repair included)."""
    key = store.key
    seq, lamport = store.room_clock(ROOM)
    room = ReliableRoom(
        ROOM,
        bytes(key.verify_key),
        lambda m: key.sign(m).signature,
        verify_signature,
        seq=seq,
        lamport=lamport,
        delivered=store.delivered(ROOM),
        history=store.history(ROOM),
        now=now,
    )
    if room.lamport != lamport or room.refused_on_restore:
        store.repair_room_clock(ROOM, room.lamport, room.refused_on_restore)
    return room


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
    store.save_contact(Contact(b"\x01" * 32, "Bob"))
    store.close()
    again = PeerStore(tmp_path / "alice")
    assert bytes(again.key.verify_key) == key and again.name == "Alice"
    assert again.contacts() == [Contact(b"\x01" * 32, "Bob")]


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


T0 = 1_763_880_000.0
HALF_LEAD = 1_800_000
"""Half of RoomConfig().max_clock_lead, in milliseconds: how far ahead a clock may be."""


def signed_by(key: SigningKey, seq: int, lamport: int) -> Envelope:
    env = Envelope(ROOM, bytes(key.verify_key), seq, lamport, int(T0 * 1000), "text", f"m{seq}")
    return Envelope(
        env.room, env.author, env.seq, env.lamport, env.sent_at, env.kind, env.body,
        key.sign(env.signed_bytes()).signature,
    )  # fmt: skip


def test_a_poisoned_clock_is_repaired_and_written_back(tmp_path: Path) -> None:
    # What a member stored before envelopes far ahead were refused: a rogue's 2^53-1 in
    # its history, and its room clock there (save_message keeps the maximum).
    store = PeerStore(tmp_path / "b")
    friend, rogue = SigningKey(b"\x05" * 32), SigningKey(b"\x07" * 32)
    fine = signed_by(friend, 1, int(T0 * 1000) - 1_000)
    poison = signed_by(rogue, 1, 2**53 - 1)
    for env in (fine, poison):
        store.save_message(env, 0, env.lamport)
    assert store.room_clock(ROOM) == (0, 2**53 - 1)

    room = room_from(store, T0)
    assert room.lamport == int(T0 * 1000) + HALF_LEAD
    assert room.refused_on_restore == [poison]
    assert store.room_clock(ROOM) == (0, int(T0 * 1000) + HALF_LEAD)  # written back, lower
    assert store.history(ROOM) == [fine]
    assert store.delivered(ROOM)[bytes(rogue.verify_key)] == 1  # not delivered again

    # The next restart finds nothing to repair, and the clock moves on from the repair.
    again = room_from(store, T0 + 10)
    assert again.refused_on_restore == [] and again.lamport == int(T0 * 1000) + HALF_LEAD
    env = again.send("hello", T0 + 10)
    assert drain(again, store) == ["hello"]
    assert store.room_clock(ROOM) == (1, env.lamport)
    assert env.lamport == int(T0 * 1000) + HALF_LEAD + 1


def test_a_peer_room_repairs_its_stored_clock(tmp_path: Path) -> None:
    """The write-back where the Python client restores a room (peer.peer.Room)."""
    store = PeerStore(tmp_path / "p")
    rogue = SigningKey(b"\x07" * 32)
    poison = signed_by(rogue, 1, 2**53 - 1)
    store.save_message(poison, 0, poison.lamport)
    store.close()
    peer = Peer(tmp_path / "p", ["ws://127.0.0.1:9"])  # never connected
    before = time.time()
    room = Room(peer, ROOM, 0)
    after = time.time()
    assert peer.store.room_clock(ROOM)[0] == 0
    lamport = peer.store.room_clock(ROOM)[1]
    assert lamport == room.core.lamport
    assert int(before * 1000) + HALF_LEAD <= lamport <= int(after * 1000) + HALF_LEAD
    assert peer.store.history(ROOM) == [] and room.core.transcript() == []
    peer.store.close()


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


def store_bytes(data_dir: Path) -> int:
    """The SQLite file and its write-ahead log."""
    return sum(p.stat().st_size for p in data_dir.glob("peer.sqlite3*"))


async def test_a_rooms_store_keeps_no_more_than_the_core(tmp_path: Path) -> None:
    # The review: 1,000 envelopes of 16 KB grew the store by 14 MiB, and never shrank.
    # Now it holds at most max_history + PRUNE_EVERY of them, and the log (WAL) has
    # its own bound (SQLite checkpoints it at 1,000 pages, 4 MiB).
    # All at one instant: the rate limit (docs/protocol.md 5.4) is lifted to reach the store.
    limits = {"flood_messages": 10**6, "flood_bytes": 10**12}
    config = PeerConfig(
        room=RoomConfig(max_history=100, max_authors=50, history_count=20, **limits)
    )
    peer = Peer(tmp_path / "p", ["ws://127.0.0.1:9"], config=config)  # never connected
    room = Room(peer, ROOM, 0)
    own = [await room.send(f"mine {i}") for i in range(3)]  # older than what follows
    member = SigningKey(b"\x05" * 32)
    authors = [SigningKey(bytes([0x40 + i]) * 32) for i in range(60)]
    start = store_bytes(tmp_path / "p")
    now = time.time()
    seqs: dict[SigningKey, int] = {}
    for i in range(1, 2_001):
        key = authors[i // 10 % 60] if i % 10 == 0 else member
        seq = seqs[key] = seqs.get(key, 0) + 1
        env = Envelope(ROOM, bytes(key.verify_key), seq, int(now * 1000) + i, int(now * 1000),
                       "text", f"{i:05d}" + "b" * 16_000)  # fmt: skip
        env = replace(env, signature=key.sign(env.signed_bytes()).signature)
        room.core.receive(bytes(member.verify_key), {"t": "msg", "env": env.to_json()}, now)
        room._service()
    grown = store_bytes(tmp_path / "p") - start
    print(f"store grew by {grown / 2**20:.1f} MiB for 2,000 envelopes of 16 KB")
    assert grown < (100 + PRUNE_EVERY) * 17_000 + 5 * 2**20
    store = peer.store
    kept = store.history(ROOM, 10_000)
    assert len(kept) <= 100 + PRUNE_EVERY + len(own)  # pruned every PRUNE_EVERY saves
    assert [e for e in kept if e.author == peer.public_key] == own  # still re-sendable
    assert len(store.delivered(ROOM)) <= 50 + PRUNE_EVERY
    store.prune_room(ROOM, 100, 50, 20)
    kept = store.history(ROOM, 10_000)
    assert len(kept) == 100 + len(own) and kept[-1].body.startswith("02000")
    delivered = store.delivered(ROOM)
    assert len(delivered) == 50 and delivered[bytes(member.verify_key)] == 1_800
    last_two = [bytes(member.verify_key), bytes(authors[200 % 60].verify_key)]  # 1,999, 2,000
    assert peer.public_key in delivered and list(delivered)[-2:] == last_two
    await room.close()
    store.close()


def test_page_rooms_beyond_the_newest_hundred_are_forgotten(tmp_path: Path) -> None:
    # Every page read with the CLI or a bot added a room to the store, and nothing
    # removed one: the store grew with the pages visited (the page's store keeps 100).
    store = PeerStore(tmp_path)
    key = SigningKey(b"\x03" * 32)
    rooms = [bytes([i]) * 32 for i in range(5)]
    dm = b"\xdd" * 32  # a contact's conversation: never noted as a page's room
    for room in [*rooms, dm]:
        env = replace(signed_by(key, 1, int(T0 * 1000)), room=room)
        env = replace(env, signature=key.sign(env.signed_bytes()).signature)
        store.save_message(env, 1, env.lamport)
    for room in rooms[:3]:
        assert store.page_room_joined(room, max_rooms=3) == []
    assert store.page_room_joined(rooms[0], max_rooms=3) == []  # the newest again
    assert store.page_room_joined(rooms[3], keep={rooms[1]}, max_rooms=3) == []  # open now
    # joined last: 1 (kept while open), 2, 0, 3, now 4
    assert store.page_room_joined(rooms[4], max_rooms=3) == [rooms[2], rooms[1]]
    assert [bool(store.history(r)) for r in rooms] == [True, False, False, True, True]
    assert store.room_clock(rooms[1]) == (0, 0) and store.delivered(rooms[1]) == {}
    assert store.page_room_joined(rooms[4], max_rooms=3) == []
    assert store.page_room_joined(rooms[1], max_rooms=3) == [rooms[0]]
    assert store.history(dm) != []
    store.close()


async def test_a_peer_keeps_the_page_rooms_it_joined_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PeerStore.page_room_joined, "__defaults__", ((), 2))
    peer = Peer(tmp_path / "p", ["ws://127.0.0.1:9"])  # never connected
    keys = []
    for i in range(3):
        joining = asyncio.create_task(peer.join(f"https://example.org/{i}"))
        await asyncio.sleep(0)
        keys.append(next(iter(peer.rooms)))
        joining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await joining
        assert peer.rooms == {}
    rows = peer.store._db.execute("SELECT room FROM page_rooms ORDER BY rowid").fetchall()
    assert [bytes(r[0]) for r in rows] == keys[1:]
    await peer.close()


# --- schema versions ------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rooms (
    room BLOB PRIMARY KEY, seq INTEGER NOT NULL DEFAULT 0, lamport INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE delivered (
    room BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (room, author)
);
CREATE TABLE messages (
    room BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, lamport INTEGER NOT NULL,
    sent_at INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, signature BLOB NOT NULL,
    PRIMARY KEY (room, author, seq)
);
CREATE INDEX messages_order ON messages (room, lamport, author);
CREATE TABLE friends (key BLOB PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE downloads (
    sha256 BLOB PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL,
    verified_bytes INTEGER NOT NULL, path TEXT NOT NULL
);
"""
"""The first store's tables, as pagemesh 0.1 wrote them: its version was a `meta` row
('schema', '1'), and SQLite's user_version stayed 0."""


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_version_1_store_is_migrated_and_keeps_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    key = SigningKey(b"\x03" * 32)
    env = signed_by(key, 1, int(T0 * 1000))
    part = PartialDownload(b"\x09" * 32, "cat.png", 1000, 256, str(tmp_path / "cat.part"))
    with contextlib.closing(sqlite3.connect(data_dir / "peer.sqlite3")) as db, db:
        db.executescript(V1_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', '1'), ('display_name', 'Alice')")
        db.execute("INSERT INTO rooms VALUES (?, 4, ?)", (ROOM, env.lamport))
        db.execute("INSERT INTO delivered VALUES (?, ?, 1)", (ROOM, env.author))
        db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (env.room, env.author, env.seq, env.lamport, env.sent_at, env.kind, env.body,
             env.signature),
        )  # fmt: skip
        db.execute("INSERT INTO friends VALUES (?, 'Bob')", (b"\x01" * 32,))
        db.execute(
            "INSERT INTO downloads VALUES (?, ?, ?, ?, ?)",
            (part.sha256, part.name, part.size, part.verified_bytes, part.path),
        )
    assert user_version(data_dir / "peer.sqlite3") == 0

    store = PeerStore(data_dir)
    assert store.name == "Alice"
    assert store.room_clock(ROOM) == (4, env.lamport)
    assert store.delivered(ROOM) == {env.author: 1}
    assert store.history(ROOM) == [env]
    assert store.contacts() == [Contact(b"\x01" * 32, "Bob")]  # a friend became a contact
    assert store.partial_download(part.sha256) == part
    store.close()
    assert user_version(data_dir / "peer.sqlite3") == SCHEMA_VERSION
    with contextlib.closing(sqlite3.connect(data_dir / "peer.sqlite3")) as db:
        # from version 2 on, the version is SQLite's user_version alone
        assert db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchall() == []
    again = PeerStore(data_dir)  # a migrated store opens as it is
    assert again.name == "Alice" and again.history(ROOM) == [env]
    again.close()


def test_a_new_store_starts_at_the_current_version(tmp_path: Path) -> None:
    PeerStore(tmp_path).close()
    assert user_version(tmp_path / "peer.sqlite3") == SCHEMA_VERSION == len(MIGRATIONS)


def test_a_store_from_a_newer_pagemesh_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "peer.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE future (x)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(StoreVersionError) as refused:
        PeerStore(tmp_path)
    assert refused.value.found == SCHEMA_VERSION + 1
    assert refused.value.supported == SCHEMA_VERSION
    assert str(refused.value) == (
        f"the store {path} was written by a newer pagemesh (schema version "
        f"{SCHEMA_VERSION + 1}; this one reads up to {SCHEMA_VERSION}): upgrade pagemesh"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob("peer.sqlite3*")) == ["peer.sqlite3"]


def test_a_failed_migration_leaves_the_old_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "peer.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(V1_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', '1'), ('display_name', 'Alice')")

    def broken(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM meta")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS[:-1], broken))
    with pytest.raises(sqlite3.OperationalError):
        PeerStore(tmp_path)
    assert user_version(path) == 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM meta").fetchone()[0] == 2


def test_contacts_are_added_renamed_forgotten_and_survive_a_restart(tmp_path: Path) -> None:
    store = PeerStore(tmp_path / "a")
    ben = Contact(b"\x02" * 32, "Ben", b"\x0b" * 32, b"\x0c" * 64, ROOM, "https://e.com/", 5)
    store.save_contact(ben)
    store.save_contact(Contact(b"\x03" * 32, "ana"))
    # Re-adding without a card keeps the card that was received.
    store.save_contact(Contact(b"\x02" * 32, "Benjamin"))
    assert store.rename_contact(b"\x03" * 32, "Ana") and not store.rename_contact(b"\x09" * 32, "x")
    assert store.presence_mode == "off"
    store.presence_mode = "with-room"
    with pytest.raises(ValueError):
        store.presence_mode = "everyone"
    store.close()
    again = PeerStore(tmp_path / "a")
    assert again.contacts() == [Contact(b"\x03" * 32, "Ana"), replace(ben, petname="Benjamin")]
    assert again.presence_mode == "with-room"
    assert again.forget_contact(b"\x03" * 32) and not again.forget_contact(b"\x03" * 32)
    assert [c.petname for c in again.contacts()] == ["Benjamin"]
    again.close()
