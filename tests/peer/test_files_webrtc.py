"""Files between real aiortc peers: verified, repaired after corruption in flight, resumed."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import peer.transfer
from peer.peer import Connected, FileDone, FileProgress, Room
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory

pytestmark = pytest.mark.integration

URL = "https://example.org/files"


async def wait_for(room: Room, kind: type, within: float = 60.0) -> Any:
    async def find() -> Any:
        async for event in room.events():
            if isinstance(event, kind):
                return event

    return await asyncio.wait_for(find(), within)


async def test_a_50_mb_file_reaches_two_receivers_and_a_corrupt_chunk_is_repaired(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(50 * 1024 * 1024))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    corrupted = []
    real_frame = peer.transfer.chunk_frame

    def flaky_frame(offset: int, data: bytes) -> bytes:
        frame = real_frame(offset, data)
        if offset == 10 * 65536 and not corrupted:  # one chunk, once, flipped in flight
            corrupted.append(offset)
            return frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return frame

    monkeypatch.setattr(peer.transfer, "chunk_frame", flaky_frame)
    a, b, c = await signaling_mesh(3)
    sender = await peers("sender", [a.url])
    inboxes = [tmp_path / "in1", tmp_path / "in2"]
    r1 = await peers("r1", [b.url], accept_files_to=inboxes[0])
    r2 = await peers("r2", [c.url], accept_files_to=inboxes[1])
    room = await sender.join(URL)
    rooms = [await r1.join(URL), await r2.join(URL)]
    for receiver_room in rooms:
        await wait_for(receiver_room, Connected)
    while len([link for link in room.links.values() if link.open]) < 2:
        await wait_for(room, Connected)

    await room.send_file(source)
    done = await asyncio.gather(*(wait_for(r, FileDone, 120) for r in rooms))
    for event, inbox in zip(done, inboxes, strict=True):
        assert event.path == inbox / "big.bin"
        assert hashlib.sha256(event.path.read_bytes()).hexdigest() == expected
        assert not list(inbox.glob(".*.part"))
    assert corrupted == [10 * 65536]
    repaired = [r.transfers for r in rooms]
    assert all(not t.incoming for t in repaired)


async def test_progress_is_reported(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    source = tmp_path / "small.txt"
    source.write_bytes(b"x" * 3_000_000)
    a, b = await signaling_mesh(2)
    sender = await peers("s", [a.url])
    receiver = await peers("r", [b.url], accept_files_to=tmp_path / "in")
    room = await sender.join(URL)
    other = await receiver.join(URL)
    await wait_for(room, Connected)
    await room.send_file(source)
    progress = await wait_for(other, FileProgress)
    assert 0 < progress.done <= progress.size == 3_000_000 and not progress.sending
    done = await wait_for(other, FileDone)
    assert done.path.read_bytes() == source.read_bytes()
