"""A rogue room member against a receiver's files, and a sender's (docs/protocol.md 5.0, 5.2).

The member may offer files; it may never grow the receiver's memory or disk
without bound, make it write where it chooses, or break its link with a frame.
It may accept files; it may never make the sender upload, open channels or
buffer without bound, or crowd out an honest receiver.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCDataChannel

import peer.transfer
from peer.files import DEFAULT_CHUNK, FileOffer, OfferLimits, UploadLimits, local_name
from peer.peer import Connected, FileDone, FileOffered, Message, Room
from peer.store import PeerStore
from peer.transfer import HIGH_WATER, FileEvent, Transfers
from tests.peer.conftest import PeerFactory, loopback_ice, peers  # noqa: F401  (fixtures)
from tests.peer.test_files import Clock
from tests.signaling.conftest import NodeFactory, signaling_mesh  # noqa: F401  (fixture)

URL = "https://example.org/rogue"
ROGUE = b"\x66" * 32
HONEST = b"\x11" * 32
LIMITS = OfferLimits()


def fake_offer(name: str = "x.bin", size: int = 10) -> dict[str, Any]:
    return {
        "t": "file-offer",
        "id": os.urandom(16).hex(),
        "name": name,
        "size": size,
        "mime": "application/octet-stream",
        "sha256": "00" * 32,
        "chunk": DEFAULT_CHUNK,
    }


class Receiver:
    """A Transfers with recorded control frames and events, on a hand-moved clock."""

    def __init__(self, tmp_path: Path, inbox: Path | None = None, **options: Any) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []
        self.events: list[FileEvent] = []
        self.transfers = Transfers(
            PeerStore(tmp_path / "store"),
            lambda member, frame: self.sent.append((member, frame)) is None,
            lambda member, label: None,
            self.events.append,
            1 << 30,
            **options,
        )
        self.transfers.auto_accept = inbox

    def accepts(self) -> list[dict[str, Any]]:
        return [frame for _, frame in self.sent if frame["t"] == "file-accept"]


def test_a_hundred_thousand_offers_keep_the_state_bounded(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    receiver = Receiver(tmp_path, inbox)
    transfers = receiver.transfers
    for _ in range(100_000):
        transfers.on_control(ROGUE, fake_offer())
    kept = len(transfers.offers) + len(transfers.incoming)
    assert len(transfers.offers) <= LIMITS.per_member
    assert len(transfers.incoming) <= LIMITS.downloads_per_member
    assert len(receiver.accepts()) == len(transfers.incoming)
    drops = sum(v for k, v in transfers.counters.items() if k.startswith("drop.offer"))
    assert kept + drops == 100_000
    assert not inbox.exists() or not list(inbox.iterdir())  # nothing on disk before data
    # an honest member is not crowded out by the rogue: its offer is taken at once
    honest = fake_offer()
    transfers.on_control(HONEST, honest)
    assert transfers.incoming[honest["id"]].sender == HONEST


def test_offers_are_bounded_by_rate_count_room_and_age(tmp_path: Path) -> None:
    clock = Clock()
    receiver = Receiver(tmp_path, clock=clock)
    transfers = receiver.transfers
    for _ in range(100):  # at one instant: a burst, no more
        transfers.on_control(ROGUE, fake_offer())
    assert len(transfers.offers) == LIMITS.burst
    assert transfers.counters["drop.offer_rate"] == 100 - LIMITS.burst
    for _ in range(200):  # one a second for a while: the member's count caps
        clock.now += 1 / LIMITS.rate
        transfers.on_control(ROGUE, fake_offer())
    assert len(transfers.offers) == LIMITS.per_member
    assert transfers.counters["drop.offer_member_full"] >= 1
    members = [bytes([n]) * 32 for n in range(20)]  # many members: the room caps
    for member in members:
        for _ in range(LIMITS.per_member):
            transfers.on_control(member, fake_offer())
    assert len(transfers.offers) == LIMITS.per_room
    assert transfers.counters["drop.offer_room_full"] >= 1
    clock.now += LIMITS.max_age + 1  # nobody accepted them: forgotten
    transfers.handle_timer()
    assert len(transfers.offers) == 0
    assert transfers.counters["expired.offer"] == LIMITS.per_room
    transfers.on_control(ROGUE, fake_offer())
    assert len(transfers.offers) == 1
    transfers.member_left(ROGUE)
    assert len(transfers.offers) == 0


def test_auto_accept_takes_a_few_at_a_time_and_the_rest_when_a_slot_frees(
    tmp_path: Path,
) -> None:
    clock = Clock()
    inbox = tmp_path / "inbox"
    receiver = Receiver(tmp_path, inbox, clock=clock)
    transfers = receiver.transfers
    for member in (ROGUE, HONEST, b"\x22" * 32):
        for _ in range(10):
            transfers.on_control(member, fake_offer())
    assert len(transfers.incoming) == LIMITS.downloads_per_room
    per_member: dict[bytes, int] = {}
    for incoming in transfers.incoming.values():
        per_member[incoming.sender] = per_member.get(incoming.sender, 0) + 1
    assert max(per_member.values()) <= LIMITS.downloads_per_member
    assert not inbox.exists() or not list(inbox.iterdir())  # no file before data arrives
    waiting = len(transfers.offers)
    clock.now += LIMITS.stall + 1  # the senders never send: the slots free, others go
    transfers.handle_timer()
    assert transfers.counters["failed.download_stalled"] == LIMITS.downloads_per_room
    assert len(transfers.incoming) == LIMITS.downloads_per_room
    assert len(transfers.offers) == waiting - LIMITS.downloads_per_room


@pytest.fixture
def long_name() -> Iterator[str]:
    yield "\u00fc" * 251 + ".txt"  # 255 characters, 506 bytes of UTF-8


async def next_of(room: Room, kinds: tuple[type, ...], within: float = 15.0) -> Any:
    """The next event of one of `kinds` (a Message only from someone else)."""
    async with asyncio.timeout(within):
        while True:
            event = await room.next_event(within)
            if isinstance(event, kinds) and not (isinstance(event, Message) and event.mine):
                return event


async def connected_pair(
    signaling_mesh: NodeFactory,  # noqa: F811
    peers: PeerFactory,  # noqa: F811
    inbox: Path | None = None,
) -> tuple[Room, Room, bytes, bytes]:
    (node,) = await signaling_mesh(1)
    rogue = await peers("rogue", [node.url])
    victim = await peers("victim", [node.url], accept_files_to=inbox)
    rogue_room = await rogue.join(URL)
    victim_room = await victim.join(URL)
    await next_of(rogue_room, (Connected,))
    await next_of(victim_room, (Connected,))
    return rogue_room, victim_room, rogue.public_key, victim.public_key


@pytest.mark.integration
async def test_a_flood_of_offers_and_a_long_name_over_real_links(
    signaling_mesh: NodeFactory,  # noqa: F811
    peers: PeerFactory,  # noqa: F811
    tmp_path: Path,
    long_name: str,
) -> None:
    inbox = tmp_path / "inbox"
    rogue_room, victim_room, _, victim_key = await connected_pair(signaling_mesh, peers, inbox)
    link = rogue_room.links[victim_key]
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(200_000))
    digest = hashlib.sha256(source.read_bytes()).digest()
    offer = FileOffer(os.urandom(16).hex(), long_name, 200_000, "text/plain", digest)
    rogue_room.transfers.outgoing[offer.id] = (offer, source)  # a name no local disk takes
    assert link.send(offer.to_json())
    for _ in range(3000):
        link.send(fake_offer())
    await rogue_room.send("after the flood")

    seen: dict[type, Any] = {}
    while len(seen) < 2:
        event = await next_of(victim_room, (FileDone, Message))
        seen[type(event)] = event
    assert seen[Message].text == "after the flood"
    done = seen[FileDone]
    assert done.path == inbox / local_name(long_name)
    assert done.path.name.endswith(".txt") and len(done.path.name.encode()) <= 200
    assert hashlib.sha256(done.path.read_bytes()).digest() == digest
    assert len(list(inbox.iterdir())) <= 1 + LIMITS.downloads_per_member
    counters = victim_room.transfers.counters
    assert counters.get("drop.offer_rate", 0) + counters.get("drop.offer_member_full", 0) > 2000
    assert len(victim_room.transfers.offers) <= LIMITS.per_member

    assert link.open and not link.failed  # the rogue's own link stayed up both ways
    await victim_room.send("still talking")
    assert (await next_of(rogue_room, (Message,))).text == "still talking"


@pytest.mark.integration
async def test_deep_nesting_and_a_failing_handler_leave_the_link_up(
    signaling_mesh: NodeFactory,  # noqa: F811
    peers: PeerFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rogue_room, victim_room, rogue_key, victim_key = await connected_pair(signaling_mesh, peers)
    link = rogue_room.links[victim_key]
    link.control.send("[" * 200_000)
    link.control.send('{"t":' * 40_000 + "1" + "}" * 40_000)
    link.control.send("[" * 100_000 + "]" * 100_000)
    link.control.send(b"\xff\xfe not UTF-8")

    real_receive = victim_room.core.receive
    failures = []

    def failing_once(member: bytes, frame: Any, now: float) -> None:
        if frame.get("t") == "boom" and not failures:
            failures.append(frame)
            raise RuntimeError("a bug in the room code")
        real_receive(member, frame, now)

    monkeypatch.setattr(victim_room.core, "receive", failing_once)
    link.send({"t": "boom"})
    await rogue_room.send("still here")
    assert (await next_of(victim_room, (Message,))).text == "still here"
    assert failures
    victim_link = victim_room.links[rogue_key]
    assert victim_link.counters.get("drop.control_too_deep") == 3
    assert victim_link.counters.get("drop.control_not_utf8") == 1
    assert victim_link.counters.get("error.frame_handler") == 1
    assert link.open and victim_link.open
    await victim_room.send("and back")
    assert (await next_of(rogue_room, (Message,))).text == "and back"


MIB = 1 << 20


@pytest.mark.integration
async def test_twenty_accepts_for_one_file_upload_it_once_within_the_bounds(
    signaling_mesh: NodeFactory,  # noqa: F811
    peers: PeerFactory,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacker review's F5: 20 `file-accept` frames (~1.4 KB) for an 8 MiB offer
    made the sender open 20 channels, buffer 79 MiB and upload 160 MB."""
    (node,) = await signaling_mesh(1)
    sender = await peers("sender", [node.url])
    rogue = await peers("rogue", [node.url])
    honest = await peers("honest", [node.url], accept_files_to=tmp_path / "inbox")
    room = await sender.join(URL)
    rogue_room = await rogue.join(URL)
    honest_room = await honest.join(URL)
    for other in (rogue_room, honest_room):
        await next_of(other, (Connected,))
    while len([link for link in room.links.values() if link.open]) < 2:
        await next_of(room, (Connected,))

    kept: list[RTCDataChannel] = []  # the rogue keeps every file channel open and reads nothing
    monkeypatch.setattr(rogue_room.transfers, "on_channel", lambda member, c: kept.append(c))
    opened: list[RTCDataChannel] = []
    rogue_streaming = asyncio.Event()
    real_open = room.transfers._open_channel

    def recording(member: bytes, label: str) -> RTCDataChannel | None:
        channel = real_open(member, label)
        if channel is not None:
            opened.append(channel)
            if member == rogue.public_key:
                channel.on("open", rogue_streaming.set)
        return channel

    monkeypatch.setattr(room.transfers, "_open_channel", recording)
    uploaded = [0]
    real_frame = peer.transfer.chunk_frame

    def counted(offset: int, data: bytes) -> bytes:
        uploaded[0] += len(data)
        return real_frame(offset, data)

    monkeypatch.setattr(peer.transfer, "chunk_frame", counted)

    peak = {"channels": 0, "live": 0, "buffered": 0}

    async def sample() -> None:
        while True:
            alive = [c for c in opened if c.readyState != "closed"]
            peak["channels"] = max(peak["channels"], len(alive))
            peak["live"] = max(peak["live"], sum(c.readyState != "closing" for c in alive))
            peak["buffered"] = max(peak["buffered"], sum(c.bufferedAmount for c in alive))
            await asyncio.sleep(0.002)

    sampler = asyncio.ensure_future(sample())
    source = tmp_path / "eight.bin"
    source.write_bytes(os.urandom(8 * MIB))
    digest = hashlib.sha256(source.read_bytes()).digest()
    file_id = await room.send_file(source)
    assert (await next_of(rogue_room, (FileOffered,))).offer.id == file_id
    done = asyncio.ensure_future(next_of(honest_room, (FileDone,), within=60))
    link = rogue_room.links[sender.public_key]
    for _ in range(20):
        assert link.send({"t": "file-accept", "id": file_id, "offset": 0})
    async with asyncio.timeout(30):  # once the rogue's stream has begun, 20 more
        await rogue_streaming.wait()
    for _ in range(20):
        assert link.send({"t": "file-accept", "id": file_id, "offset": 0})
    async with asyncio.timeout(60):
        event = await done
        while room.transfers._tasks:  # the rogue's streams end too
            await asyncio.wait(set(room.transfers._tasks))
    sampler.cancel()
    assert event.path is not None and hashlib.sha256(event.path.read_bytes()).digest() == digest
    print(
        f"F5: {len(opened)} channels opened, at most {peak['live']} open and "
        f"{peak['channels']} not yet closed at once, {peak['buffered'] / MIB:.1f} MiB "
        f"buffered at most, {uploaded[0] / MIB:.1f} MiB uploaded"
    )
    uploads = UploadLimits()
    assert peak["live"] <= 1 + 1  # one stream per member and file: the rogue's, the honest's
    assert peak["channels"] <= 1 + 1 + 1  # and the rogue's replaced one, closing
    assert peak["buffered"] <= uploads.buffered_per_member + HIGH_WATER + 2 * (DEFAULT_CHUNK + 40)
    assert uploaded[0] <= 3 * 8 * MIB  # each receiver once, and what a replaced stream sent
    assert room.transfers.counters.get("drop.accept_rate", 0) <= 40 - uploads.burst
