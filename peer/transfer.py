"""Moving files over data channels: the glue around peer/files.py.

The sender offers on the control channel (`file-offer`); a receiver that
accepts answers `file-accept` with the offset it already holds (0, or the
verified length of a partial download). The sender then opens a data
channel labelled `file:<id>` and streams chunk frames from that offset,
pausing while more than `HIGH_WATER` bytes are buffered (resuming on
`bufferedamountlow`). The receiver writes verified chunks to
`<name>.<id>.part`, and when the whole file's SHA-256 matches, moves it into
place. A bad chunk closes the channel and the receiver asks again from its
verified offset (docs/protocol.md, "Files").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel

from .files import (
    DEFAULT_CHUNK,
    FileDownload,
    FileOffer,
    FileRejected,
    chunk_frame,
    parse_offer,
)
from .store import PartialDownload, PeerStore

log = logging.getLogger(__name__)

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1 * 1024 * 1024
MAX_REPAIRS = 5


@dataclass(frozen=True, slots=True)
class FileOffered:
    sender: bytes
    offer: FileOffer


@dataclass(frozen=True, slots=True)
class FileProgress:
    id: str
    done: int
    size: int
    sending: bool


@dataclass(frozen=True, slots=True)
class FileDone:
    id: str
    path: Path | None
    """Where the file landed (None on the sending side)."""
    sender: bytes


@dataclass(frozen=True, slots=True)
class FileFailed:
    id: str
    reason: str


FileEvent = FileOffered | FileProgress | FileDone | FileFailed

SendControl = Callable[[bytes, dict[str, Any]], bool]
OpenChannel = Callable[[bytes, str], RTCDataChannel | None]
Emit = Callable[[FileEvent], None]


def file_sha256(path: Path) -> bytes:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def _read_blocks(path: Path, limit: int) -> Any:
    with path.open("rb") as handle:
        left = limit
        while left > 0 and (block := handle.read(min(1 << 20, left))):
            left -= len(block)
            yield block


@dataclass(slots=True)
class _Incoming:
    sender: bytes
    download: FileDownload
    part: Path
    target_dir: Path
    repairs: int = 0
    reported: int = 0


class Transfers:
    """The file transfers of one room."""

    def __init__(
        self,
        store: PeerStore,
        send_control: SendControl,
        open_channel: OpenChannel,
        emit: Emit,
        max_size: int,
    ) -> None:
        self.store = store
        self._send_control = send_control
        self._open_channel = open_channel
        self._emit = emit
        self.max_size = max_size
        self.outgoing: dict[str, tuple[FileOffer, Path]] = {}
        self.offers: dict[str, tuple[bytes, FileOffer]] = {}
        self.incoming: dict[str, _Incoming] = {}
        self.auto_accept: Path | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- sending -------------------------------------------------------------------

    async def offer(self, path: Path, members: list[bytes]) -> FileOffer:
        size = (await asyncio.to_thread(path.stat)).st_size
        if size > self.max_size:
            raise ValueError(f"{path.name} is {size} bytes; the limit is {self.max_size}")
        sha = await asyncio.to_thread(file_sha256, path)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        offer = FileOffer(os.urandom(16).hex(), path.name, size, mime, sha, DEFAULT_CHUNK)
        self.outgoing[offer.id] = (offer, path)
        for member in members:
            self._send_control(member, offer.to_json())
        return offer

    def member_connected(self, member: bytes) -> None:
        """A (re)opened link: offers still wanted go again, partial downloads resume."""
        for offer, _ in self.outgoing.values():
            self._send_control(member, offer.to_json())
        for file_id, incoming in self.incoming.items():
            if incoming.sender == member:
                self._accept(file_id, incoming)

    def _on_accept(self, member: bytes, frame: dict[str, Any]) -> None:
        entry = self.outgoing.get(str(frame.get("id")))
        offset = frame.get("offset")
        if entry is None or not isinstance(offset, int) or not 0 <= offset <= entry[0].size:
            return
        offer, path = entry
        channel = self._open_channel(member, f"file:{offer.id}")
        if channel is not None:
            self._spawn(self._stream(member, offer, path, offset, channel))

    async def _stream(
        self, member: bytes, offer: FileOffer, path: Path, offset: int, channel: RTCDataChannel
    ) -> None:
        if channel.readyState != "open":
            opened = asyncio.get_running_loop().create_future()
            channel.on("open", lambda: opened.done() or opened.set_result(None))
            await asyncio.wait_for(opened, 30)
        channel.bufferedAmountLowThreshold = LOW_WATER
        drained = asyncio.Event()
        channel.on("bufferedamountlow", drained.set)
        with path.open("rb") as handle:
            handle.seek(offset)
            position = offset
            while position < offer.size and channel.readyState == "open":
                data = handle.read(offer.chunk_size)
                if not data:
                    break
                channel.send(chunk_frame(position, data))
                position += len(data)
                if channel.bufferedAmount > HIGH_WATER:
                    drained.clear()
                    await drained.wait()
        self._emit(FileProgress(offer.id, position, offer.size, sending=True))

    # --- receiving ----------------------------------------------------------------------

    def _on_offer(self, member: bytes, frame: dict[str, Any]) -> None:
        try:
            offer = parse_offer(frame, self.max_size)
        except FileRejected as exc:
            self._emit(FileFailed(str(frame.get("id", ""))[:32], f"offer refused: {exc}"))
            return
        if offer.id in self.offers or offer.id in self.incoming:
            return
        self.offers[offer.id] = (member, offer)
        self._emit(FileOffered(member, offer))
        if self.auto_accept is not None:
            self.accept(offer.id, self.auto_accept)

    def accept(self, file_id: str, directory: Path) -> None:
        """Take an offered file into `directory`, resuming a partial download if there is one."""
        sender, offer = self.offers[file_id]
        directory.mkdir(parents=True, exist_ok=True)
        part = directory / f".{offer.name}.{offer.id}.part"
        saved = self.store.partial_download(offer.sha256)
        prefix: Any = ()
        if saved is not None and Path(saved.path) == part and part.exists():
            prefix = _read_blocks(part, saved.verified_bytes)
        else:
            part.write_bytes(b"")
        download = FileDownload(offer, prefix)
        with part.open("r+b") as handle:
            handle.truncate(download.verified)
        incoming = _Incoming(sender, download, part, directory)
        self.incoming[file_id] = incoming
        self._accept(file_id, incoming)

    def decline(self, file_id: str) -> None:
        """Say no to an offered file; the sender stops offering it to us."""
        sender, _ = self.offers[file_id]
        self._send_control(sender, {"t": "file-decline", "id": file_id})

    def _accept(self, file_id: str, incoming: _Incoming) -> None:
        offset = incoming.download.resume_offset
        self._send_control(incoming.sender, {"t": "file-accept", "id": file_id, "offset": offset})

    def on_channel(self, member: bytes, channel: RTCDataChannel) -> None:
        label = channel.label
        incoming = self.incoming.get(label.removeprefix("file:"))
        if not label.startswith("file:") or incoming is None or incoming.sender != member:
            channel.close()
            return
        file_id = label.removeprefix("file:")
        handle = incoming.part.open("r+b")
        handle.seek(incoming.download.verified)
        dead = False  # after a bad chunk, what is still in flight on this channel is moot

        def on_message(message: bytes | str) -> None:
            nonlocal dead
            if isinstance(message, str) or dead:
                return
            try:
                data = incoming.download.receive_chunk(message)
            except FileRejected as exc:
                dead = True
                handle.close()
                channel.close()
                self._repair(file_id, incoming, str(exc))
                return
            handle.write(data)
            self._progress(file_id, incoming)
            if incoming.download.complete:
                handle.close()
                channel.close()
                self._finish(file_id, incoming)

        channel.on("message", on_message)
        channel.on("close", handle.close)

    def _progress(self, file_id: str, incoming: _Incoming) -> None:
        done, size = incoming.download.verified, incoming.download.offer.size
        if done - incoming.reported >= max(size // 100, 1 << 20) or done == size:
            incoming.reported = done
            self._emit(FileProgress(file_id, done, size, sending=False))
            self.store.save_download(
                PartialDownload(
                    incoming.download.offer.sha256,
                    incoming.download.offer.name,
                    size,
                    done,
                    str(incoming.part),
                )
            )

    def _repair(self, file_id: str, incoming: _Incoming, reason: str) -> None:
        incoming.repairs += 1
        log.info(
            "file %s: %s; asking again from %d", file_id[:8], reason, incoming.download.verified
        )
        with incoming.part.open("r+b") as handle:
            handle.truncate(incoming.download.verified)
        if incoming.repairs > MAX_REPAIRS:
            del self.incoming[file_id]
            self._emit(FileFailed(file_id, f"gave up after {MAX_REPAIRS} repairs: {reason}"))
            return
        self._accept(file_id, incoming)

    def _finish(self, file_id: str, incoming: _Incoming) -> None:
        del self.incoming[file_id]
        name = incoming.download.offer.name
        target = incoming.target_dir / name
        stem, suffix, n = target.stem, target.suffix, 1
        while target.exists():
            target = incoming.target_dir / f"{stem} ({n}){suffix}"
            n += 1
        os.replace(incoming.part, target)
        self.store.finish_download(incoming.download.offer.sha256)
        self._send_control(incoming.sender, {"t": "file-done", "id": file_id})
        self._emit(FileDone(file_id, target, incoming.sender))

    # --- the control frames ----------------------------------------------------------------

    def on_control(self, member: bytes, frame: dict[str, Any]) -> bool:
        """Handle a file frame from the control channel; False if it is not one."""
        kind = frame.get("t")
        if kind == "file-offer":
            self._on_offer(member, frame)
        elif kind == "file-accept":
            self._on_accept(member, frame)
        elif kind == "file-decline":
            file_id = str(frame.get("id"))
            if file_id in self.outgoing:
                self._emit(FileFailed(file_id, f"declined by {member.hex()[:12]}"))
        elif kind == "file-done":
            file_id = str(frame.get("id"))
            if file_id in self.outgoing:
                self._emit(FileDone(file_id, None, member))
        else:
            return False
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
