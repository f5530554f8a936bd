"""A file from Python to the browser survives a chunk corrupted in flight and a
connection that drops half-way: the browser asks again from its verified offset."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import peer.transfer

from .conftest import MeetFactory, download_sha256

ROOM = "https://example.org/repair"
CHUNK = 65536


async def test_corrupt_chunk_and_dropped_link_are_repaired(
    meet: MeetFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupted: list[int] = []
    real_frame = peer.transfer.chunk_frame

    def flaky_frame(offset: int, data: bytes) -> bytes:
        frame = real_frame(offset, data)
        if offset == 5 * CHUNK and not corrupted:  # one chunk, once, flipped in flight
            corrupted.append(offset)
            return frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return frame

    monkeypatch.setattr(peer.transfer, "chunk_frame", flaky_frame)
    m = await meet(ROOM)
    room, page, browser = m.room, m.page, m.browser

    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 * 1024 * 1024 + 5))
    offer = await room.send_file(source)
    await page.click(f'#messages li[data-file="{offer}"] button.accept')  # not an inline image
    # Half-way through, the Python side drops the connection under the transfer.
    await page.wait_for_function(
        f"(document.querySelector('#messages li[data-file=\"{offer}\"] progress')?.value ?? 0)"
        f" > {12 * 1024 * 1024}",
        timeout=60_000,
    )
    await room.links[browser].close()
    done = f'#messages li[data-file="{offer}"] a.download'
    link = await page.wait_for_selector(done, timeout=90_000)
    assert await download_sha256(page, link) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert corrupted == [5 * CHUNK]
    left = await page.evaluate("window.pagemesh.room.transfers.incoming.size")
    assert left == 0  # finished, nothing left half-done
