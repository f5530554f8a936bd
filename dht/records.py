"""Signed multi-value records and the bounded store that holds them.

A DHT key holds a *set* of records, one per publisher. A record is
`(key, publisher, seq, expires_at, value, signature)`; the signature covers
everything else, so any node may carry or republish it and a reader can check
it again. A record replaces only an older `seq` of the same publisher.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
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


@dataclass(frozen=True, slots=True)
class RecordLimits:
    max_ttl: int = 3600
    max_value_bytes: int = 1000
    max_records_per_key: int = 256
    max_records_total: int = 100_000
    clock_skew: int = 60  # tolerated difference between publisher's and our clock


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


class RecordStore:
    """Records by key and publisher, bounded per key and in total, expiring by TTL.

    Expiry is exact: a record is never returned at or after its `expires_at`,
    and `expire(now)` frees its slot (a heap orders the deadlines).
    """

    def __init__(self, limits: RecordLimits, verify: Verifier = verify_signature) -> None:
        self.limits = limits
        self._verify = verify
        self._by_key: dict[bytes, dict[bytes, Record]] = {}
        self._count = 0
        self._deadlines: list[tuple[int, bytes, bytes, int]] = []

    def __len__(self) -> int:
        return self._count

    def keys(self) -> list[bytes]:
        return list(self._by_key)

    def put(self, record: Record, now: float) -> Refusal:
        """Store `record` if it is valid and newer than what its publisher had here."""
        self.expire(now)
        verdict = check_record(record, now, self.limits, self._verify)
        if verdict is not Refusal.STORED:
            return verdict
        per_key = self._by_key.get(record.key)
        previous = per_key.get(record.publisher) if per_key is not None else None
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
