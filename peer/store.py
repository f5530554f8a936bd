"""The peer's local store: one SQLite file in the user's data directory.

It keeps what must survive a restart: the identity (the Ed25519 seed, in a
0600 file beside the database, never in it), the display name, each room's
own sequence number and Lamport clock (so a restarted author never reuses a
seq), what was delivered per author (so a restarted reader resumes, and its
acks stay truthful), message history, contacts (a member's key, the
petname you gave them, their contact card, the room where you met; docs/protocol.md
7), keys blocked or muted (docs/protocol.md 5.4) and partial downloads.

Per room it keeps no more than the messaging core does (`prune_room`, which
the peer runs on opening a room and every `PRUNE_EVERY` messages): the newest
`max_history` envelopes, our own last `history_count` (a restarted author
re-sends those), and delivery state for the `max_authors` authors delivered
most recently (docs/protocol.md 5.0.1). So a member sending many large
messages, or envelopes from many keys, cannot grow the file without bound.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from signaling.protocol import load_or_create_seed

from .blocks import (
    MAX_BLOCKS,
    MAX_LABEL,
    BlockEntry,
    BlockRecordError,
    parse_block_device,
    parse_block_row,
)
from .messaging import Envelope

log = logging.getLogger(__name__)

PRUNE_EVERY = 64
"""Messages saved in a room between two prunings of it."""
MAX_PAGE_ROOMS = 100
"""Page rooms whose messages and clocks are kept: the least recently joined beyond are
forgotten (the page keeps as many, signaling/web/js/store.js MAX_PAGE_ROOMS)."""
KEY_FILE = "peer.key"
DB_FILE = "peer.sqlite3"

_V1_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rooms (room BLOB PRIMARY KEY, "
    "seq INTEGER NOT NULL DEFAULT 0, lamport INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS delivered (room BLOB NOT NULL, author BLOB NOT NULL, "
    "seq INTEGER NOT NULL, PRIMARY KEY (room, author))",
    "CREATE TABLE IF NOT EXISTS messages (room BLOB NOT NULL, author BLOB NOT NULL, "
    "seq INTEGER NOT NULL, lamport INTEGER NOT NULL, sent_at INTEGER NOT NULL, "
    "kind TEXT NOT NULL, body TEXT NOT NULL, signature BLOB NOT NULL, "
    "PRIMARY KEY (room, author, seq))",
    "CREATE INDEX IF NOT EXISTS messages_order ON messages (room, lamport, author)",
    "CREATE TABLE IF NOT EXISTS friends (key BLOB PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS downloads (sha256 BLOB PRIMARY KEY, name TEXT NOT NULL, "
    "size INTEGER NOT NULL, verified_bytes INTEGER NOT NULL, path TEXT NOT NULL)",
)
"""Version 1's tables, frozen: a later change is a new step in MIGRATIONS, never an edit here."""


def _create_v1(db: sqlite3.Connection) -> None:
    """0 -> 1: the first tables."""
    for statement in _V1_TABLES:
        db.execute(statement)


def _version_in_user_version(db: sqlite3.Connection) -> None:
    """1 -> 2: the version is SQLite's user_version; version 1 kept it in a `meta` row."""
    db.execute("DELETE FROM meta WHERE name = 'schema'")


def _contacts(db: sqlite3.Connection) -> None:
    """2 -> 3: `friends` (key, name) becomes `contacts`, with the contact card (their
    X25519 key and its signature, docs/protocol.md 7.1) and where you met (room id and
    page URL, kept here only). A friend of version 2 keeps its name as the petname."""
    db.execute(
        "CREATE TABLE contacts (key BLOB PRIMARY KEY, petname TEXT NOT NULL, "
        "x BLOB, card_sig BLOB, room BLOB, page TEXT, added_at INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO contacts (key, petname) SELECT key, name FROM friends")
    db.execute("DROP TABLE friends")


def _blocks(db: sqlite3.Connection) -> None:
    """3 -> 4: keys blocked or muted (docs/protocol.md 5.4), in every room."""
    db.execute(
        "CREATE TABLE blocks (key BLOB PRIMARY KEY, level TEXT NOT NULL, "
        "label TEXT NOT NULL DEFAULT '', since INTEGER NOT NULL DEFAULT 0)"
    )


def _page_rooms(db: sqlite3.Connection) -> None:
    """4 -> 5: the page rooms joined, in the order last joined (rowid), so that the
    rooms kept are bounded (MAX_PAGE_ROOMS). Rooms stored before are not listed (a
    contact's conversation cannot be told from a page's here) and stay."""
    db.execute("CREATE TABLE page_rooms (room BLOB PRIMARY KEY)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_v1,
    _version_in_user_version,
    _contacts,
    _blocks,
    _page_rooms,
)
"""Step i brings a store from version i to i + 1, all steps in one transaction."""
SCHEMA_VERSION = len(MIGRATIONS)
"""What this code writes, kept in `PRAGMA user_version`."""


class StoreVersionError(Exception):
    """The store was written by a newer pagemesh, with a schema this one cannot read.

    It is left untouched: an older program must not rewrite a newer one's tables."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"the store {path} was written by a newer pagemesh (schema version {found}; "
            f"this one reads up to {supported}): upgrade pagemesh"
        )
        self.path, self.found, self.supported = path, found, supported


def _found_version(db: sqlite3.Connection) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    if version == 0 and db.execute(tables).fetchone():
        return 1  # version 1 left user_version at 0 and wrote ('schema', '1') in meta
    return version


def _open(path: Path) -> sqlite3.Connection:
    """The store at `path`, migrated to SCHEMA_VERSION; StoreVersionError if newer."""
    db = sqlite3.connect(path, isolation_level=None)  # transactions spelled out below
    try:
        # IMMEDIATE: two processes opening one old store migrate it once, one after the other.
        db.execute("BEGIN IMMEDIATE")
        try:
            found = _found_version(db)
            if found > SCHEMA_VERSION:
                raise StoreVersionError(path, found, SCHEMA_VERSION)
            for step in MIGRATIONS[found:]:
                step(db)
            if found != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except BaseException:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # sqlite3's implicit transactions again, as `_write` expects
    return db


@dataclass(frozen=True, slots=True)
class Contact:
    """A member you added: their key, your name for them, their card, where you met."""

    key: bytes
    petname: str
    x: bytes | None = None
    """Their X25519 key from their contact card; None until a card was received."""
    card_sig: bytes | None = None
    room: bytes | None = None
    page: str | None = None
    added_at: int = 0


PRESENCE_MODES = ("off", "on", "with-room")
"""What you tell your contacts: nothing, that you are online, or also where."""


@dataclass(frozen=True, slots=True)
class PartialDownload:
    sha256: bytes
    name: str
    size: int
    verified_bytes: int
    path: str


def load_or_create_key(data_dir: Path) -> SigningKey:
    """The peer's Ed25519 key from `data_dir/peer.key` (mode 0600), created on first use."""
    return SigningKey(load_or_create_seed(data_dir / KEY_FILE))


class PeerStore:
    """SQLite-backed state of one peer identity."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.key = load_or_create_key(data_dir)
        self._db = _open(data_dir / DB_FILE)
        # WAL with synchronous=NORMAL: a commit per delivered message costs no fsync
        # (durable across a crash of the process, not of the machine's power). With the
        # default, each message waited for the disk: a few ms per member in a room.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

    def close(self) -> None:
        self._db.close()

    # --- identity -----------------------------------------------------------

    @property
    def name(self) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'display_name'").fetchone()
        return row[0] if row else None

    @name.setter
    def name(self, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('display_name', ?)", (value,))

    # --- rooms and messages -----------------------------------------------------

    def room_clock(self, room: bytes) -> tuple[int, int]:
        """(own seq, lamport) of a room; (0, 0) for a new one."""
        row = self._db.execute("SELECT seq, lamport FROM rooms WHERE room = ?", (room,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def save_message(self, env: Envelope, own_seq: int, lamport: int) -> None:
        """Record a delivered message and the room's clocks in one transaction."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    env.room,
                    env.author,
                    env.seq,
                    env.lamport,
                    env.sent_at,
                    env.kind,
                    env.body,
                    env.signature,
                ),
            )
            # REPLACE gives the row a new rowid: rowid order is the order of activity,
            # which `delivered` returns and `prune_room` keeps the end of.
            # Named parameters take a mapping: Python 3.12 deprecates a sequence for
            # them (numbered ?1 included), and 3.14 refuses it.
            db.execute(
                "INSERT OR REPLACE INTO delivered VALUES (:room, :author, max(:seq, coalesce("
                "(SELECT seq FROM delivered WHERE room = :room AND author = :author), 0)))",
                {"room": env.room, "author": env.author, "seq": env.seq},
            )
            db.execute(
                "INSERT INTO rooms VALUES (?, ?, ?) ON CONFLICT (room) DO UPDATE SET "
                "seq = max(seq, excluded.seq), lamport = max(lamport, excluded.lamport)",
                (env.room, own_seq, lamport),
            )

    def repair_room_clock(
        self, room: bytes, lamport: int, forget: list[Envelope] | None = None
    ) -> None:
        """Set a room's Lamport clock to exactly `lamport` and forget the `forget` messages.

        `save_message` only ever raises the clock. A clock that a member pushed far
        ahead of real time (stored before that was refused) is repaired when the room
        is restored (docs/protocol.md 5.0.1); this writes the lower clock back, and
        drops the envelopes the repair refused, so they stop taking history's places.
        """
        with self._write() as db:
            db.execute(
                "INSERT INTO rooms VALUES (?, 0, ?) ON CONFLICT (room) DO UPDATE SET "
                "lamport = excluded.lamport",
                (room, lamport),
            )
        self.forget_messages(room, forget or ())

    def page_room_joined(
        self, room: bytes, keep: Collection[bytes] = (), max_rooms: int = MAX_PAGE_ROOMS
    ) -> list[bytes]:
        """Note a page's `room` as joined now and forget (messages, delivery state,
        clocks) the page rooms joined least recently beyond the newest `max_rooms`, but
        those in `keep` (open now). A contact's conversation is never listed here, so
        never forgotten (as the page's store, signaling/web/js/store.js). Returns the
        rooms forgotten."""
        with self._write() as db:
            # REPLACE gives the row a new rowid: rowid order is the order last joined.
            db.execute("INSERT OR REPLACE INTO page_rooms VALUES (?)", (room,))
            old = db.execute(
                "SELECT room FROM page_rooms ORDER BY rowid DESC LIMIT -1 OFFSET ?",
                (max(1, max_rooms),),
            ).fetchall()
            gone = [(bytes(r[0]),) for r in old if bytes(r[0]) not in keep]
            for table in ("page_rooms", "rooms", "delivered", "messages"):
                db.executemany(f"DELETE FROM {table} WHERE room = ?", gone)
        return [r[0] for r in gone]

    def forget_messages(self, room: bytes, envs: Iterable[Envelope]) -> None:
        """Delete the `envs` of `room` (refused on restore, or our own taken back)."""
        with self._write() as db:
            db.executemany(
                "DELETE FROM messages WHERE room = ? AND author = ? AND seq = ?",
                [(room, env.author, env.seq) for env in envs],
            )

    def delivered(self, room: bytes) -> dict[bytes, int]:
        """What was delivered per author, the least recently delivered author first."""
        rows = self._db.execute(
            "SELECT author, seq FROM delivered WHERE room = ? ORDER BY rowid", (room,)
        )
        return {bytes(author): seq for author, seq in rows}

    def prune_room(
        self, room: bytes, max_history: int, max_authors: int, own_resend: int
    ) -> tuple[int, int]:
        """Forget what the messaging core no longer keeps of a room: envelopes older
        than the newest `max_history` (in total order), except our own last
        `own_resend`, and delivery state beyond the `max_authors` authors delivered
        most recently (ourselves always kept). Returns (messages, authors) forgotten.

        Freed pages are reused by later messages, so the file stops growing."""
        me = bytes(self.key.verify_key)
        own_seq = self.room_clock(room)[0]
        with self._write() as db:
            messages = db.execute(
                "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages "
                "WHERE room = :room ORDER BY lamport DESC, author DESC, seq DESC "
                "LIMIT -1 OFFSET :keep) AND NOT (author = :me AND seq > :resend_from)",
                {"room": room, "keep": max_history, "me": me, "resend_from": own_seq - own_resend},
            ).rowcount
            authors = db.execute(
                "DELETE FROM delivered WHERE rowid IN (SELECT rowid FROM delivered "
                "WHERE room = :room AND author != :me ORDER BY rowid DESC LIMIT -1 OFFSET :keep)",
                {"room": room, "me": me, "keep": max(0, max_authors - 1)},
            ).rowcount
        return messages, authors

    def history(self, room: bytes, limit: int = 1000) -> list[Envelope]:
        """The newest `limit` messages of a room, in total order."""
        rows = self._db.execute(
            "SELECT room, author, seq, lamport, sent_at, kind, body, signature FROM messages "
            "WHERE room = ? ORDER BY lamport DESC, author DESC, seq DESC LIMIT ?",
            (room, limit),
        ).fetchall()
        return [
            Envelope(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], r[5], r[6], bytes(r[7]))
            for r in reversed(rows)
        ]

    # --- contacts ------------------------------------------------------------------

    def save_contact(self, contact: Contact) -> None:
        """Add or replace a contact (a card already known is kept when none is given)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO contacts VALUES (:key, :petname, :x, :sig, :room, :page, :at) "
                "ON CONFLICT (key) DO UPDATE SET petname = excluded.petname, "
                "x = coalesce(excluded.x, x), card_sig = coalesce(excluded.card_sig, card_sig), "
                "room = coalesce(excluded.room, room), page = coalesce(excluded.page, page)",
                {
                    "key": contact.key,
                    "petname": contact.petname,
                    "x": contact.x,
                    "sig": contact.card_sig,
                    "room": contact.room,
                    "page": contact.page,
                    "at": contact.added_at,
                },
            )

    def contacts(self) -> list[Contact]:
        """Every contact, by petname."""
        rows = self._db.execute(
            "SELECT key, petname, x, card_sig, room, page, added_at FROM contacts "
            "ORDER BY petname COLLATE NOCASE, key"
        )
        return [
            Contact(
                bytes(r[0]),
                r[1],
                None if r[2] is None else bytes(r[2]),
                None if r[3] is None else bytes(r[3]),
                None if r[4] is None else bytes(r[4]),
                r[5],
                r[6],
            )
            for r in rows
        ]

    def rename_contact(self, key: bytes, petname: str) -> bool:
        with self._write() as db:
            changed = db.execute(
                "UPDATE contacts SET petname = ? WHERE key = ?", (petname, key)
            ).rowcount
        return changed > 0

    def forget_contact(self, key: bytes) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM contacts WHERE key = ?", (key,)).rowcount
        return gone > 0

    def dm_acked(self, room: bytes) -> int:
        """A DM room's highest own seq the contact acknowledged (docs/protocol.md 7.4)."""
        name = "dm-acked:" + room.hex()
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_dm_acked(self, room: bytes, seq: int) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", ("dm-acked:" + room.hex(), str(seq))
            )

    @property
    def presence_mode(self) -> str:
        """What this identity tells its contacts (`PRESENCE_MODES`); off until chosen."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'presence'").fetchone()
        return row[0] if row and row[0] in PRESENCE_MODES else "off"

    @presence_mode.setter
    def presence_mode(self, mode: str) -> None:
        if mode not in PRESENCE_MODES:
            raise ValueError(f"presence is one of {', '.join(PRESENCE_MODES)}")
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('presence', ?)", (mode,))

    # --- blocks and mutes (docs/protocol.md 5.4) ---------------------------------------

    def set_block(self, key: bytes, level: str, label: str = "", since: int = 0) -> None:
        """Block or mute `key` (a block replaces a mute and the other way round);
        ValueError past MAX_BLOCKS keys or for a bad level, key or label."""
        entry = parse_block_row((key, level, label[:MAX_LABEL], since))  # what reads back
        with self._write() as db:
            count = db.execute("SELECT count(*) FROM blocks WHERE key != ?", (key,)).fetchone()
            if count[0] >= MAX_BLOCKS:
                raise ValueError(f"at most {MAX_BLOCKS} keys are blocked or muted")
            db.execute(
                "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)",
                (entry.key, entry.level, entry.label, entry.since),
            )

    def clear_block(self, key: bytes, level: str | None = None) -> bool:
        """Unblock or unmute `key` (only if it is at `level`, when given)."""
        with self._write() as db:
            if level is None:
                cursor = db.execute("DELETE FROM blocks WHERE key = ?", (key,))
            else:
                cursor = db.execute("DELETE FROM blocks WHERE key = ? AND level = ?", (key, level))
            return cursor.rowcount > 0

    def set_block_device(self, device: bytes, identity: bytes) -> bool:
        """Remember that `device` showed a delegation from `identity`, a person blocked or
        muted (docs/protocol.md 5.4): a `meta` row, so the device is caught from our next
        start on, before its link opens. False (not kept) past MAX_BLOCKS such rows."""
        if len(device) != 32 or len(identity) != 32:
            raise ValueError("keys are 32 bytes")
        name = "block-device:" + device.hex()
        with self._write() as db:
            count = db.execute(
                "SELECT count(*) FROM meta WHERE name LIKE 'block-device:%' AND name != ?", (name,)
            ).fetchone()
            if count[0] >= MAX_BLOCKS:
                return False
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, identity.hex()))
        return True

    def clear_block_devices(self, identity: bytes) -> None:
        """Forget the devices remembered for `identity` (it was unblocked or unmuted)."""
        with self._write() as db:
            db.execute(
                "DELETE FROM meta WHERE name LIKE 'block-device:%' AND value = ?", (identity.hex(),)
            )

    def block_devices(self) -> dict[bytes, bytes]:
        """Device key -> the blocked or muted identity it showed a delegation from; a
        damaged row is left out."""
        found: dict[bytes, bytes] = {}
        for name, value in self._db.execute(
            "SELECT name, value FROM meta WHERE name LIKE 'block-device:%' LIMIT ?", (MAX_BLOCKS,)
        ):
            try:
                device, identity = parse_block_device(name.removeprefix("block-device:"), value)
            except BlockRecordError:
                continue
            found[device] = identity
        return found

    def blocks(self) -> dict[bytes, BlockEntry]:
        """Every key blocked or muted; a row that does not parse (a damaged store) is
        left out and logged, never a reason not to start."""
        found: dict[bytes, BlockEntry] = {}
        for row in self._db.execute(
            "SELECT key, level, label, since FROM blocks LIMIT ?", (MAX_BLOCKS,)
        ):
            try:
                entry = parse_block_row(tuple(row))
            except BlockRecordError as exc:
                log.warning("a block in the store is damaged, left out: %s", exc)
                continue
            found[entry.key] = entry
        return found

    # --- partial downloads -------------------------------------------------------------

    def save_download(self, download: PartialDownload) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO downloads VALUES (?, ?, ?, ?, ?)",
                (
                    download.sha256,
                    download.name,
                    download.size,
                    download.verified_bytes,
                    download.path,
                ),
            )

    def partial_download(self, sha256: bytes) -> PartialDownload | None:
        row = self._db.execute(
            "SELECT sha256, name, size, verified_bytes, path FROM downloads WHERE sha256 = ?",
            (sha256,),
        ).fetchone()
        return PartialDownload(bytes(row[0]), row[1], row[2], row[3], row[4]) if row else None

    def finish_download(self, sha256: bytes) -> None:
        with self._write() as db:
            db.execute("DELETE FROM downloads WHERE sha256 = ?", (sha256,))
