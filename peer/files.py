"""File transfer formats and the receiving side's state, with no I/O.

A file is offered on the control channel (`FileOffer`, JSON) and, once
accepted, sent on a data channel of its own as binary chunk frames:

    offset (8 bytes, big-endian) || SHA-256 of the data (32 bytes) || data

The receiver (`FileDownload`) takes chunks only in order, checks each one's
digest, hashes the verified prefix as it grows, and at the end compares the
whole file's SHA-256 with the offer's. A corrupted chunk is refused and the
transfer resumes from the last verified byte (`resume_offset`), after a
reconnection or a restart alike (docs/protocol.md, "Files").

An offer is new to the members present when it is made; a member who comes
later hears it as one made `earlier` (a "shared earlier" entry it may fetch
while the sender is here), never as a new one, and no accept policy takes it
unless told to (`AcceptRule`). A sender offers its newest files only, each for
an hour (`SharedFiles`), as a receiver keeps them.

What a member may make a receiver keep is bounded here too (`OfferBook`):
offers per member and per room, a rate per member, an age, and the number
of downloads an accept policy runs at once. The receiver's file names are
its own business (`local_name`, `part_name`): the name in an offer is only
a suggestion, mapped to one that any filesystem takes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from signaling.protocol import TokenBucket

CHUNK_HEADER = 8 + 32
DEFAULT_CHUNK = 64 * 1024
MAX_CHUNK = 256 * 1024
MAX_NAME = 255
MAX_LOCAL_NAME = 200
"""UTF-8 bytes of a local file name: filesystems take 255, and ` (n)` may follow."""
MAX_EXTENSION = 32
_ID = re.compile(r"[0-9a-f]{32}")
_MIME = re.compile(r"[\w.+-]+/[\w.+-]+")
_EMPTY_SHA256 = hashlib.sha256(b"").digest()


class FileRejected(ValueError):
    """An offer or chunk that breaks the format or a limit; the message says which."""


@dataclass(frozen=True, slots=True)
class FileOffer:
    id: str
    name: str
    size: int
    mime: str
    sha256: bytes
    chunk_size: int = DEFAULT_CHUNK

    def to_json(self, earlier: bool = False) -> dict[str, Any]:
        """The `file-offer` frame; `earlier` for a member who was not here when it was made."""
        frame = {
            "t": "file-offer",
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "mime": self.mime,
            "sha256": self.sha256.hex(),
            "chunk": self.chunk_size,
        }
        if earlier:
            frame["earlier"] = True
        return frame


def parse_offer_frame(data: Any, max_size: int) -> tuple[FileOffer, bool]:
    """A `file-offer` frame: the offer, and whether it was made before we came."""
    offer = parse_offer(data, max_size)
    return offer, data.get("earlier", False) is True


def parse_offer(data: Any, max_size: int) -> FileOffer:
    """Validate an offer: names without paths, sizes within `max_size`."""
    try:
        offer = FileOffer(
            data["id"],
            data["name"],
            data["size"],
            data["mime"],
            bytes.fromhex(data["sha256"]),
            data.get("chunk", DEFAULT_CHUNK),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FileRejected("malformed file offer") from None
    if not isinstance(offer.id, str) or not _ID.fullmatch(offer.id):
        raise FileRejected("a file id is 32 hex digits")
    if not isinstance(offer.name, str) or not 0 < len(offer.name) <= MAX_NAME:
        raise FileRejected(f"a file name has 1..{MAX_NAME} characters")
    if "/" in offer.name or "\\" in offer.name or offer.name in (".", "..") or "\0" in offer.name:
        raise FileRejected("a file name must not contain a path")
    if not isinstance(offer.mime, str) or not _MIME.fullmatch(offer.mime):
        raise FileRejected("a mime type looks like type/subtype")
    if len(offer.sha256) != 32:
        raise FileRejected("sha256 is 32 bytes")
    for number in (offer.size, offer.chunk_size):
        if not isinstance(number, int) or isinstance(number, bool):
            raise FileRejected("size and chunk are integers")
    if not 0 <= offer.size <= max_size:
        raise FileRejected(f"file of {offer.size} bytes is over the limit of {max_size}")
    if not 1024 <= offer.chunk_size <= MAX_CHUNK:
        raise FileRejected(f"chunk size must be in 1024..{MAX_CHUNK}")
    if offer.size == 0 and offer.sha256 != _EMPTY_SHA256:
        raise FileRejected("an empty file's sha256 is that of no bytes")
    if not isinstance(data.get("earlier", False), bool):
        raise FileRejected("earlier is true or false")
    return offer


def chunk_frame(offset: int, data: bytes) -> bytes:
    return offset.to_bytes(8, "big") + hashlib.sha256(data).digest() + data


def parse_chunk(frame: bytes, max_chunk: int = MAX_CHUNK) -> tuple[int, bytes, memoryview]:
    """(offset, digest, data) of a chunk frame; FileRejected when it cannot be one.

    The data is a view into the frame: at tens of MB/s, copying each chunk shows.
    """
    if len(frame) < CHUNK_HEADER:
        raise FileRejected("chunk frame shorter than its header")
    if len(frame) - CHUNK_HEADER > max_chunk:
        raise FileRejected("chunk larger than the offer allows")
    view = memoryview(frame)
    return int.from_bytes(view[:8], "big"), bytes(view[8:CHUNK_HEADER]), view[CHUNK_HEADER:]


class FileDownload:
    """What a receiver knows of one transfer: the verified prefix and its hash."""

    def __init__(self, offer: FileOffer, verified_prefix: Iterable[bytes] = ()) -> None:
        """`verified_prefix` re-reads a partial file after a restart (in chunks)."""
        self.offer = offer
        self._hash = hashlib.sha256()
        self.verified = 0
        for block in verified_prefix:
            self._hash.update(block)
            self.verified += len(block)
        if self.verified > offer.size:
            raise FileRejected("partial file is longer than the offer")
        if self.complete and self._hash.digest() != offer.sha256:
            raise FileRejected("file does not match the offered SHA-256")
        self.rejected_chunks = 0

    @property
    def resume_offset(self) -> int:
        return self.verified

    @property
    def complete(self) -> bool:
        return self.verified == self.offer.size

    def receive_chunk(self, frame: bytes) -> memoryview:
        """Verify the next chunk; return its data for the caller to write at `offset`."""
        offset, digest, data = parse_chunk(frame, self.offer.chunk_size)
        if offset != self.verified:
            self.rejected_chunks += 1
            raise FileRejected(f"chunk at {offset}, expected {self.verified}")
        if hashlib.sha256(data).digest() != digest:
            self.rejected_chunks += 1
            raise FileRejected(f"chunk at {offset} corrupted in flight")
        if not data or self.verified + len(data) > self.offer.size:
            self.rejected_chunks += 1
            raise FileRejected("chunk runs past the end of the file")
        self._hash.update(data)
        self.verified += len(data)
        if self.complete and self._hash.digest() != self.offer.sha256:
            raise FileRejected("file does not match the offered SHA-256")
        return data


# --- local names ------------------------------------------------------------------------

_UNSAFE = frozenset('/\\<>:"|?*')
"""Separators, and what Windows and macOS refuse in a name: the file may travel on."""
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Controls, invisible format marks (bidi overrides that disguise an extension), lone
surrogates (not encodable) and line separators."""
_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)]
)
"""Names Windows keeps for devices, whatever their extension."""


def local_name(name: str) -> str:
    """A file name for `name` that the local filesystem takes and that hides nothing.

    Separators, control and format characters become `_`; leading dots and spaces
    (a hidden file, `.` or `..`) and trailing ones (refused on Windows) go; the result
    is at most `MAX_LOCAL_NAME` bytes of UTF-8, cut in the stem so that a short
    extension survives. Never empty: nothing usable left gives `file`.
    """
    safe = "".join(
        "_" if c in _UNSAFE or unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in name
    )
    safe = safe.strip(" .") or "file"
    if safe.split(".")[0].rstrip(" ").upper() in _DEVICES:
        safe = "_" + safe
    stem, dot, extension = safe.rpartition(".")
    if not dot or not stem or len(extension.encode()) + 1 > MAX_EXTENSION:
        stem, extension = safe, ""
    suffix = f".{extension}" if extension else ""
    cut = stem.encode()[: MAX_LOCAL_NAME - len(suffix.encode())].decode(errors="ignore")
    if cut != stem:  # cut inside the name: it must not end in a dot or space either
        stem = cut.rstrip(" .") or "file"
    return stem + suffix


def part_name(file_id: str) -> str:
    """The partial file of a download: named by the offer's id (32 hex digits) only."""
    return f".{file_id}.part"


# --- what a receiver keeps ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferLimits:
    """How much a member may make a receiver keep (docs/protocol.md 5.2)."""

    per_member: int = 32
    """Offers kept, not yet accepted, per member."""
    per_room: int = 256
    """... and in the whole room."""
    rate: float = 1.0
    """New offers per second per member (a token bucket) ..."""
    burst: float = 32.0
    """... with a burst of a member's whole allowance: a sender re-offers all its files
    at once on each connection, and one that joins late gets them all."""
    max_age: float = 3600.0
    """Seconds an offer is kept without being accepted."""
    downloads_per_member: int = 4
    """Downloads an accept policy runs at once per member ..."""
    downloads_per_room: int = 8
    """... and in the room; the other offers wait (and age)."""
    stall: float = 120.0
    """Seconds a download may go without a verified chunk before it fails."""
    settled: int = 1024
    """Ids of finished and declined files remembered, so that re-offers are ignored."""
    members: int = 1024
    """Members' rate buckets kept (a full bucket is forgotten when this many are kept)."""


@dataclass(frozen=True, slots=True)
class _Kept:
    member: bytes
    offer: FileOffer
    since: float
    earlier: bool = False
    """Made before we came: a person may fetch it, a policy takes it only if told to."""


class OfferBook:
    """The offers a receiver keeps until a person or an accept policy takes them.

    No I/O: the caller passes `now`. Everything is bounded by `OfferLimits`; an
    offer over a bound is a counted drop (`counters`), never an exception. Offers
    are kept in arrival order, so the oldest go first, to the policy and by age.
    """

    def __init__(self, limits: OfferLimits | None = None) -> None:
        self.limits = limits or OfferLimits()
        self.counters: dict[str, int] = {}
        self._kept: dict[str, _Kept] = {}
        self._per_member: dict[bytes, int] = {}
        self._buckets: dict[bytes, TokenBucket] = {}
        self._settled: dict[str, None] = {}  # insertion-ordered: the oldest go first

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._kept

    def get(self, file_id: str) -> tuple[bytes, FileOffer] | None:
        kept = self._kept.get(file_id)
        return None if kept is None else (kept.member, kept.offer)

    def earlier(self, file_id: str) -> bool:
        """Whether the kept offer was made before we came."""
        kept = self._kept.get(file_id)
        return kept is not None and kept.earlier

    def values(self) -> list[tuple[bytes, FileOffer]]:
        return [(kept.member, kept.offer) for kept in self._kept.values()]

    def known(self, file_id: object) -> bool:
        """Kept, or finished or declined not long ago: a re-offer changes nothing."""
        return file_id in self._kept or file_id in self._settled

    def admit(self, member: bytes, now: float) -> bool:
        """Take one of `member`'s tokens for a new offer; False (counted) when it has none."""
        limits = self.limits
        bucket = self._buckets.get(member)
        if bucket is None:
            if len(self._buckets) >= limits.members:
                self._forget_full_buckets(now)
            if len(self._buckets) >= limits.members:
                self._count("drop.offer_members")
                return False
            bucket = self._buckets[member] = TokenBucket(limits.rate, limits.burst, now)
        if not bucket.take(now):
            self._count("drop.offer_rate")
            return False
        return True

    def add(self, member: bytes, offer: FileOffer, now: float, earlier: bool = False) -> bool:
        """Keep an admitted offer; False (counted) over the member's or the room's count."""
        if self.known(offer.id):
            return False
        if self._per_member.get(member, 0) >= self.limits.per_member:
            self._count("drop.offer_member_full")
            return False
        if len(self._kept) >= self.limits.per_room:
            self._count("drop.offer_room_full")
            return False
        self._kept[offer.id] = _Kept(member, offer, now, earlier)
        self._per_member[member] = self._per_member.get(member, 0) + 1
        return True

    def take(self, file_id: str) -> tuple[bytes, FileOffer] | None:
        """Remove an offer (accepted or declined); None if it is not kept."""
        kept = self._kept.pop(file_id, None)
        if kept is None:
            return None
        left = self._per_member[kept.member] - 1
        if left:
            self._per_member[kept.member] = left
        else:
            del self._per_member[kept.member]
        return kept.member, kept.offer

    def settle(self, file_id: str) -> None:
        """Remember a finished or declined file, so that its re-offers are ignored."""
        self._settled.pop(file_id, None)
        self._settled[file_id] = None
        while len(self._settled) > self.limits.settled:
            del self._settled[next(iter(self._settled))]

    def forget_member(self, member: bytes) -> list[str]:
        """A member left: its offers and its bucket go. Returns the ids forgotten."""
        gone = [i for i, kept in self._kept.items() if kept.member == member]
        for file_id in gone:
            self.take(file_id)
        self._buckets.pop(member, None)
        return gone

    def expire(self, now: float) -> list[str]:
        """Forget offers older than `max_age` (counted). Returns the ids forgotten."""
        oldest = now - self.limits.max_age
        gone = [i for i, kept in self._kept.items() if kept.since <= oldest]
        for file_id in gone:
            self.take(file_id)
            self._count("expired.offer")
        if len(self._buckets) > self.limits.per_room:
            self._forget_full_buckets(now)
        return gone

    def next_expiry(self) -> float | None:
        """When `expire` next has something to do (None: nothing kept)."""
        if not self._kept:
            return None
        return min(kept.since for kept in self._kept.values()) + self.limits.max_age

    def next_acceptable(
        self,
        busy: Mapping[bytes, int],
        eligible: Callable[[FileOffer, bool], bool] | None = None,
    ) -> str | None:
        """The oldest offer an accept policy may take now, given the downloads running
        per member (`busy`) and what it takes (`eligible(offer, earlier)`); None when
        the room's or every waiting member's slots are full."""
        limits = self.limits
        if sum(busy.values()) >= limits.downloads_per_room:
            return None
        for file_id, kept in self._kept.items():
            if busy.get(kept.member, 0) < limits.downloads_per_member and (
                eligible is None or eligible(kept.offer, kept.earlier)
            ):
                return file_id
        return None

    def _forget_full_buckets(self, now: float) -> None:
        # A full bucket is what a new member gets: forgetting it changes nothing.
        for member in [m for m, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[member]

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


# --- which offers an accept policy takes ----------------------------------------------

INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})
"""Images a browser shows inline as they are (no SVG: it is a document, not a picture)."""
INLINE_IMAGE_BYTES = 2 * 1024 * 1024
"""The largest image the browser takes unasked, to show it inline."""


@dataclass(frozen=True, slots=True)
class AcceptRule:
    """Which offers an accept policy takes unasked (docs/protocol.md 5.2). Whatever
    the rule, a file shared before we came is taken only with `earlier`."""

    max_bytes: int | None = None
    """The largest file taken (None: any the receiver's size limit lets through)."""
    inline_images_only: bool = False
    """Only `INLINE_IMAGE_TYPES`: what a browser shows in the conversation."""
    earlier: bool = False
    """Also the files shared before we came (`pagemesh receive --include-earlier`)."""

    def takes(self, offer: FileOffer, earlier: bool) -> bool:
        if earlier and not self.earlier:
            return False
        if self.max_bytes is not None and offer.size > self.max_bytes:
            return False
        return not self.inline_images_only or offer.mime.lower() in INLINE_IMAGE_TYPES


BROWSER_ACCEPT = AcceptRule(INLINE_IMAGE_BYTES, inline_images_only=True)
"""The browser's policy: the small images it shows inline, shared after it came."""


# --- what a sender offers ----------------------------------------------------------------


@dataclass(slots=True)
class _Shared:
    offer: FileOffer
    since: float
    fresh: set[bytes]
    """Members to whom it is new: those present when it was made, and those addressed
    since (`SharedFiles.address`)."""
    audience: set[bytes] | None = field(default=None)
    """The members it is offered to; None: the whole room, newcomers too."""


class SharedFiles:
    """The files a sender offers, and to whom each is new.

    No I/O: the caller passes `now`. A sender offers its `limits.per_member` newest
    files, each for `limits.max_age` seconds: no receiver keeps more of one member's
    offers, or longer, so one offered beyond that would only come back as new. A
    member present when a file is offered hears of it as new; one who comes later
    hears of it as shared `earlier`. A file meant for some members only (`audience`)
    is offered, and served, to them alone. Recipient sets are bounded by
    `limits.members`.
    """

    def __init__(self, limits: OfferLimits | None = None) -> None:
        self.limits = limits or OfferLimits()
        self._shared: dict[str, _Shared] = {}  # insertion-ordered: the oldest go first

    def __len__(self) -> int:
        return len(self._shared)

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._shared

    def add(
        self,
        offer: FileOffer,
        now: float,
        present: Iterable[bytes],
        audience: Iterable[bytes] | None = None,
    ) -> list[str]:
        """Offer a file, new to the `present` members (of `audience`, if given). Returns
        the ids of the oldest files no longer offered because of it."""
        bound = self.limits.members
        fresh = set(_first(present, bound))
        chosen = None if audience is None else set(_first(audience, bound))
        if chosen is not None:
            fresh &= chosen
        self._shared.pop(offer.id, None)
        self._shared[offer.id] = _Shared(offer, now, fresh, chosen)
        gone: list[str] = []
        while len(self._shared) > self.limits.per_member:
            gone.append(next(iter(self._shared)))
            del self._shared[gone[-1]]
        return gone

    def address(self, file_id: str, members: Iterable[bytes]) -> list[bytes]:
        """Offer a file to more members, as new to them (`pagemesh send --to` names them
        as they come). Returns the members added; none past the bound."""
        shared = self._shared.get(file_id)
        if shared is None:
            return []
        added = []
        for member in members:
            if member in shared.fresh or len(shared.fresh) >= self.limits.members:
                continue
            if shared.audience is not None:
                if len(shared.audience) >= self.limits.members:
                    continue
                shared.audience.add(member)
            shared.fresh.add(member)
            added.append(member)
        return added

    def get(self, file_id: str, now: float) -> FileOffer | None:
        """The file, while it is offered (not yet past its age)."""
        shared = self._shared.get(file_id)
        if shared is None or now >= shared.since + self.limits.max_age:
            return None
        return shared.offer

    def serves(self, file_id: str, member: bytes, now: float) -> bool:
        """Whether `member` may fetch the file: offered, not too old, and meant for it."""
        shared = self._shared.get(file_id)
        return (
            self.get(file_id, now) is not None
            and shared is not None
            and (shared.audience is None or member in shared.audience)
        )

    def earlier(self, file_id: str, member: bytes) -> bool:
        """Whether the file is one `member` hears of as shared before it came."""
        shared = self._shared.get(file_id)
        return shared is not None and member not in shared.fresh

    def for_member(self, member: bytes, now: float) -> list[tuple[FileOffer, bool]]:
        """What to offer a member whose link (re)opened: every file still offered and
        meant for it, oldest first, each with whether it was shared before it came."""
        return [
            (shared.offer, member not in shared.fresh)
            for file_id, shared in self._shared.items()
            if self.serves(file_id, member, now)
        ]

    def expire(self, now: float) -> list[str]:
        """Stop offering files past their age. Returns their ids."""
        oldest = now - self.limits.max_age
        gone = [i for i, shared in self._shared.items() if shared.since <= oldest]
        for file_id in gone:
            del self._shared[file_id]
        return gone

    def next_expiry(self) -> float | None:
        """When `expire` next has something to do (None: nothing offered)."""
        if not self._shared:
            return None
        return next(iter(self._shared.values())).since + self.limits.max_age


def _first(members: Iterable[bytes], bound: int) -> list[bytes]:
    """At most `bound` members (a room's layer holds far fewer)."""
    chosen: list[bytes] = []
    for member in members:
        if len(chosen) >= bound:
            break
        chosen.append(member)
    return chosen


# --- what a member's accepts may make a sender upload ------------------------------------


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """What a member's `file-accept` frames may make a sender do (docs/protocol.md 5.2)."""

    per_member: int = 2
    """Uploads running at once to one member ..."""
    per_room: int = 8
    """... and in the whole room; the other accepts wait their turn."""
    waiting_per_member: int = 32
    """Accepts waiting per member (one per file: a sender keeps 32 offers) ..."""
    waiting_per_room: int = 256
    """... and in the room; past these an accept is dropped (counted)."""
    rate: float = 1.0
    """Accepts per second per member (a token bucket) ..."""
    burst: float = 32.0
    """... with a burst of one per file a sender keeps: a receiver asks again for every
    download on each reconnection."""
    stall: float = 120.0
    """Seconds an upload may go without its channel taking data before it is stopped."""
    wait_notice: float = 30.0
    """Seconds between `file-wait` notices to a waiting receiver (a quarter of its stall)."""
    buffered_per_member: int = 8 * 1024 * 1024
    """Bytes buffered in one member's upload channels, closing ones included, before its
    uploads pause (per channel, `HIGH_WATER` of peer/transfer.py still applies) ..."""
    buffered_per_room: int = 32 * 1024 * 1024
    """... and in all of the room's."""
    members: int = 1024
    """Members' rate buckets kept (a full bucket is forgotten when this many are kept)."""


@dataclass(frozen=True, slots=True)
class StartUpload:
    """Open `file:<id>` to `member`; once it opens, `begin` gives the offset to stream from.
    Report the end with `serial`."""

    serial: int
    member: bytes
    file_id: str


@dataclass(frozen=True, slots=True)
class StopUpload:
    """Close the upload's channel and end its stream (replaced, stalled, or its member left)."""

    serial: int
    member: bytes
    file_id: str


@dataclass(frozen=True, slots=True)
class WaitNotice:
    """Tell `member` that its accept of `file_id` waits for a slot (`file-wait`)."""

    member: bytes
    file_id: str


UploadCommand = StartUpload | StopUpload | WaitNotice


@dataclass(slots=True)
class _Running:
    member: bytes
    file_id: str
    offset: int
    active_at: float
    begun: bool = False


@dataclass(slots=True)
class _Waiting:
    offset: int
    noticed_at: float


class UploadBook:
    """A sender's uploads: at most one per (member, file), a few at once, the rest waiting.

    No I/O: the caller passes `now`, feeds `accept` (a member's `file-accept`),
    `begin` (an upload's channel opened), `progress` (it took data) and `ended` (its
    stream ended or its channel closed), and carries out the commands
    (`next_command`). A new accept of a file already streaming to that member
    replaces that stream, from the new offset: a receiver asks again after a bad
    chunk or a reconnection, and its latest word wins. Before the stream's channel
    has opened, nothing was sent on it: the new offset is simply taken.
    What a member may make the sender do is bounded by `UploadLimits`; over a bound
    an accept is a counted drop (`counters`), never an exception.
    """

    def __init__(
        self, limits: UploadLimits | None = None, counters: dict[str, int] | None = None
    ) -> None:
        self.limits = limits or UploadLimits()
        self.counters: dict[str, int] = {} if counters is None else counters
        self.running: dict[int, _Running] = {}
        """Uploads under way, by serial."""
        self.waiting: dict[tuple[bytes, str], _Waiting] = {}
        """Accepts waiting for a slot, oldest first."""
        self._serials: dict[tuple[bytes, str], int] = {}
        self._next_serial = 1
        self._buckets: dict[bytes, TokenBucket] = {}
        self._commands: list[UploadCommand] = []

    def accept(self, member: bytes, file_id: str, offset: int, now: float) -> None:
        """A member asks for a file we offer, from `offset` (the caller checked both)."""
        if not self._admit(member, now):
            return
        key = (member, file_id)
        serial = self._serials.get(key)
        if serial is not None and not self.running[serial].begun:
            self.running[serial].offset = offset
        elif serial is not None:  # the receiver's latest word wins, in the same slot
            self._commands.append(StopUpload(serial, member, file_id))
            self._start(member, file_id, offset, now, replacing=serial)
        elif key in self.waiting:
            self.waiting[key].offset = offset
        elif self._free(member):
            self._start(member, file_id, offset, now)
        elif (
            sum(1 for m, _ in self.waiting if m == member) >= self.limits.waiting_per_member
            or len(self.waiting) >= self.limits.waiting_per_room
        ):
            self._count("drop.accept_queue_full")
        else:
            self.waiting[key] = _Waiting(offset, now)
            self._commands.append(WaitNotice(member, file_id))

    def begin(self, serial: int, now: float) -> int | None:
        """The upload's channel opened: the offset to stream from (None: not running).
        From now on, a new accept of the file replaces the stream."""
        running = self.running.get(serial)
        if running is None:
            return None
        running.begun = True
        running.active_at = now
        return running.offset

    def progress(self, serial: int, now: float) -> None:
        """The upload's channel opened or took data: it is not stalled."""
        running = self.running.get(serial)
        if running is not None:
            running.active_at = now

    def ended(self, serial: int, now: float) -> None:
        """The upload's stream ended or its channel closed: its slot goes to one waiting."""
        running = self.running.pop(serial, None)
        if running is not None:
            del self._serials[(running.member, running.file_id)]
            self._fill(now)

    def forget_member(self, member: bytes, now: float) -> None:
        """A member left: its uploads stop, its waiting accepts and its bucket go."""
        for key in [k for k in self.waiting if k[0] == member]:
            del self.waiting[key]
        for serial, running in list(self.running.items()):
            if running.member == member:
                self._stop(serial)
        self._buckets.pop(member, None)
        self._fill(now)

    def handle_timer(self, now: float) -> None:
        """Stop uploads that stalled; remind waiting receivers that they wait."""
        for serial, running in list(self.running.items()):
            if now - running.active_at >= self.limits.stall:
                self._count("failed.upload_stalled")
                self._stop(serial)
        self._fill(now)  # before the notices: one about to start needs none
        for (member, file_id), waiting in self.waiting.items():
            if now - waiting.noticed_at >= self.limits.wait_notice:
                waiting.noticed_at = now
                self._commands.append(WaitNotice(member, file_id))
        if len(self._buckets) > self.limits.per_room:
            self._forget_full_buckets(now)

    def get_timer(self) -> float | None:
        """When `handle_timer` next has something to do (None: nothing running or waiting)."""
        deadlines = [r.active_at + self.limits.stall for r in self.running.values()]
        deadlines += [w.noticed_at + self.limits.wait_notice for w in self.waiting.values()]
        return min(deadlines, default=None)

    def next_command(self) -> UploadCommand | None:
        return self._commands.pop(0) if self._commands else None

    def _admit(self, member: bytes, now: float) -> bool:
        bucket = self._buckets.get(member)
        if bucket is None:
            if len(self._buckets) >= self.limits.members:
                self._forget_full_buckets(now)
            if len(self._buckets) >= self.limits.members:
                self._count("drop.accept_members")
                return False
            bucket = self._buckets[member] = TokenBucket(self.limits.rate, self.limits.burst, now)
        if not bucket.take(now):
            self._count("drop.accept_rate")
            return False
        return True

    def _free(self, member: bytes) -> bool:
        limits = self.limits
        mine = sum(1 for r in self.running.values() if r.member == member)
        return len(self.running) < limits.per_room and mine < limits.per_member

    def _start(
        self, member: bytes, file_id: str, offset: int, now: float, replacing: int = 0
    ) -> None:
        self.running.pop(replacing, None)
        serial, self._next_serial = self._next_serial, self._next_serial + 1
        self.running[serial] = _Running(member, file_id, offset, now)
        self._serials[(member, file_id)] = serial
        self._commands.append(StartUpload(serial, member, file_id))

    def _stop(self, serial: int) -> None:
        running = self.running.pop(serial)
        del self._serials[(running.member, running.file_id)]
        self._commands.append(StopUpload(serial, running.member, running.file_id))

    def _fill(self, now: float) -> None:
        """Give free slots to waiting accepts: a member with the fewest uploads running
        first (one member's many accepts do not starve the others), the oldest of those."""
        while self.waiting and len(self.running) < self.limits.per_room:
            busy: dict[bytes, int] = {}
            for running in self.running.values():
                busy[running.member] = busy.get(running.member, 0) + 1
            best: tuple[bytes, str] | None = None
            for key in self.waiting:
                if busy.get(key[0], 0) < self.limits.per_member and (
                    best is None or busy.get(key[0], 0) < busy.get(best[0], 0)
                ):
                    best = key
            if best is None:
                return
            waiting = self.waiting.pop(best)
            self._start(best[0], best[1], waiting.offset, now)

    def _forget_full_buckets(self, now: float) -> None:
        for member in [m for m, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[member]

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
