"""Contacts and presence for contacts only: the cryptography, with no I/O (docs/protocol.md 7).

A person who adds a member as a contact keeps that member's **contact card**:
their Ed25519 key, an X25519 key, and the Ed25519 signature binding the two
(`ContactCard`, exchanged as a `card` control frame on every data channel,
5.0 and 7.1). Two people who hold each other's cards share a **pair secret**
(X25519 then HKDF-SHA256 over both identities, sorted: `pair_secret`), which
nobody else can compute. From it, per direction (who publishes for whom) and
per epoch of `EPOCH_SECONDS`, `presence_slot` derives:

- the DHT key under which A's presence for B is stored (20 bytes),
- an Ed25519 seed whose public key publishes that record (so the publishers
  that nodes see are fresh random-looking keys, unlinkable to A or B),
- an AES-256-GCM key that encrypts the presence (`PresenceNote`).

The record is an ordinary signed DHT record (docs/protocol.md 1.4): nodes
check its signature, TTL, size and seq like any other and learn neither who
published it, for whom, nor what it says. `seal_presence` builds one,
`open_presence` checks and reads one; `open_presence` raises only
`PresenceError` for anything a stranger, a node or a contact could put there
(tests/peer/test_friends.py fuzzes it). The browser twin is
signaling/web/js/friends.js; tests/web/test_friends_twins.py checks both give the
same bytes.

The same pair secret later names a direct-message room (`dm_room`), so a
DM between two contacts needs no further exchange.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from signaling.protocol import (
    ROOM_KEY_BYTES,
    Record,
    is_node_url,
    signed_payload,
    verify_signature,
)

KEY_BYTES = 32
SIG_BYTES = 64
DHT_KEY_BYTES = 20
NONCE_BYTES = 12
TAG_BYTES = 16
EPOCH_SECONDS = 600
"""How long one slot (DHT key, publisher key, AES key) of a direction lasts."""
PRESENCE_TTL = 180
"""A presence record's life; a publisher renews it every `PRESENCE_REFRESH` seconds."""
PRESENCE_REFRESH = 60
MAX_AHEAD = 3600 + 60
"""A record's expiry at most this far ahead (the DHT's max TTL and clock skew, 1.4)."""
EPOCH_OVERLAP = 120
"""Within this many seconds after an epoch begins a reader reads the previous slot too
(a publisher whose clock is behind still writes there)."""
PAD_TO = 256
"""Plaintexts are padded to a multiple of this, so a record's size tells little."""
MAX_PAGE_BYTES = 1024
"""UTF-8 bytes of a canonical page URL in a presence (the record value stays <= 2048)."""
MAX_PETNAME = 64
MAX_CONTACTS = 1000
RECORD_RATE = 1.8
RECORD_BURST = 20
"""How fast a client sends put-record and get-record: under the node's record bucket (2 a
second, bursts of 64) and, with the rest of its frames, its frame bucket (20 a second,
bursts of 40), whose refusals carry no request id (docs/protocol.md 3.5, 7.3). A round
for N contacts with a card takes about 2N / 1.8 seconds past the first 20 requests."""

CARD_CONTEXT = b"pagemesh-card/1\0"
X25519_INFO = b"pagemesh-friends/1 x25519"
PAIR_INFO = b"pagemesh-pair/1\0"
SLOT_INFO = b"pagemesh-presence/1\0"
DM_INFO = b"pagemesh-dm/1\0"
PRESENCE_VERSION = 1


class PresenceError(ValueError):
    """A card or presence record that is not one a contact made for us (the reason says why)."""


def _hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    # RFC 5869 with an empty salt (a zero-filled block), the same in WebCrypto.
    return HKDF(hashes.SHA256(), length, b"", info).derive(ikm)


# --- the identity's X25519 key and its card -------------------------------------------


def x25519_seed(identity_seed: bytes) -> bytes:
    """The X25519 private key a person's Ed25519 seed gives: one identity, one card,
    on every device the identity file moves to."""
    if len(identity_seed) != KEY_BYTES:
        raise ValueError("an Ed25519 seed has 32 bytes")
    return _hkdf(identity_seed, X25519_INFO, KEY_BYTES)


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def card_message(key: bytes, x: bytes) -> bytes:
    return CARD_CONTEXT + key + x


@dataclass(frozen=True, slots=True)
class ContactCard:
    """A person's Ed25519 key, their X25519 key, and the signature binding them."""

    key: bytes
    x: bytes
    sig: bytes

    @classmethod
    def create(cls, identity: SigningKey, x_private: bytes) -> ContactCard:
        key = bytes(identity.verify_key)
        x = x25519_public(x_private)
        return cls(key, x, identity.sign(card_message(key, x)).signature)

    def verify(self) -> bool:
        return verify_signature(self.key, card_message(self.key, self.x), self.sig)

    def to_frame(self) -> dict[str, str]:
        """The `card` control frame (docs/protocol.md 7.1); the sender's key is the link's."""
        return {"t": "card", "x": self.x.hex(), "sig": base64.b64encode(self.sig).decode()}


def parse_card_frame(member: bytes, frame: Any) -> ContactCard:
    """The card in a `card` control frame from `member`, verified; PresenceError if not."""
    if not isinstance(frame, dict) or frame.get("t") != "card":
        raise PresenceError("not a card frame")
    x, sig = frame.get("x"), frame.get("sig")
    if not isinstance(x, str) or len(x) != 2 * KEY_BYTES or x.lower() != x:
        raise PresenceError("card.x: expected 64 lower-case hex digits")
    if not isinstance(sig, str) or len(sig) != 88:
        raise PresenceError("card.sig: expected base64 of 64 bytes")
    try:
        raw_x = bytes.fromhex(x)
        raw_sig = base64.b64decode(sig, validate=True)
    except (ValueError, binascii.Error):
        raise PresenceError("card: bad hex or base64") from None
    card = ContactCard(member, raw_x, raw_sig)
    if len(raw_sig) != SIG_BYTES or not card.verify():
        raise PresenceError("card: the signature does not verify")
    return card


# --- the pair secret and what it derives ------------------------------------------------


def pair_secret(mine: bytes, my_x_private: bytes, theirs: ContactCard) -> bytes:
    """The secret two contacts share: X25519(mine, theirs), HKDF'd with both identities.

    `info` holds both (Ed25519 key, X25519 key) pairs, the lower Ed25519 key first, so
    both sides compute the same 32 bytes, bound to who they are."""
    try:
        shared = X25519PrivateKey.from_private_bytes(my_x_private).exchange(
            X25519PublicKey.from_public_bytes(theirs.x)
        )
    except ValueError:
        raise PresenceError("a low-order X25519 key") from None
    me = (mine, x25519_public(my_x_private))
    them = (theirs.key, theirs.x)
    low, high = sorted([me, them])
    return _hkdf(shared, PAIR_INFO + low[0] + low[1] + high[0] + high[1], KEY_BYTES)


def dm_room(secret: bytes) -> bytes:
    """The room id of the pair's direct messages (item 3 of M13 builds on it): 20 bytes
    of HKDF, a key space apart from rooms of pages and from presence slots."""
    return _hkdf(secret, DM_INFO, ROOM_KEY_BYTES)


def epoch_of(now: float) -> int:
    return int(now // EPOCH_SECONDS)


@dataclass(frozen=True, slots=True)
class PresenceSlot:
    """One direction's key material for one epoch."""

    dht_key: bytes
    signing_seed: bytes
    aes_key: bytes

    @property
    def publisher(self) -> bytes:
        return bytes(SigningKey(self.signing_seed).verify_key)


def presence_slot(secret: bytes, publisher: bytes, reader: bytes, epoch: int) -> PresenceSlot:
    """Where and how `publisher`'s presence for `reader` lives in `epoch`."""
    info = SLOT_INFO + publisher + reader + struct.pack(">Q", epoch)
    out = _hkdf(secret, info, DHT_KEY_BYTES + 2 * KEY_BYTES)
    return PresenceSlot(out[:20], out[20:52], out[52:84])


def read_epochs(now: float) -> list[int]:
    """The epochs a reader looks in at `now`: this one, and the last one early on."""
    epoch = epoch_of(now)
    if now - epoch * EPOCH_SECONDS < EPOCH_OVERLAP:
        return [epoch, epoch - 1]
    return [epoch]


# --- the presence itself -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresenceNote:
    """What a contact tells a contact: online or not, and where, if they chose to say."""

    online: bool
    expires: int
    room: bytes | None = None
    layer: int | None = None
    page: str | None = None
    """The canonical page URL of `room` (a private room's secret is never in it)."""
    node: str | None = None
    """The publisher's node (ws:// or wss://), where `join` with `friend` finds them."""
    dm: bool = False
    """A direct message waits for this contact: join our DM room (docs/protocol.md 7.4)."""

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"v": PRESENCE_VERSION, "on": self.online, "exp": self.expires}
        if self.room is not None:
            body["room"] = self.room.hex()
            body["layer"] = self.layer if self.layer is not None else 0
            if self.page is not None:
                body["page"] = self.page
            if self.node is not None:
                body["node"] = self.node
        if self.dm:
            body["dm"] = True
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _pad(data: bytes) -> bytes:
    # JSON then spaces to a multiple of PAD_TO (JSON readers skip trailing whitespace).
    return data + b" " * (-len(data) % PAD_TO)


def parse_presence_note(data: bytes) -> PresenceNote:
    if len(data) > 2048:
        raise PresenceError("a presence is at most 2048 bytes")
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PresenceError("a presence is UTF-8 JSON") from None
    # `true == 1` in Python, not in JavaScript: a version is a number, never a boolean.
    if (
        not isinstance(body, dict)
        or isinstance(body.get("v"), bool)
        or body.get("v") != PRESENCE_VERSION
    ):
        raise PresenceError("a presence is a version 1 object")
    online, expires = body.get("on"), _integral(body.get("exp"))
    if not isinstance(online, bool):
        raise PresenceError("presence.on: expected true or false")
    if isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 2**40:
        raise PresenceError("presence.exp: expected Unix seconds")
    room = layer = page = node = None
    if "room" in body:
        text = body["room"]
        if not isinstance(text, str) or len(text) != 2 * ROOM_KEY_BYTES:
            raise PresenceError("presence.room: expected 40 hex digits")
        try:
            room = bytes.fromhex(text)
        except ValueError:
            raise PresenceError("presence.room: expected 40 hex digits") from None
        layer = _integral(body.get("layer"))
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < 2**16:
            raise PresenceError("presence.layer: expected an integer in 0..65535")
        page = body.get("page")
        if page is not None and (
            not isinstance(page, str)
            or len(page.encode("utf-8", "replace")) > MAX_PAGE_BYTES
            or not page.startswith(("http://", "https://"))
        ):
            raise PresenceError("presence.page: expected an http(s) URL")
        node = body.get("node")
        if node is not None and (not isinstance(node, str) or not is_node_url(node)):
            raise PresenceError("presence.node: expected a ws:// or wss:// URL")
    dm = body.get("dm", False)
    if not isinstance(dm, bool):
        raise PresenceError("presence.dm: expected true or false")
    return PresenceNote(online, expires, room, layer, page, node, dm)


def _integral(value: Any) -> Any:
    # JSON.parse reads 5.0 as 5: an integral number is one, in both readers.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def seal_presence(slot: PresenceSlot, note: PresenceNote, seq: int, nonce: bytes) -> Record:
    """A signed DHT record carrying `note`, encrypted under the slot's AES key.

    value = nonce (12) || AES-GCM(padded JSON, associated data = dht key || publisher).
    `nonce` comes from the caller's random source (never reuse one with a slot's key)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("an AES-GCM nonce has 12 bytes")
    signer = SigningKey(slot.signing_seed)
    publisher = bytes(signer.verify_key)
    plain = note.to_json()
    if len(plain) > 2048 - NONCE_BYTES - TAG_BYTES - PAD_TO:
        raise ValueError("the presence is too large for a record")
    sealed = AESGCM(slot.aes_key).encrypt(nonce, _pad(plain), slot.dht_key + publisher)
    value = nonce + sealed
    sig = signer.sign(signed_payload(slot.dht_key, publisher, seq, note.expires, value)).signature
    return Record(slot.dht_key, publisher, seq, note.expires, value, sig)


def open_presence(slot: PresenceSlot, record: Record, now: float) -> PresenceNote:
    """The note in `record` if the slot's publisher made it; PresenceError otherwise."""
    if record.key != slot.dht_key or record.publisher != slot.publisher:
        raise PresenceError("not this slot's record")
    if record.expires_at <= now or record.expires_at > now + MAX_AHEAD:
        raise PresenceError("the record has expired, or expires too far ahead")
    payload = signed_payload(
        record.key, record.publisher, record.seq, record.expires_at, record.value
    )
    if len(record.signature) != SIG_BYTES or not _verify(
        record.publisher, payload, record.signature
    ):
        raise PresenceError("the record's signature does not verify")
    value = record.value
    if len(value) < NONCE_BYTES + TAG_BYTES:
        raise PresenceError("a sealed presence is too short")
    try:
        plain = AESGCM(slot.aes_key).decrypt(
            value[:NONCE_BYTES], value[NONCE_BYTES:], record.key + record.publisher
        )
    except InvalidTag:
        raise PresenceError("the presence does not decrypt") from None
    note = parse_presence_note(plain)
    if note.expires != record.expires_at:
        raise PresenceError("the presence's expiry is not the record's")
    return note


def _verify(key: bytes, message: bytes, sig: bytes) -> bool:
    try:
        VerifyKey(key).verify(message, sig)
    except (BadSignatureError, ValueError):
        return False
    return True


# --- the book: whom to tell, whom to ask, and what we know --------------------------------


@dataclass(frozen=True, slots=True)
class PutPresence:
    """Store this record through our node (put-record, docs/protocol.md 7.3)."""

    record: Record


@dataclass(frozen=True, slots=True)
class GetPresence:
    """Read `contact`'s record for us in `epoch` (get-record)."""

    contact: bytes
    epoch: int
    key: bytes
    publisher: bytes


PresenceCommand = PutPresence | GetPresence


@dataclass(frozen=True, slots=True)
class Place:
    """Where we are, as far as we tell contacts who may know it."""

    room: bytes
    layer: int
    page: str | None
    node: str | None


class PresenceBook:
    """Presence for contacts, with no I/O: what to publish and read, and when.

    Fed the contacts (their cards), our mode (`off`, `on`, `with-room`), our place,
    and the records its reads found, with `now`; it says what to put and get
    (`commands`) and when it next has work (`get_timer`). Every `PRESENCE_REFRESH`
    seconds it republishes our note for each contact with a card (when the mode is
    not off) and reads each contact's note for us. A contact is online while their
    last note says so and has not expired; `going_offline` publishes notes that say
    we left, so contacts see it at their next read instead of at the expiry.
    """

    __slots__ = (
        "_commands",
        "_contacts",
        "_knocks",
        "_next",
        "_nonce",
        "_place",
        "_secrets",
        "_seen",
        "_seq",
        "_unknocked",
        "me",
        "mode",
        "x_private",
    )

    def __init__(self, me: bytes, x_private: bytes, nonce: Any) -> None:
        self.me = me
        self.x_private = x_private
        self._nonce = nonce
        """Callable[[int], bytes]: fresh random bytes for AES-GCM nonces (os.urandom)."""
        self.mode = "off"
        self._place: Place | None = None
        self._contacts: dict[bytes, ContactCard | None] = {}
        self._secrets: dict[bytes, bytes] = {}
        self._seen: dict[bytes, tuple[int, PresenceNote]] = {}
        """contact -> (seq, note) of the newest note read from them."""
        self._next: float | None = 0.0
        self._seq = 0
        self._commands: list[PresenceCommand] = []
        self._knocks: frozenset[bytes] = frozenset()
        self._unknocked: frozenset[bytes] = frozenset()
        """Contacts no DM waits for any more, told so at the next publish when off."""
        """Contacts a direct message of ours waits for (7.4): told so, even when off."""

    # --- what the person decides -----------------------------------------------------------

    def set_contacts(self, cards: dict[bytes, ContactCard | None]) -> None:
        """Every contact, with its card when one was received (`None`: not yet)."""
        if len(cards) > MAX_CONTACTS:
            raise ValueError(f"at most {MAX_CONTACTS} contacts")
        # A contact's secret is made again only when its card changed: a contact sending
        # card after card must not have every contact's secret made again for each.
        before, made = self._contacts, self._secrets
        self._contacts = dict(cards)
        self._secrets = {}
        for key, card in cards.items():
            if card is not None and card.key == key:
                if before.get(key) == card:
                    if key in made:
                        self._secrets[key] = made[key]
                    continue  # (or a low-order key, as before)
                try:
                    self._secrets[key] = pair_secret(self.me, self.x_private, card)
                except PresenceError:
                    continue
        for gone in set(self._seen) - set(cards):
            del self._seen[gone]
        self._next = 0.0

    def set_mode(self, mode: str, now: float) -> None:
        if mode not in ("off", "on", "with-room"):
            raise ValueError("presence is off, on or with-room")
        if self.mode != "off" and mode == "off":
            self._publish(now, online=False)
        self.mode = mode
        self._next = 0.0

    def set_place(self, place: Place | None) -> None:
        if place != self._place:
            self._place = place
            self._next = 0.0

    def set_knocks(self, contacts: frozenset[bytes]) -> bool:
        """The contacts a direct message of ours waits for (docs/protocol.md 7.4): their
        notes say `dm`, and they get notes (online) even while the mode is off. True when
        that changed (then publishing is due now)."""
        contacts = frozenset(c for c in contacts if c in self._contacts)
        if contacts == self._knocks:
            return False
        self._unknocked = (self._unknocked | (self._knocks - contacts)) - contacts
        self._knocks = contacts
        self._next = 0.0
        return True

    def knocking(self, now: float) -> frozenset[bytes]:
        """Online contacts whose note says a direct message of theirs waits for us."""
        return frozenset(key for key, note in self.online(now).items() if note.dm)

    def going_offline(self, now: float) -> None:
        """We leave: tell every contact so (a note that says offline, same expiry rules)."""
        if self.mode != "off" or self._knocks:
            self._publish(now, online=False)

    def secret_with(self, contact: bytes) -> bytes | None:
        """The pair secret with `contact` (None before their card): `dm_room` takes it."""
        return self._secrets.get(contact)

    # --- what the reads found --------------------------------------------------------------

    def found(self, contact: bytes, epoch: int, record: Record | None, now: float) -> None:
        secret = self._secrets.get(contact)
        if record is None or secret is None:
            return
        slot = presence_slot(secret, contact, self.me, epoch)
        try:
            note = open_presence(slot, record, now)
        except PresenceError:
            return  # a node or a stranger put something there: ignored
        previous = self._seen.get(contact)
        if previous is None or record.seq > previous[0] or previous[1].expires <= now:
            self._seen[contact] = (record.seq, note)

    def online(self, now: float) -> dict[bytes, PresenceNote]:
        """Contacts whose newest note says online and has not expired."""
        return {
            key: note
            for key, (_, note) in self._seen.items()
            if note.online and note.expires > now and key in self._contacts
        }

    # --- time --------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._next if self._secrets else None

    def handle_timer(self, now: float) -> None:
        if self._next is None or now < self._next or not self._secrets:
            return
        if self.mode != "off" or self._knocks:
            self._publish(now, online=True)
        if self.mode == "off" and self._unknocked:
            self._publish(now, online=False, only=self._unknocked)  # seen online for a DM
        self._unknocked = frozenset()
        for contact in self._secrets:
            self._read(contact, now)
        self._next = now + PRESENCE_REFRESH

    def due_now(self) -> None:
        """Publish and read at the next `handle_timer`, whatever the refresh said."""
        self._next = 0.0

    def commands(self) -> list[PresenceCommand]:
        out, self._commands = self._commands, []
        return out

    def _read(self, contact: bytes, now: float) -> None:
        secret = self._secrets[contact]
        for epoch in read_epochs(now):
            slot = presence_slot(secret, contact, self.me, epoch)
            self._commands.append(GetPresence(contact, epoch, slot.dht_key, slot.publisher))

    def _publish(self, now: float, online: bool, only: frozenset[bytes] | None = None) -> None:
        place = self._place if online and self.mode == "with-room" else None
        expires = int(now) + PRESENCE_TTL
        if place is None:
            note = PresenceNote(online, expires)
        else:
            note = PresenceNote(online, expires, place.room, place.layer, place.page, place.node)
        # Milliseconds, and always past the last: a note replaces the one before it even
        # within the same millisecond (a leave right after a refresh).
        seq = self._seq = max(int(now * 1000), self._seq + 1)
        for contact, secret in self._secrets.items():
            knock = contact in self._knocks
            if only is not None:
                if contact not in only:
                    continue
            elif self.mode == "off" and not knock:
                continue  # presence off: only a contact a DM waits for is told (7.4)
            told = replace(note, dm=online and knock)
            slot = presence_slot(secret, self.me, contact, epoch_of(now))
            self._commands.append(PutPresence(seal_presence(slot, told, seq, self._nonce(12))))
