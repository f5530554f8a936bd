"""Signed multi-value records and the bounded store that holds them.

A DHT key holds a *set* of records, one per publisher. A record is
`(key, publisher, seq, expires_at, value, signature)`; the signature covers
everything else, so any node may carry or republish it and a reader can check
it again. A record replaces only an older `seq` of the same publisher.

Besides the bounds per key and in total, one source (an IPv4 address or an
IPv6 /64) may bring only so many publishers a key does not hold yet within a
window (`NewPublisherBudget`): without it, one client could fill a key with
records signed by throwaway keys until their TTL.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from .identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, verify_signature
from .ids import ID_BYTES

RECORD_CONTEXT = "pagemesh-record/1"
MAX_SEQ = 2**63 - 1
MAX_EXPIRES_AT = 2**40  # seconds on the Unix clock; far beyond any real expiry


Verifier = Callable[[bytes, bytes, bytes], bool]
"""(public_key, message, signature) -> valid. Injected so simulations may swap the cost model."""


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    publisher: bytes
    seq: int
    expires_at: int
    value: bytes
    signature: bytes

    @classmethod
    def create(
        cls, identity: Identity, key: bytes, value: bytes, seq: int, expires_at: int
    ) -> Record:
        """Sign a record with the publisher's identity."""
        payload = signed_payload(key, identity.public_key, seq, expires_at, value)
        return cls(key, identity.public_key, seq, expires_at, value, identity.sign(payload))

    def to_wire(self) -> list[object]:
        return [self.key, self.publisher, self.seq, self.expires_at, self.value, self.signature]

    def wire_size(self) -> int:
        """Bytes this record takes in a msgpack array (the value dominates)."""
        return len(msgpack.packb(self.to_wire(), use_bin_type=True))


def signed_payload(key: bytes, publisher: bytes, seq: int, expires_at: int, value: bytes) -> bytes:
    """The exact bytes a publisher signs (docs/protocol.md, "Records")."""
    return bytes(
        msgpack.packb([RECORD_CONTEXT, key, publisher, seq, expires_at, value], use_bin_type=True)
    )


class Refusal(IntEnum):
    """Why a store refused a record. 0 is success; the numbers are on the wire."""

    STORED = 0
    BAD_SIGNATURE = 1
    EXPIRED = 2
    FUTURE = 3
    VALUE_TOO_LARGE = 4
    KEY_FULL = 5
    STORE_FULL = 6
    STALE_SEQ = 7
    MALFORMED = 8
    SOURCE_KEY_LIMIT = 9
    """The sender's source brought the key its quota of new publishers this window."""


@dataclass(frozen=True, slots=True)
class RecordLimits:
    max_ttl: int = 3600
    max_value_bytes: int = 2048
    max_records_per_key: int = 256
    max_records_total: int = 100_000
    clock_skew: int = 60  # tolerated difference between publisher's and our clock
    max_new_publishers_per_source_key: int = 32
    """Publishers a key does not hold yet that one source may add to it per window.

    Above the ~24 members of a room layer, so a holder's hand-over of a whole
    key (a welcome, a republish) fits; records of publishers already held
    (a newer seq, an identical copy) never count."""
    new_publisher_window: float = 600.0
    """The window of that quota, in seconds; the default republish interval, so one
    republish round of a key from one holder fits in one window."""
    max_source_keys: int = 10_000
    """(source, key) pairs whose quota is remembered; the least recently active goes first."""

    def __post_init__(self) -> None:
        if self.max_new_publishers_per_source_key < 1 or self.max_source_keys < 1:
            raise ValueError("max_new_publishers_per_source_key and max_source_keys must be >= 1")
        if not self.new_publisher_window > 0:
            raise ValueError("new_publisher_window must be > 0")


def check_record(record: Record, now: float, limits: RecordLimits, verify: Verifier) -> Refusal:
    """Validate a record on its own (shape, time, size, signature); STORED means valid."""
    if (
        len(record.key) != ID_BYTES
        or len(record.publisher) != PUBLIC_KEY_BYTES
        or len(record.signature) != SIGNATURE_BYTES
        or not 0 <= record.seq <= MAX_SEQ
        or not 0 <= record.expires_at <= MAX_EXPIRES_AT
    ):
        return Refusal.MALFORMED
    if len(record.value) > limits.max_value_bytes:
        return Refusal.VALUE_TOO_LARGE
    if record.expires_at <= now:
        return Refusal.EXPIRED
    if record.expires_at > now + limits.max_ttl + limits.clock_skew:
        return Refusal.FUTURE
    payload = signed_payload(
        record.key, record.publisher, record.seq, record.expires_at, record.value
    )
    if not verify(record.publisher, payload, record.signature):
        return Refusal.BAD_SIGNATURE
    return Refusal.STORED


class NewPublisherBudget:
    """How many new publishers each source brought each key lately: a sliding window.

    A source may add at most `limit` publishers to a key within any `window`
    seconds: each addition is remembered by its time (an `array` of at most
    `limit` floats, so an entry is a few hundred bytes at most). At most
    `max_entries` (source, key) pairs are kept; past that the least recently
    active is forgotten (counted in `forgotten`), which only ever errs towards
    accepting, as the request rate limiter does. An entry whose additions all
    left the window is the same as none, and `prune` drops it.
    """

    __slots__ = ("_entries", "forgotten", "limit", "max_entries", "window")

    def __init__(self, limit: int, window: float, max_entries: int) -> None:
        self.limit = limit
        self.window = window
        self.max_entries = max_entries
        self.forgotten = 0
        # Least recently active first: a source being refused stays at the back.
        self._entries: dict[tuple[Hashable, bytes], array[float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def allows(self, source: Hashable, key: bytes, now: float) -> bool:
        """True if `source` may bring `key` one more new publisher at `now` (nothing spent)."""
        slot = (source, key)
        times = self._entries.pop(slot, None)
        if times is None:
            return True
        times = self._recent(times, now)
        if not times:
            return True  # every addition left the window: the same as no entry
        self._entries[slot] = times
        return len(times) < self.limit

    def charge(self, source: Hashable, key: bytes, now: float) -> None:
        """`source` brought `key` a new publisher at `now`."""
        slot = (source, key)
        times = self._entries.pop(slot, None)
        times = array("d") if times is None else self._recent(times, now)
        times.append(now)
        self._entries[slot] = times
        if len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]
            self.forgotten += 1

    def prune(self, now: float) -> int:
        """Forget entries with no addition left in the window; return how many went."""
        cutoff = now - self.window
        idle = [slot for slot, times in self._entries.items() if max(times) <= cutoff]
        for slot in idle:
            del self._entries[slot]
        return len(idle)

    def _recent(self, times: array[float], now: float) -> array[float]:
        cutoff = now - self.window
        if times and min(times) > cutoff:
            return times
        return array("d", (t for t in times if t > cutoff))


class RecordStore:
    """Records by key and publisher, bounded per key and in total, expiring by TTL.

    Expiry is exact: a record is never returned at or after its `expires_at`,
    and `expire(now)` frees its slot (a heap orders the deadlines). What one
    source may add to a key is bounded too (`NewPublisherBudget`).
    """

    def __init__(self, limits: RecordLimits, verify: Verifier = verify_signature) -> None:
        self.limits = limits
        self._verify = verify
        self.new_publishers = NewPublisherBudget(
            limits.max_new_publishers_per_source_key,
            limits.new_publisher_window,
            limits.max_source_keys,
        )
        self._by_key: dict[bytes, dict[bytes, Record]] = {}
        self._count = 0
        self._deadlines: list[tuple[int, bytes, bytes, int]] = []

    def __len__(self) -> int:
        return self._count

    def keys(self) -> list[bytes]:
        return list(self._by_key)

    def put(self, record: Record, now: float, source: Hashable | None = None) -> Refusal:
        """Store `record` if it is valid and newer than what its publisher had here.

        `source` is who sent it (`dht.ratelimit.source_of` of its address), or
        None for this node's own records. A publisher the key does not hold yet
        counts against that source's `NewPublisherBudget` for the key; the quota
        is checked before the signature, so a refused flood costs no verification.
        """
        self.expire(now)
        per_key = self._by_key.get(record.key)
        previous = per_key.get(record.publisher) if per_key is not None else None
        if (
            previous is None
            and source is not None
            and not self.new_publishers.allows(source, record.key, now)
        ):
            return Refusal.SOURCE_KEY_LIMIT
        verdict = check_record(record, now, self.limits, self._verify)
        if verdict is not Refusal.STORED:
            return verdict
        if previous is not None:
            if record.seq < previous.seq:
                return Refusal.STALE_SEQ
            if record.seq == previous.seq:
                # Same seq: accept only the identical record (a republish), never a rewrite.
                return Refusal.STORED if record == previous else Refusal.STALE_SEQ
        else:
            if per_key is not None and len(per_key) >= self.limits.max_records_per_key:
                return Refusal.KEY_FULL
            if self._count >= self.limits.max_records_total:
                return Refusal.STORE_FULL
            self._count += 1
            if source is not None:
                self.new_publishers.charge(source, record.key, now)
        self._by_key.setdefault(record.key, {})[record.publisher] = record
        heapq.heappush(
            self._deadlines, (record.expires_at, record.key, record.publisher, record.seq)
        )
        if len(self._deadlines) > 2 * self._count + 1024:
            self._compact()
        return Refusal.STORED

    def _compact(self) -> None:
        """Rebuild the deadline heap from live records (replaced ones leave stale entries)."""
        self._deadlines = [(r.expires_at, r.key, r.publisher, r.seq) for r in self]
        heapq.heapify(self._deadlines)

    def get(self, key: bytes, now: float) -> list[Record]:
        """Live records under `key`, ordered by publisher (the order pages follow)."""
        self.expire(now)
        per_key = self._by_key.get(key)
        if not per_key:
            return []
        return [per_key[p] for p in sorted(per_key)]

    def expire(self, now: float) -> int:
        """Drop every record whose `expires_at` <= now; return how many went."""
        dropped = 0
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, key, publisher, seq = heapq.heappop(deadlines)
            per_key = self._by_key.get(key)
            if per_key is None:
                continue
            current = per_key.get(publisher)
            if current is None or current.seq != seq or current.expires_at > now:
                continue  # replaced by a newer record since this deadline was pushed
            del per_key[publisher]
            self._count -= 1
            dropped += 1
            if not per_key:
                del self._by_key[key]
        return dropped

    def next_expiry(self) -> int | None:
        return self._deadlines[0][0] if self._deadlines else None

    def __iter__(self) -> Iterator[Record]:
        for per_key in self._by_key.values():
            yield from per_key.values()
