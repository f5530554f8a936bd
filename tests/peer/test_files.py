"""File offers and chunks: corruption detected, resumed from the last verified byte;
what a member may make a receiver keep is bounded; local names are the receiver's."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.files import (
    BROWSER_ACCEPT,
    INLINE_IMAGE_BYTES,
    MAX_LOCAL_NAME,
    AcceptRule,
    FileDownload,
    FileOffer,
    FileRejected,
    OfferBook,
    OfferLimits,
    SharedFiles,
    UploadLimits,
    chunk_frame,
    local_name,
    parse_chunk,
    parse_offer,
    parse_offer_frame,
    part_name,
)
from peer.store import PeerStore
from peer.transfer import HIGH_WATER, FileDone, FileEvent, FileFailed, FileOffered, Transfers

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


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=300)
    | st.sampled_from(["ab" * 16, "00" * 32, "image/png", ".", "..", "a/b", "\x00"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["t", "id", "name", "size", "mime", "sha256", "chunk", "x"]),
        JSON,
    )
)
def test_parse_offer_only_raises_file_rejected(data: dict[str, object]) -> None:
    with contextlib.suppress(FileRejected):
        offer = parse_offer(data, max_size=10**6)
        assert 0 < len(offer.name) <= 255 and 0 <= offer.size <= 10**6


# --- local names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat.png", "cat.png"),
        ("../etc/passwd", "_etc_passwd"),
        (".bashrc", "bashrc"),
        ("..", "file"),
        (" . ", "file"),
        ("a\x00b\nc", "a_b_c"),
        ("a\u202egnp.exe", "a_gnp.exe"),  # a right-to-left override would hide the .exe
        ("CON.txt", "_CON.txt"),
        ('what? "x" <y>|z*.md', "what_ _x_ _y__z_.md"),
        ("\ud800.txt", "_.txt"),
    ],
)
def test_local_names(name: str, expected: str) -> None:
    assert local_name(name) == expected


def test_a_long_name_is_cut_in_its_stem_and_keeps_its_extension() -> None:
    name = local_name("\u00fc" * 251 + ".txt")
    assert name.endswith("\u00fc.txt") and len(name.encode()) == MAX_LOCAL_NAME
    assert len(local_name("x" * 255).encode()) == MAX_LOCAL_NAME
    assert local_name("a" * 250 + "." + "b" * 40) == "a" * 200  # no such extension
    assert part_name("ab" * 16) == f".{'ab' * 16}.part"


@given(st.text(min_size=1, max_size=255))
def test_any_name_maps_to_one_the_filesystem_takes(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    safe = local_name(name)
    assert 0 < len(safe.encode()) <= MAX_LOCAL_NAME
    assert not safe.startswith((".", " ")) and not safe.endswith((".", " "))
    assert safe not in (".", "..") and "/" not in safe and "\\" not in safe
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in safe)
    directory = tmp_path_factory.mktemp("names")
    (directory / safe).write_bytes(b"x")
    assert [p.name for p in directory.iterdir()] == [safe]
    (directory / f"{Path(safe).stem} (12){Path(safe).suffix}").write_bytes(b"")  # room left


# --- the offer book -------------------------------------------------------------------

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def an_offer(n: int = 0, size: int = 10) -> FileOffer:
    return FileOffer(f"{n:032x}", "f.bin", size, "application/octet-stream", b"\x00" * 32)


def offer_to(book: OfferBook, member: bytes, offer: FileOffer, now: float) -> bool:
    return book.admit(member, now) and book.add(member, offer, now)


def test_the_book_bounds_rate_count_and_age() -> None:
    limits = OfferLimits(per_member=3, per_room=5, rate=1.0, burst=2.0, max_age=10.0)
    book = OfferBook(limits)
    assert [offer_to(book, A, an_offer(n), 0.0) for n in range(3)] == [True, True, False]
    assert book.counters == {"drop.offer_rate": 1}
    assert offer_to(book, A, an_offer(3), 1.0) and not offer_to(book, A, an_offer(4), 2.0)
    assert book.counters["drop.offer_member_full"] == 1 and len(book) == 3
    assert offer_to(book, B, an_offer(5), 2.0) and offer_to(book, B, an_offer(6), 2.0)
    assert not offer_to(book, B, an_offer(7), 3.0)
    assert book.counters["drop.offer_room_full"] == 1
    assert book.next_expiry() == 10.0
    assert book.expire(10.0) == [f"{n:032x}" for n in (0, 1)]
    assert book.counters["expired.offer"] == 2 and len(book) == 3
    assert book.forget_member(B) == [f"{n:032x}" for n in (5, 6)] and len(book) == 1


def test_settled_files_are_not_offered_again_and_the_memory_is_bounded() -> None:
    book = OfferBook(OfferLimits(settled=3))
    offer_to(book, A, an_offer(1), 0.0)
    assert book.take(an_offer(1).id) == (A, an_offer(1)) and book.take(an_offer(1).id) is None
    for n in range(1, 6):
        book.settle(an_offer(n).id)
    assert not book.known(an_offer(1).id) and book.known(an_offer(5).id)
    assert not book.add(A, an_offer(5), 1.0)


def test_the_accept_policy_takes_the_oldest_within_its_slots() -> None:
    book = OfferBook(OfferLimits(downloads_per_member=1, downloads_per_room=2))
    for n, member in enumerate([A, A, B]):
        offer_to(book, member, an_offer(n, size=n), 0.0)
    assert book.next_acceptable({}) == an_offer(0).id
    assert book.next_acceptable({A: 1}) == an_offer(2).id
    assert book.next_acceptable({A: 1, B: 1}) is None
    assert book.next_acceptable({}, eligible=lambda o, earlier: o.size > 0) == an_offer(1).id


def test_member_buckets_are_bounded() -> None:
    book = OfferBook(OfferLimits(members=4, burst=1.0, rate=1.0))
    for n in range(4):
        assert book.admit(bytes([n]) * 32, 0.0)
    assert not book.admit(b"\x09" * 32, 0.5)  # four empty buckets: no room for a fifth
    assert book.counters["drop.offer_members"] == 1
    assert book.admit(b"\x09" * 32, 1.0)  # refilled buckets are forgotten, as new


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["offer", "take", "settle", "leave", "expire"]),
            st.integers(0, 5),
            st.integers(0, 40),
            st.floats(0, 50),
        ),
        max_size=200,
    )
)
def test_the_book_stays_within_its_limits(ops: list[tuple[str, int, int, float]]) -> None:
    limits = OfferLimits(per_member=4, per_room=10, burst=3, max_age=20, settled=5, members=3)
    book = OfferBook(limits)
    now = 0.0
    for op, member, n, step in ops:
        now += step
        key, offer = bytes([member]) * 32, an_offer(n)
        if op == "offer":
            offer_to(book, key, offer, now)
        elif op == "take":
            book.take(offer.id)
        elif op == "settle":
            book.settle(offer.id)
        elif op == "leave":
            book.forget_member(key)
        else:
            book.expire(now)
        kept = book.values()
        assert len(kept) == len(book) <= limits.per_room
        for m in {m for m, _ in kept}:
            assert sum(1 for k, _ in kept if k == m) <= limits.per_member
        assert len(book._settled) <= limits.settled and len(book._buckets) <= limits.members


# --- files shared earlier, accept rules, what a sender offers --------------------------


def test_an_offer_says_when_it_was_made_before_the_receiver_came() -> None:
    offer = offer_for(DATA)
    assert "earlier" not in offer.to_json()  # a new offer reads as before
    assert parse_offer_frame(offer.to_json(), 10**6) == (offer, False)
    assert parse_offer_frame(offer.to_json(earlier=True), 10**6) == (offer, True)
    for bad in ("yes", 1, None):
        with pytest.raises(FileRejected, match="earlier is true or false"):
            parse_offer({**offer.to_json(), "earlier": bad}, 10**6)


@pytest.mark.parametrize(
    ("rule", "mime", "size", "earlier", "taken"),
    [
        (AcceptRule(), "application/zip", 10**9, False, True),
        (AcceptRule(), "image/png", 10, True, False),  # shared before we came: asked for only
        (AcceptRule(earlier=True), "image/png", 10, True, True),
        (AcceptRule(max_bytes=100), "text/plain", 101, False, False),
        (BROWSER_ACCEPT, "image/png", INLINE_IMAGE_BYTES, False, True),
        (BROWSER_ACCEPT, "IMAGE/JPEG", 10, False, True),
        (BROWSER_ACCEPT, "image/png", INLINE_IMAGE_BYTES + 1, False, False),
        (BROWSER_ACCEPT, "image/svg+xml", 10, False, False),  # a document, not a picture
        (BROWSER_ACCEPT, "text/plain", 10, False, False),
        (BROWSER_ACCEPT, "image/gif", 10, True, False),
    ],
)
def test_accept_rules(rule: AcceptRule, mime: str, size: int, earlier: bool, taken: bool) -> None:
    offer = FileOffer("ab" * 16, "x", size, mime, bytes(32))
    assert rule.takes(offer, earlier) is taken


def test_a_sender_offers_its_newest_files_for_an_hour_new_to_those_present() -> None:
    shared = SharedFiles(OfferLimits(per_member=2, max_age=60.0))
    first, second, third = an_offer(1), an_offer(2), an_offer(3)
    assert shared.add(first, 0.0, [A]) == []
    assert shared.add(second, 10.0, [A, B]) == []
    assert shared.for_member(A, 10.0) == [(first, False), (second, False)]
    assert shared.for_member(B, 10.0) == [(first, True), (second, False)]  # came after the first
    assert shared.for_member(C, 10.0) == [(first, True), (second, True)]  # a newcomer
    assert shared.add(third, 20.0, []) == [first.id]  # receivers keep no more of ours
    assert shared.get(first.id, 20.0) is None and shared.next_expiry() == 70.0
    assert shared.get(second.id, 69.9) == second and shared.get(second.id, 70.0) is None
    assert not shared.serves(second.id, A, 70.0)  # too old to be fetched, even before expire
    assert shared.expire(70.0) == [second.id] and len(shared) == 1


def test_a_file_for_some_members_is_offered_and_served_to_them_alone() -> None:
    shared = SharedFiles(OfferLimits(members=2))
    offer = an_offer(1)
    shared.add(offer, 0.0, present=[A, B], audience=[B])
    assert shared.for_member(A, 1.0) == [] and not shared.serves(offer.id, A, 1.0)
    assert shared.for_member(B, 1.0) == [(offer, False)] and shared.serves(offer.id, B, 1.0)
    assert shared.address(offer.id, [C, B]) == [C]  # named later: new to it too
    assert shared.for_member(C, 1.0) == [(offer, False)]
    assert shared.address(offer.id, [A]) == []  # at most `members` recipients
    assert shared.address("00" * 16, [A]) == []


# --- Transfers, receiving (no network: frames and channels by hand) ----------------


class FakeChannel:
    """A data channel as aiortc's behaves: `send` buffers until `drain`; `close` with data
    still buffered leaves it closing (that data still goes out) until it drains."""

    def __init__(self, label: str, member: bytes = b"", state: str = "open") -> None:
        self.label = label
        self.member = member
        self.readyState = state
        self.handlers: dict[str, list[Any]] = {}
        self.closed = False
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[bytes] = []

    def on(self, event: str, handler: Any) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def _fire(self, event: str) -> None:
        for handler in list(self.handlers.get(event, ())):
            handler()

    def open(self) -> None:
        self.readyState = "open"
        self._fire("open")

    def send(self, data: bytes) -> None:
        assert self.readyState == "open"
        self.sent.append(data)
        self.bufferedAmount += len(data)

    def drain(self, to: int = 0) -> None:
        was, self.bufferedAmount = self.bufferedAmount, min(to, self.bufferedAmount)
        if was > self.bufferedAmountLowThreshold >= self.bufferedAmount:
            self._fire("bufferedamountlow")
        if self.readyState == "closing" and not self.bufferedAmount:
            self._closed()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bufferedAmount and self.readyState == "open":
            self.readyState = "closing"
        else:
            self._closed()

    def _closed(self) -> None:
        self.readyState = "closed"
        self._fire("close")

    def deliver(self, message: bytes) -> None:
        for handler in self.handlers["message"]:
            handler(message)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Receiver:
    def __init__(
        self, tmp_path: Path, inbox: Path | None = None, clock: Clock | None = None
    ) -> None:
        self.sent: list[dict[str, Any]] = []
        self.events: list[FileEvent] = []
        self.transfers = Transfers(
            PeerStore(tmp_path / "store"),
            lambda member, frame: self.sent.append(frame) is None,
            lambda member, label: None,
            self.events.append,
            1 << 20,
            clock=clock or Clock(),
        )
        self.transfers.auto_accept = inbox

    def offer(self, data: bytes, name: str = "cat.png", member: bytes = A) -> FileOffer:
        offer = FileOffer(
            os.urandom(16).hex(), name, len(data), "image/png", hashlib.sha256(data).digest(), 1024
        )
        self.transfers.on_control(member, offer.to_json())
        return offer


def test_nothing_is_written_before_the_first_verified_chunk(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    r = Receiver(tmp_path)
    data = os.urandom(5000)
    offer = r.offer(data, name="..." + "\u00e9" * 252)
    assert isinstance(r.events[-1], FileOffered)
    r.transfers.accept(offer.id, inbox)
    assert r.sent[-1] == {"t": "file-accept", "id": offer.id, "offset": 0}
    assert list(inbox.iterdir()) == []
    channel = FakeChannel(f"file:{offer.id}")
    r.transfers.on_channel(A, channel)  # type: ignore[arg-type]
    bad = bytearray(chunk_frame(0, data[:1024]))
    bad[-1] ^= 1
    channel.deliver(bytes(bad))
    assert channel.closed and list(inbox.iterdir()) == []  # a bad first chunk writes nothing
    channel = FakeChannel(f"file:{offer.id}")
    r.transfers.on_channel(A, channel)  # type: ignore[arg-type]
    channel.deliver(chunk_frame(0, data[:1024]))
    assert [p.name for p in inbox.iterdir()] == [part_name(offer.id)]
    for offset in range(1024, len(data), 1024):
        channel.deliver(chunk_frame(offset, data[offset : offset + 1024]))
    done = r.events[-1]
    assert isinstance(done, FileDone) and done.path is not None
    assert done.path.name == local_name(offer.name) and done.path.read_bytes() == data
    assert [p.name for p in inbox.iterdir()] == [done.path.name]
    r.transfers.on_control(A, offer.to_json())  # the sender re-offers on reconnection
    assert not r.transfers.offers and not r.transfers.incoming


def test_an_empty_file_is_placed_at_once(tmp_path: Path) -> None:
    r = Receiver(tmp_path, tmp_path / "in")
    offer = r.offer(b"", name="empty.txt")
    done = r.events[-1]
    assert isinstance(done, FileDone) and done.path == tmp_path / "in" / "empty.txt"
    assert done.path.read_bytes() == b"" and r.sent[-1] == {"t": "file-done", "id": offer.id}


def test_a_write_that_fails_fails_the_transfer_and_not_the_channel_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = Receiver(tmp_path, tmp_path / "in")
    data = os.urandom(3000)
    offer = r.offer(data)
    channel = FakeChannel(f"file:{offer.id}")
    r.transfers.on_channel(A, channel)  # type: ignore[arg-type]

    def full_disk(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "open", full_disk)
    channel.deliver(chunk_frame(0, data[:1024]))  # must not raise
    failed = r.events[-1]
    assert isinstance(failed, FileFailed) and "No space left" in failed.reason
    assert channel.closed and not r.transfers.incoming
    assert r.transfers.counters["failed.download_io"] == 1


def test_decline_forgets_the_offer_and_ignores_its_re_offers(tmp_path: Path) -> None:
    r = Receiver(tmp_path)
    offer = r.offer(b"abc")
    r.transfers.decline(offer.id)
    assert r.sent[-1] == {"t": "file-decline", "id": offer.id}
    events = len(r.events)
    r.transfers.on_control(A, offer.to_json())
    assert len(r.events) == events and offer.id not in r.transfers.offers
    with pytest.raises(KeyError):
        r.transfers.accept(offer.id, tmp_path)


def test_a_malformed_offer_is_counted_and_reported(tmp_path: Path) -> None:
    r = Receiver(tmp_path)
    r.transfers.on_control(A, {"t": "file-offer", "id": ["not", "hashable", {}], "name": 3})
    r.transfers.on_control(A, {"t": "file-offer", "id": {"x": 1}})
    assert r.transfers.counters["drop.offer_malformed"] == 2
    assert all(isinstance(e, FileFailed) for e in r.events)


async def test_the_sender_keeps_its_newest_offers_only(tmp_path: Path) -> None:
    sent: list[tuple[bytes, dict[str, Any]]] = []
    transfers = Transfers(
        PeerStore(tmp_path / "store"),
        lambda member, frame: sent.append((member, frame)) is None,
        lambda member, label: None,
        lambda event: None,
        1 << 20,
        limits=OfferLimits(per_member=3),
    )
    for n in range(5):
        path = tmp_path / f"f{n}.txt"
        path.write_text(str(n))
        await transfers.offer(path, [A])
    sent.clear()
    transfers.member_connected(B)  # a late joiner gets the newest three
    assert [frame["name"] for _, frame in sent] == ["f2.txt", "f3.txt", "f4.txt"]


async def test_a_newcomer_hears_of_past_files_as_shared_earlier(tmp_path: Path) -> None:
    sent: list[tuple[bytes, dict[str, Any]]] = []
    transfers = Transfers(
        PeerStore(tmp_path / "store"),
        lambda member, frame: sent.append((member, frame)) is None,
        lambda member, label: None,
        lambda event: None,
        1 << 20,
    )
    path = tmp_path / "notes.txt"
    path.write_text("notes")
    offer = await transfers.offer(path, [A], present=[A, B])  # B is here, not yet linked
    assert sent == [(A, offer.to_json())]
    sent.clear()
    for member in (A, B, C):  # links (re)open; C came after the offer
        transfers.member_connected(member)
    assert sent == [(A, offer.to_json()), (B, offer.to_json()), (C, offer.to_json(True))]
    sent.clear()
    only_c = await transfers.offer(path, [A, B], present=[A, B], to=[C])
    assert sent == []  # for C alone, and C is not linked
    transfers.offer_to(only_c.id, [B], linked=[A, B])
    assert sent == [(B, only_c.to_json())]
    transfers.on_control(A, {"t": "file-accept", "id": only_c.id, "offset": 0})
    assert transfers.counters == {"drop.accept_unknown": 1}  # not offered to A: not served


def test_an_accept_policy_takes_no_file_shared_earlier_unless_told(tmp_path: Path) -> None:
    r = Receiver(tmp_path, tmp_path / "in")
    data = os.urandom(3000)
    earlier = FileOffer("01" * 16, "old.png", 3000, "image/png", hashlib.sha256(data).digest())
    r.transfers.on_control(A, earlier.to_json(earlier=True))
    fresh = r.offer(data)
    assert [(type(e), getattr(e, "earlier", None)) for e in r.events] == [
        (FileOffered, True),
        (FileOffered, False),
    ]
    assert list(r.transfers.incoming) == [fresh.id] and earlier.id in r.transfers.offers
    r.transfers.accept(earlier.id, tmp_path / "in")  # a person asks for it
    assert earlier.id in r.transfers.incoming
    told = Receiver(tmp_path / "told", tmp_path / "in2")
    told.transfers.accept_rule = AcceptRule(earlier=True)  # `receive --include-earlier`
    told.transfers.on_control(A, earlier.to_json(earlier=True))
    assert list(told.transfers.incoming) == [earlier.id]


def test_a_download_waiting_for_a_sender_slot_does_not_stall(tmp_path: Path) -> None:
    clock = Clock()
    r = Receiver(tmp_path, tmp_path / "in", clock)
    offer = r.offer(os.urandom(3000))
    assert offer.id in r.transfers.incoming
    for _ in range(10):  # the sender says, every 30 s, that our accept waits for a slot
        clock.now += 30
        r.transfers.on_control(A, {"t": "file-wait", "id": offer.id})
        r.transfers.handle_timer()
    assert offer.id in r.transfers.incoming and not r.transfers.counters
    r.transfers.on_control(B, {"t": "file-wait", "id": offer.id})  # only its sender's count
    clock.now += OfferLimits().stall
    r.transfers.handle_timer()
    assert r.transfers.counters == {"failed.download_stalled": 1}


# --- Transfers, sending: what a member's accepts may make us upload ------------------

MIB = 1 << 20
UPLOADS = UploadLimits()
FRAME = CHUNK + 40
"""One chunk frame: a bound is checked before each send, so it may be passed by one."""


class Sender:
    """A Transfers that offers files and opens fake channels (they open when told)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.sent: list[tuple[bytes, dict[str, Any]]] = []
        self.channels: list[FakeChannel] = []
        self.sizes: dict[str, int] = {}
        self.transfers = Transfers(
            PeerStore(tmp_path / "store"),
            lambda member, frame: self.sent.append((member, frame)) is None,
            self.open_channel,
            lambda event: None,
            1 << 30,
            clock=self.clock,
        )

    def open_channel(self, member: bytes, label: str) -> FakeChannel:
        channel = FakeChannel(label, member, state="connecting")
        self.channels.append(channel)
        return channel

    async def offer(self, size: int, n: int = 0) -> tuple[FileOffer, bytes]:
        data = os.urandom(size)
        path = self.tmp_path / f"f{n}.bin"
        path.write_bytes(data)
        offer = await self.transfers.offer(path, [])
        self.sizes[f"file:{offer.id}"] = size
        return offer, data

    def accept(self, member: bytes, offer: FileOffer, offset: int = 0) -> None:
        self.transfers.on_control(member, {"t": "file-accept", "id": offer.id, "offset": offset})

    def live(self, member: bytes | None = None) -> list[FakeChannel]:
        """Channels not closing or closed (of one member)."""
        return [c for c in self.channels if not c.closed and (member is None or c.member == member)]

    def waits(self) -> list[tuple[bytes, str]]:
        return [(m, f["id"]) for m, f in self.sent if f["t"] == "file-wait"]

    def buffered(self, member: bytes | None = None) -> int:
        return sum(
            c.bufferedAmount
            for c in self.channels
            if c.readyState != "closed" and (member is None or c.member == member)
        )

    async def pump(self, rounds: int = 400) -> None:
        """Open and drain every channel until nothing moves any more; as a receiver, close
        a channel once it has carried the file to its end (the sender waits for that)."""
        for _ in range(rounds):
            await settle()
            moving = [c for c in self.channels if c.readyState != "closed"]
            if not moving:
                return
            for channel in moving:
                if channel.readyState == "connecting":
                    channel.open()
                else:
                    channel.drain()
                    if channel.sent and end_of(channel.sent[-1]) == self.sizes[channel.label]:
                        channel.close()
        raise AssertionError("still moving")


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def end_of(frame: bytes) -> int:
    offset, _, data = parse_chunk(frame)
    return offset + len(data)


def received(channel: FakeChannel) -> tuple[int, bytes]:
    """(first offset, data) of what a channel carried."""
    first, _, _ = parse_chunk(channel.sent[0])
    return first, b"".join(bytes(parse_chunk(frame)[2]) for frame in channel.sent)


MEMBERS = [bytes([n]) * 32 for n in range(1, 12)]


async def test_a_new_accept_replaces_the_stream_of_the_same_file(tmp_path: Path) -> None:
    s = Sender(tmp_path)
    offer, data = await s.offer(6 * MIB)
    for _ in range(19):
        s.accept(A, offer)
    s.accept(A, offer, 2 * CHUNK)  # the receiver's latest word: from its verified offset
    assert len(s.channels) == 1  # not open yet, nothing sent: the new offset is taken
    first = s.channels[0]
    first.open()
    await settle()
    assert parse_chunk(first.sent[0])[0] == 2 * CHUNK
    assert HIGH_WATER < first.bufferedAmount <= HIGH_WATER + FRAME
    s.clock.now += UPLOADS.burst / UPLOADS.rate  # a full bucket again
    for n in range(3, 23):  # streaming now: a new accept replaces the stream
        s.accept(A, offer, n * CHUNK)
    assert len(s.channels) == 2 and s.live() == [s.channels[1]]
    assert first.readyState == "closing"  # what it buffered still goes out
    await s.pump()
    assert received(s.channels[1]) == (22 * CHUNK, data[22 * CHUNK :])
    assert received(first)[1] == data[2 * CHUNK : 2 * CHUNK + len(received(first)[1])]
    assert not s.live() and not s.transfers.uploads.running  # done: the receiver closed it
    s.clock.now += 1
    s.accept(A, offer, 3 * CHUNK)  # a bad chunk later: asked again, served again
    await s.pump()
    assert received(s.channels[-1]) == (3 * CHUNK, data[3 * CHUNK :])


async def test_uploads_are_capped_per_member_and_room_and_the_rest_wait(tmp_path: Path) -> None:
    s = Sender(tmp_path)
    offers = [(await s.offer(1000, n))[0] for n in range(3)]
    for offer in offers:
        s.accept(A, offer)
    assert len(s.live(A)) == UPLOADS.per_member
    assert s.waits() == [(A, offers[2].id)]
    for member in MEMBERS[:8]:
        s.accept(member, offers[0])
    assert len(s.live()) == UPLOADS.per_room
    waiting = [(A, offers[2].id)] + [(m, offers[0].id) for m in MEMBERS[6:8]]
    assert s.waits() == waiting
    assert sorted(s.transfers.uploads.waiting) == sorted(waiting)
    s.live(A)[0].close()  # a receiver closed it: the slot goes to a member with none running
    assert [c.member for c in s.live()][-1] == MEMBERS[6]
    s.clock.now += UPLOADS.wait_notice
    s.transfers.handle_timer()  # those still waiting hear it again, so they do not stall
    assert s.waits()[len(waiting) :] == [(A, offers[2].id), (MEMBERS[7], offers[0].id)]
    s.accept(MEMBERS[7], offers[0], 500)  # a new accept of a waiting one: its new offset
    await s.pump()
    served = {(c.member, c.label): received(c) for c in s.channels if c.sent}
    assert served[(MEMBERS[7], f"file:{offers[0].id}")][0] == 500
    assert len(served) == 2 + 8 and not s.transfers.uploads.waiting


async def test_accepts_beyond_the_rate_are_dropped_and_counted(tmp_path: Path) -> None:
    s = Sender(tmp_path)
    offer, _ = await s.offer(1000)
    for _ in range(40):
        s.accept(A, offer)
    assert s.transfers.counters["drop.accept_rate"] == 40 - UPLOADS.burst
    assert len(s.channels) == 1
    s.channels[0].open()
    s.accept(A, offer)  # no token left: the stream is not replaced
    s.accept(B, offer)  # another member has its own bucket
    assert len(s.channels) == 2
    s.clock.now += 1 / UPLOADS.rate
    s.accept(A, offer)
    assert len(s.channels) == 3 and s.transfers.counters["drop.accept_rate"] == 41 - 32
    s.transfers.on_control(A, {"t": "file-accept", "id": "nope", "offset": 0})
    s.transfers.on_control(A, {"t": "file-accept", "id": offer.id, "offset": True})
    s.transfers.on_control(A, {"t": "file-accept", "id": offer.id, "offset": 1001})
    assert s.transfers.counters["drop.accept_unknown"] == 3


async def test_what_uploads_buffer_is_bounded_per_member_and_room(tmp_path: Path) -> None:
    s = Sender(tmp_path)
    offer, data = await s.offer(6 * MIB)
    peak = peak_member = 0
    for member in MEMBERS[:6]:  # nobody drains; each re-accepts, leaving a closing channel
        for _ in range(4):
            s.accept(member, offer)
            for channel in s.live():
                if channel.readyState == "connecting":
                    channel.open()
            await settle()
            s.clock.now += 1
            peak = max(peak, s.buffered())
            peak_member = max(peak_member, *(s.buffered(m) for m in MEMBERS))
    assert peak <= UPLOADS.buffered_per_room + FRAME
    assert peak_member <= UPLOADS.buffered_per_member + FRAME
    assert peak >= UPLOADS.buffered_per_room - HIGH_WATER  # and the room was used
    await s.pump()  # the receivers read again: every stream goes on and ends
    for member in MEMBERS[:6]:
        (last,) = [c for c in s.channels if c.member == member][-1:]
        assert received(last) == (0, data)


async def test_an_upload_that_never_drains_is_stopped_and_its_slot_freed(tmp_path: Path) -> None:
    s = Sender(tmp_path)
    offer, _ = await s.offer(24 * MIB)
    for member in MEMBERS[: UPLOADS.per_room + 1]:
        s.accept(member, offer)
    for channel in s.live():
        channel.open()
    await settle()
    honest = s.live()[0]
    for n in range(1, int(UPLOADS.stall / 10) + 1):
        s.clock.now += 10
        if n % 3 == 0:
            honest.drain()  # only the first receiver reads, now and then
        await settle()
        s.transfers.handle_timer()
    assert s.transfers.counters["failed.upload_stalled"] == UPLOADS.per_room - 1
    assert not honest.closed and len(s.live()) == 2  # the one waiting got a slot
    s.transfers.member_left(MEMBERS[0])  # a member that leaves: its uploads end
    assert honest.closed
    assert [r.member for r in s.transfers.uploads.running.values()] == [MEMBERS[8]]


async def test_a_slow_receiver_that_drains_a_little_is_not_stopped(tmp_path: Path) -> None:
    s = Sender(tmp_path)
    offer, _ = await s.offer(6 * MIB)
    s.accept(A, offer)
    (channel,) = s.channels
    channel.open()
    await settle()
    assert channel.bufferedAmount > HIGH_WATER
    for _ in range(10):  # 100 kB a minute: never down to LOW_WATER, so no event says so
        s.clock.now += 60
        channel.drain(channel.bufferedAmount - 100_000)
        s.transfers.handle_timer()
    assert not channel.closed and "failed.upload_stalled" not in s.transfers.counters
    s.clock.now += UPLOADS.stall  # and when it takes nothing at all, it is stopped
    s.transfers.handle_timer()
    assert channel.closed and s.transfers.counters["failed.upload_stalled"] == 1


async def test_after_the_last_chunk_the_receiver_closes_or_the_upload_stalls(
    tmp_path: Path,
) -> None:
    s = Sender(tmp_path)
    offer, data = await s.offer(3000)
    s.accept(A, offer)
    (channel,) = s.channels
    channel.open()
    await settle()
    assert received(channel) == (0, data)
    assert not channel.closed  # a reset right behind the last chunk can lose it in a browser
    channel.drain()
    s.clock.now += UPLOADS.stall - 1
    s.transfers.handle_timer()
    assert not channel.closed and s.transfers.uploads.running  # its slot is still held
    s.clock.now += 1  # a receiver that never closes it: stopped like any stalled upload
    s.transfers.handle_timer()
    assert channel.closed and not s.transfers.uploads.running
    assert s.transfers.counters == {"failed.upload_stalled": 1}
