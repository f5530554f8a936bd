"""Blocks and mutes, as kept on disk and named in the chat (docs/protocol.md 5.4).

A block is of a key, in every room: no link to it, nothing of its delivered
or shown (the messaging core keeps and forwards its envelopes for others).
A mute hides its messages and keeps the link. Both are local: nothing on the
wire says so. This module holds what both the store and the chat screen use:
the record and its parser (`parse_block_row`, for rows read back from SQLite,
which anyone with the file may have edited) and how a chat command's NAME or
KEY finds a key (`find_key`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableSet
from dataclasses import dataclass
from typing import Any

BLOCK = "block"
MUTE = "mute"
LEVELS = (BLOCK, MUTE)
MAX_BLOCKS = 10_000
"""Keys blocked or muted, at most (each is a row and a set entry in every room)."""
MAX_LABEL = 64
"""Characters of the name kept beside a key (what it was called when blocked)."""
KEY_BYTES = 32
MAX_SINCE = 2**53 - 1
"""The largest time a block keeps (JavaScript's safe integers: the page keeps the same)."""


MAX_FLOOD_MUTED = 256
"""Authors one room keeps muted for flooding (5.4); past it the oldest is forgotten."""
MAX_FLOOD_NOTES = 16
"""Notes 'muted NAME for flooding' a conversation shows at once (the page's and the
terminal's): past it the oldest note goes (its author stays listed while muted)."""


class FloodMutes(MutableSet[bytes]):
    """The authors a room muted for flooding (5.4), at most `limit`, the most recently
    reported kept: each costs a member only an envelope over the cut, under a key made
    up for it, so the set (and the rows a list of them draws) must not grow with them.
    A forgotten author is shown again, still held to its rate by the flood cut. The
    page's twin is `FloodMutes` in web/js/blocks.js."""

    __slots__ = ("_keys", "limit")

    def __init__(self, keys: Iterable[bytes] = (), limit: int = MAX_FLOOD_MUTED) -> None:
        self.limit = limit
        self._keys: dict[bytes, None] = {}
        for key in keys:
            self.add(key)

    @classmethod
    def _from_iterable(cls, it: Iterable[bytes]) -> frozenset[bytes]:  # type: ignore[override]
        return frozenset(it)  # a union or difference is a plain set, never cut short

    def add(self, value: bytes) -> None:
        self._keys.pop(value, None)
        self._keys[value] = None  # newest last
        while len(self._keys) > self.limit:
            del self._keys[next(iter(self._keys))]

    def discard(self, value: bytes) -> None:
        self._keys.pop(value, None)

    def __contains__(self, value: object) -> bool:
        return value in self._keys

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class BlockRecordError(ValueError):
    """A stored block row that is not one (a damaged or hand-edited store)."""


@dataclass(frozen=True, slots=True)
class BlockEntry:
    key: bytes
    level: str
    """`block` or `mute`."""
    label: str = ""
    """The name the key had when it was blocked or muted, to list it by."""
    since: int = 0
    """When, in Unix seconds."""


def parse_block_row(row: Any) -> BlockEntry:
    """A `blocks` row (key, level, label, since) as read from SQLite; BlockRecordError
    for anything else. Never raises another exception."""
    if not isinstance(row, tuple | list) or len(row) != 4:
        raise BlockRecordError("a block row has four columns")
    key, level, label, since = row
    if not isinstance(key, bytes | bytearray | memoryview) or len(bytes(key)) != KEY_BYTES:
        raise BlockRecordError("a blocked key is 32 bytes")
    if level not in LEVELS:
        raise BlockRecordError("a block's level is block or mute")
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise BlockRecordError(f"a block's label is a string of at most {MAX_LABEL}")
    if type(since) is not int or not 0 <= since <= MAX_SINCE:
        raise BlockRecordError("a block's time is a non-negative integer")
    return BlockEntry(bytes(key), level, label, since)


_HEX_KEY = re.compile("[0-9a-f]{64}")


def parse_block_device(device: object, identity: object) -> tuple[bytes, bytes]:
    """A remembered device of a person blocked or muted (docs/protocol.md 5.4): its key
    and the identity's, each 64 lower-case hex digits, two different keys, as stored
    (SQLite `meta` rows, IndexedDB `blockDevices`); BlockRecordError for anything else.
    Never raises another exception."""
    if not isinstance(device, str) or not isinstance(identity, str):
        raise BlockRecordError("a blocked device and its identity are hex strings")
    if not _HEX_KEY.fullmatch(device) or not _HEX_KEY.fullmatch(identity):
        raise BlockRecordError("a blocked device and its identity are 64 lower-case hex")
    if device == identity:
        raise BlockRecordError("a device is not its own identity")
    return bytes.fromhex(device), bytes.fromhex(identity)


class AmbiguousName(LookupError):
    """A chat command's NAME matches more than one key: the key's hex tells them apart."""


def find_key(spec: str, names: Mapping[bytes, str], known: Iterable[bytes] = ()) -> bytes | None:
    """The key a chat command names: 64 hex digits, a hex prefix of at least 4 digits
    (with or without the tag's dot) of a key in `names` or `known`, or a name (any
    case). None if nothing matches; AmbiguousName if several do."""
    spec = spec.strip().lstrip("\u00b7")
    if not spec:
        return None
    lowered = spec.lower()
    if len(lowered) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(lowered)
        except ValueError:
            pass
    keys = dict.fromkeys([*names, *known])
    by_name = [k for k in keys if (names.get(k) or "").lower() == lowered]
    if len(by_name) == 1:
        return by_name[0]
    by_hex = (
        [k for k in keys if k.hex().startswith(lowered)]
        if len(lowered) >= 4 and all(c in "0123456789abcdef" for c in lowered)
        else []
    )
    found = by_name or by_hex
    if len(found) > 1:
        raise AmbiguousName(f"{spec!r} names {len(found)} keys; give more of the key")
    return found[0] if found else None
