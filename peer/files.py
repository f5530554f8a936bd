"""File transfer formats and the receiving side's state, with no I/O.

A file is offered on the control channel (`FileOffer`, JSON) and, once
accepted, sent on a data channel of its own as binary chunk frames:

    offset (8 bytes, big-endian) || SHA-256 of the data (32 bytes) || data

The receiver (`FileDownload`) takes chunks only in order, checks each one's
digest, hashes the verified prefix as it grows, and at the end compares the
whole file's SHA-256 with the offer's. A corrupted chunk is refused and the
transfer resumes from the last verified byte (`resume_offset`), after a
reconnection or a restart alike (docs/protocol.md, "Files").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CHUNK_HEADER = 8 + 32
DEFAULT_CHUNK = 64 * 1024
MAX_CHUNK = 256 * 1024
MAX_NAME = 255
_ID = re.compile(r"[0-9a-f]{32}")
_MIME = re.compile(r"[\w.+-]+/[\w.+-]+")


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

    def to_json(self) -> dict[str, Any]:
        return {
            "t": "file-offer",
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "mime": self.mime,
            "sha256": self.sha256.hex(),
            "chunk": self.chunk_size,
        }


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
