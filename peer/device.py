"""Device keys certified by an identity key (docs/protocol.md 5.3).

A person's **identity key** (the key of their identity file, docs/identity.md)
signs a short-lived **delegation** to a **device key**: "this device key speaks
for me from `not_before` to `expires`". The device key is what a client joins
rooms with, signs presence and envelopes with and holds links with, so two
devices of one person are two members to the nodes and to the messaging core
(neither replaces the other, each numbers its own messages); members who
verified the delegation show them as one person.

This module is pure: the binary format (`parse_delegation`,
`serialize_delegation`), issuing (`issue_delegation`), checking a delegation a
member sent over its own link (`check_delegation`), and `Devices`, the bounded
book of which member key speaks for which identity. One error type,
`DelegationError`, with a code, for anything a member sends; `ValueError` for
a caller's misuse. Time is Unix milliseconds, passed in.

The format, big-endian (213 bytes at most):

| bytes | field |
|---|---|
| 4 | `"pmd1"` |
| 32 | identity key (Ed25519) |
| 32 | device key (Ed25519) |
| 8 | not before (uint64, Unix ms) |
| 8 | expires (uint64, Unix ms) |
| 1 + n | label, UTF-8, n <= 64 |
| 64 | the identity key's signature over `"pagemesh-device/1\\0"` and all the bytes above |

A revocation (`"pmr1"`, 140 bytes): the identity key takes back every delegation it
gave one device key, for good.

| bytes | field |
|---|---|
| 4 | `"pmr1"` |
| 32 | identity key |
| 32 | device key |
| 8 | revoked at (uint64, Unix ms; shown, not checked) |
| 64 | the identity key's signature over `"pagemesh-revoke/1\\0"` and all the bytes above |
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAGIC = b"pmd1"
DOMAIN = b"pagemesh-device/1\x00"
"""What the identity key signs first: such a signature is never valid as anything else."""
KEY_BYTES = 32
SIG_BYTES = 64
MAX_LABEL_BYTES = 64
HEADER = struct.Struct(">4s32s32sQQB")
MIN_BYTES = HEADER.size + SIG_BYTES
"""149: a delegation with an empty label."""
MAX_BYTES = MIN_BYTES + MAX_LABEL_BYTES
"""213: one with the longest label."""
MAX_TIME = (1 << 53) - 1
"""Times are integers JavaScript holds exactly."""
MAX_LIFETIME_MS = 30 * 24 * 3600 * 1000
"""The longest a delegation may last (30 days): the most a stolen device key is worth."""
DEFAULT_LIFETIME_MS = 7 * 24 * 3600 * 1000
"""What clients issue (7 days), renewed at half life while the identity key is at hand."""
CLOCK_SKEW_MS = 5 * 60 * 1000
"""A delegation is taken from 5 minutes before its `not_before` (clocks differ)."""
MAX_DEVICES = 1024
"""Delegations a `Devices` book keeps (members of a room, at most 256 per room)."""
REVOKE_MAGIC = b"pmr1"
REVOKE_DOMAIN = b"pagemesh-revoke/1\x00"
REVOKE_HEADER = struct.Struct(">4s32s32sQ")
REVOCATION_BYTES = REVOKE_HEADER.size + SIG_BYTES
"""140: every revocation has this size."""
MAX_REVOCATIONS = 1024
"""Revocations a `Devices` book keeps."""

# The characters a display name may not have (docs/protocol.md 5.0.1), nor a label.
_LABEL_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")

Verify = Callable[[bytes, bytes, bytes], bool]
"""(public key, message, signature) -> valid: `signaling.protocol.verify_signature`."""
Sign = Callable[[bytes], bytes]


class DelegationError(Exception):
    """A member's delegation is malformed, forged, not for its key, or not valid now.

    `code` says which, for counters and tests: short, long, magic, length, label,
    times, lifetime, self, signature, wrong-device, not-yet-valid, expired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Delegation:
    identity: bytes
    device: bytes
    not_before: int
    """Unix ms."""
    expires: int
    """Unix ms."""
    label: str
    """What the person calls the device ("laptop"); may be empty. Proves nothing."""
    signature: bytes

    def signed_bytes(self) -> bytes:
        """What the identity key signs."""
        return DOMAIN + _body(self.identity, self.device, self.not_before, self.expires, self.label)

    def valid_at(self, now_ms: int) -> bool:
        return self.not_before - CLOCK_SKEW_MS <= now_ms < self.expires


def _body(identity: bytes, device: bytes, not_before: int, expires: int, label: str) -> bytes:
    raw = label.encode()
    return HEADER.pack(MAGIC, identity, device, not_before, expires, len(raw)) + raw


def serialize_delegation(delegation: Delegation) -> bytes:
    d = delegation
    return _body(d.identity, d.device, d.not_before, d.expires, d.label) + d.signature


def _check_label(label: str) -> None:
    if len(label.encode("utf-8", "surrogatepass")) > MAX_LABEL_BYTES:
        raise ValueError(f"a device label is at most {MAX_LABEL_BYTES} UTF-8 bytes")
    if _LABEL_FORBIDDEN.search(label) or any(0xD800 <= ord(c) <= 0xDFFF for c in label):
        raise ValueError("a device label has no control characters")


def issue_delegation(
    sign: Sign,
    identity: bytes,
    device: bytes,
    now_ms: int,
    lifetime_ms: int = DEFAULT_LIFETIME_MS,
    label: str = "",
) -> Delegation:
    """A delegation from `identity` (whose `sign` signs) to `device`, valid from `now_ms`
    for `lifetime_ms`; ValueError for keys, times or a label no reader would take."""
    if len(identity) != KEY_BYTES or len(device) != KEY_BYTES:
        raise ValueError("keys are 32 bytes")
    if identity == device:
        raise ValueError("a key needs no delegation to itself")
    if not 0 < lifetime_ms <= MAX_LIFETIME_MS:
        raise ValueError(f"a delegation lasts at most {MAX_LIFETIME_MS} ms")
    if not 0 <= now_ms <= MAX_TIME - lifetime_ms:
        raise ValueError("a time out of range")
    _check_label(label)
    expires = now_ms + lifetime_ms
    signature = sign(DOMAIN + _body(identity, device, now_ms, expires, label))
    return Delegation(identity, device, now_ms, expires, label, signature)


def parse_delegation(data: bytes) -> Delegation:
    """The delegation in `data`, its form checked (not its signature: `check_delegation`);
    DelegationError for any defect."""
    if len(data) < MIN_BYTES:
        raise DelegationError("short", f"a delegation is at least {MIN_BYTES} bytes")
    if len(data) > MAX_BYTES:
        raise DelegationError("long", f"a delegation is at most {MAX_BYTES} bytes")
    magic, identity, device, not_before, expires, size = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DelegationError("magic", "not a delegation (no pmd1)")
    if len(data) != MIN_BYTES + size:
        raise DelegationError("length", "the label's length does not match the delegation's")
    try:
        label = data[HEADER.size : HEADER.size + size].decode("utf-8")
    except UnicodeDecodeError:
        raise DelegationError("label", "the label is not UTF-8") from None
    if _LABEL_FORBIDDEN.search(label):
        raise DelegationError("label", "the label has a control character")
    if not_before > MAX_TIME or expires > MAX_TIME or expires <= not_before:
        raise DelegationError("times", "not_before must come before expires, below 2^53")
    if expires - not_before > MAX_LIFETIME_MS:
        raise DelegationError("lifetime", f"a delegation lasts at most {MAX_LIFETIME_MS} ms")
    if identity == device:
        raise DelegationError("self", "a delegation to the identity key itself")
    return Delegation(identity, device, not_before, expires, label, data[-SIG_BYTES:])


@dataclass(frozen=True, slots=True)
class Revocation:
    identity: bytes
    device: bytes
    revoked_at: int
    """Unix ms, as the identity's holder said: shown, never checked."""
    signature: bytes

    def signed_bytes(self) -> bytes:
        return REVOKE_DOMAIN + self._body()

    def _body(self) -> bytes:
        return REVOKE_HEADER.pack(REVOKE_MAGIC, self.identity, self.device, self.revoked_at)


def serialize_revocation(revocation: Revocation) -> bytes:
    return revocation._body() + revocation.signature


def issue_revocation(sign: Sign, identity: bytes, device: bytes, now_ms: int) -> Revocation:
    """The identity key (`sign`) takes back its delegations to `device`; ValueError for
    keys or a time no reader would take."""
    if len(identity) != KEY_BYTES or len(device) != KEY_BYTES or identity == device:
        raise ValueError("two different 32-byte keys")
    if not 0 <= now_ms <= MAX_TIME:
        raise ValueError("a time out of range")
    unsigned = Revocation(identity, device, now_ms, b"")
    return Revocation(identity, device, now_ms, sign(unsigned.signed_bytes()))


def parse_revocation(data: bytes, verify: Verify) -> Revocation:
    """A revocation from anyone (its signature is what counts), checked; DelegationError
    with code `revocation` for any defect, `signature` for a signature not the identity's."""
    if len(data) != REVOCATION_BYTES:
        raise DelegationError("revocation", f"a revocation is {REVOCATION_BYTES} bytes")
    magic, identity, device, revoked_at = REVOKE_HEADER.unpack_from(data)
    if magic != REVOKE_MAGIC:
        raise DelegationError("revocation", "not a revocation (no pmr1)")
    if revoked_at > MAX_TIME or identity == device:
        raise DelegationError("revocation", "a time past 2^53, or a key revoking itself")
    revocation = Revocation(identity, device, revoked_at, data[-SIG_BYTES:])
    if not verify(identity, revocation.signed_bytes(), revocation.signature):
        raise DelegationError("signature", "the identity key did not sign this revocation")
    return revocation


def check_delegation(data: bytes, member: bytes, now_ms: int, verify: Verify) -> Delegation:
    """A delegation `member` sent over its own link, parsed and checked: signed by the
    identity it names, for `member`'s key, valid at `now_ms`. DelegationError otherwise."""
    delegation = parse_delegation(data)
    if delegation.device != member:
        raise DelegationError("wrong-device", "the delegation is for another device key")
    if now_ms < delegation.not_before - CLOCK_SKEW_MS:
        raise DelegationError("not-yet-valid", "the delegation is not valid yet")
    if now_ms >= delegation.expires:
        raise DelegationError("expired", "the delegation has expired")
    if not verify(delegation.identity, delegation.signed_bytes(), delegation.signature):
        raise DelegationError("signature", "the identity key did not sign this delegation")
    return delegation


class Devices:
    """Which member keys speak for which identity, from delegations checked by
    `check_delegation` (bounded: the `max_devices` most recently given are kept).

    A key with no delegation valid now is its own person: `person_of` returns it."""

    def __init__(
        self, max_devices: int = MAX_DEVICES, max_revocations: int = MAX_REVOCATIONS
    ) -> None:
        self.max_devices = max_devices
        self.max_revocations = max_revocations
        self._by_device: OrderedDict[bytes, Delegation] = OrderedDict()
        self._revoked: OrderedDict[tuple[bytes, bytes], Revocation] = OrderedDict()
        self._senders: dict[tuple[bytes, bytes], bytes | None] = {}
        """Who gave each kept revocation first (None: ours), in the order they came."""

    def revoke(self, revocation: Revocation, sender: bytes | None = None) -> bool:
        """Keep a checked revocation that `sender` (the member whose link carried it;
        None: one of ours, never pushed out) gave: from now on no delegation of its
        identity to its device counts. Whether it took a device away from its person now.
        When the book is full, one that takes no device away goes: the oldest of the
        sender that gave most of those, so a member flooding revocations of made-up
        identities pushes out its own, never one another member gave, even one that
        came before the device it revokes (5.3); if every one kept took a device away
        or is ours, the new one is not kept."""
        pair = (revocation.identity, revocation.device)
        if pair not in self._revoked and len(self._revoked) >= self.max_revocations:
            idle = self._idle()
            if idle is None:
                return False
            del self._revoked[idle]
            del self._senders[idle]
        self._revoked[pair] = revocation
        if pair not in self._senders or sender is None:
            self._senders[pair] = sender
        return self._matters(pair)

    def _idle(self) -> tuple[bytes, bytes] | None:
        """The revocation to push out of a full book: of the sender with the most that
        take no device away (ours never), its oldest."""
        counts: dict[bytes, int] = {}
        for pair, sender in self._senders.items():
            if sender is not None and not self._matters(pair):
                counts[sender] = counts.get(sender, 0) + 1
        if not counts:
            return None
        most = max(counts.values())
        heaviest = next(s for s, n in counts.items() if n == most)  # oldest-seen first
        return next(p for p, s in self._senders.items() if s == heaviest and not self._matters(p))

    def _matters(self, pair: tuple[bytes, bytes]) -> bool:
        held = self._by_device.get(pair[1])
        return held is not None and held.identity == pair[0]

    def revocations(self) -> list[tuple[Revocation, bytes | None]]:
        """Every revocation kept, oldest first, with who gave it (None: ours)."""
        return [(r, self._senders[pair]) for pair, r in self._revoked.items()]

    def revoked(self, identity: bytes, device: bytes) -> bool:
        return (identity, device) in self._revoked

    def revocations_of(self, identity: bytes) -> list[Revocation]:
        return [r for (i, _), r in self._revoked.items() if i == identity]

    def add(self, delegation: Delegation) -> bool:
        """Keep a checked delegation (it replaces the device's older one); whether the
        device's person or label changed."""
        old = self._by_device.pop(delegation.device, None)
        self._by_device[delegation.device] = delegation
        while len(self._by_device) > self.max_devices:
            self._by_device.popitem(last=False)
        return old is None or (old.identity, old.label) != (delegation.identity, delegation.label)

    def forget(self, device: bytes) -> None:
        self._by_device.pop(device, None)

    def delegation(self, device: bytes, now_ms: int) -> Delegation | None:
        found = self._by_device.get(device)
        if found is None or not found.valid_at(now_ms):
            return None
        return None if (found.identity, device) in self._revoked else found

    def person_of(self, key: bytes, now_ms: int) -> bytes:
        """The identity `key` speaks for now; `key` itself when it has no valid delegation."""
        found = self.delegation(key, now_ms)
        return found.identity if found is not None else key

    def __len__(self) -> int:
        return len(self._by_device)


def people(
    keys: set[bytes] | list[bytes], devices: Devices, now_ms: int
) -> dict[bytes, set[bytes]]:
    """Member keys grouped by person: identity -> the keys that speak for it now."""
    grouped: dict[bytes, set[bytes]] = {}
    for key in keys:
        grouped.setdefault(devices.person_of(key, now_ms), set()).add(key)
    return grouped
