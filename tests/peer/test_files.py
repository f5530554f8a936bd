"""File offers and chunks: corruption detected, resumed from the last verified byte."""

from __future__ import annotations

import contextlib
import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.files import (
    FileDownload,
    FileOffer,
    FileRejected,
    chunk_frame,
    parse_chunk,
    parse_offer,
)

DATA = os.urandom(300_000)
CHUNK = 65536


def offer_for(data: bytes, chunk: int = CHUNK) -> FileOffer:
    return FileOffer(
        "ab" * 16, "cat.png", len(data), "image/png", hashlib.sha256(data).digest(), chunk
    )


def frames(data: bytes, start: int = 0, chunk: int = CHUNK) -> list[bytes]:
    return [chunk_frame(o, data[o : o + chunk]) for o in range(start, len(data), chunk)]


def test_offer_round_trip_and_limits() -> None:
    offer = offer_for(DATA)
    assert parse_offer(offer.to_json(), max_size=10**6) == offer
    with pytest.raises(FileRejected, match="over the limit"):
        parse_offer(offer.to_json(), max_size=1000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "../etc/passwd"}, "path"),
        ({"name": "a\\b"}, "path"),
        ({"name": ""}, "1..255"),
        ({"id": "xyz"}, "32 hex"),
        ({"mime": "no slash"}, "type/subtype"),
        ({"sha256": "00"}, "32 bytes"),
        ({"size": -1}, "over the limit"),
        ({"chunk": 10}, "chunk size"),
        ({"size": True}, "integers"),
    ],
)
def test_bad_offers(change: dict[str, object], message: str) -> None:
    with pytest.raises(FileRejected, match=message):
        parse_offer({**offer_for(DATA).to_json(), **change}, max_size=10**6)


def test_a_whole_transfer_verifies() -> None:
    download = FileDownload(offer_for(DATA))
    received = b"".join(download.receive_chunk(f) for f in frames(DATA))
    assert received == DATA and download.complete


def test_a_corrupted_chunk_is_refused_and_the_transfer_resumes() -> None:
    download = FileDownload(offer_for(DATA))
    parts = frames(DATA)
    out = bytes(download.receive_chunk(parts[0]))
    bad = bytearray(parts[1])
    bad[-1] ^= 0xFF  # flipped in flight
    with pytest.raises(FileRejected, match="corrupted"):
        download.receive_chunk(bytes(bad))
    assert download.resume_offset == CHUNK and download.rejected_chunks == 1
    with pytest.raises(FileRejected, match="expected"):
        download.receive_chunk(parts[2])  # the sender must restart from resume_offset
    for frame in frames(DATA, start=download.resume_offset):
        out += download.receive_chunk(frame)
    assert out == DATA and download.complete


def test_resume_after_a_restart_from_the_partial_file() -> None:
    offer = offer_for(DATA)
    partial = DATA[: 2 * CHUNK]
    download = FileDownload(offer, [partial[:1000], partial[1000:]])
    assert download.resume_offset == 2 * CHUNK
    rest = b"".join(download.receive_chunk(f) for f in frames(DATA, start=2 * CHUNK))
    assert partial + rest == DATA


def test_a_file_that_does_not_match_its_offer_is_refused() -> None:
    other = bytearray(DATA)
    other[5] ^= 1
    download = FileDownload(offer_for(DATA))
    parts = frames(bytes(other))  # each chunk consistent with itself, the whole file not
    with pytest.raises(FileRejected, match="SHA-256"):
        for frame in parts:
            download.receive_chunk(frame)


def test_truncated_and_oversized_chunks() -> None:
    download = FileDownload(offer_for(DATA, chunk=2048))
    with pytest.raises(FileRejected, match="header"):
        download.receive_chunk(b"\x00" * 10)
    with pytest.raises(FileRejected, match="larger"):
        download.receive_chunk(chunk_frame(0, DATA[:4096]))
    small = FileDownload(offer_for(b"abc"))
    with pytest.raises(FileRejected, match="past the end"):
        small.receive_chunk(chunk_frame(0, b"abcd"))


def test_empty_file() -> None:
    assert FileDownload(offer_for(b"")).complete
    with pytest.raises(FileRejected):
        FileDownload(FileOffer("ab" * 16, "e", 0, "text/plain", b"\x01" * 32))


@given(st.binary(max_size=200))
def test_parse_chunk_only_raises_file_rejected(frame: bytes) -> None:
    with contextlib.suppress(FileRejected):
        offset, digest, _data = parse_chunk(frame)
        assert len(digest) == 32 and offset >= 0
    download = FileDownload(offer_for(DATA))
    with contextlib.suppress(FileRejected):
        download.receive_chunk(frame)


@given(
    st.dictionaries(
        st.sampled_from(["id", "name", "size", "mime", "sha256", "chunk"]),
        st.one_of(st.text(max_size=70), st.integers(), st.none(), st.booleans()),
    )
)
def test_parse_offer_only_raises_file_rejected(data: dict[str, object]) -> None:
    with contextlib.suppress(FileRejected):
        parse_offer(data, max_size=10**6)
