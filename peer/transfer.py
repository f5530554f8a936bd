"""Moving files over data channels: the glue around peer/files.py.

The sender offers on the control channel (`file-offer`); a receiver that
accepts answers `file-accept` with the offset it already holds (0, or the
verified length of a partial download). The sender then opens a data
channel labelled `file:<id>` and streams chunk frames from that offset,
pausing while more than `HIGH_WATER` bytes are buffered (resuming on
`bufferedamountlow`). The receiver writes verified chunks to `.<id>.part`,
created when the first verified chunk arrives, and when the whole file's
SHA-256 matches, moves it into place under a name of its own choosing
(`local_name`). A bad chunk closes the channel and the receiver asks again
from its verified offset (docs/protocol.md, "Files").

A file is new to the members present when it is offered; one who comes later
hears of it as shared `earlier`, and an accept policy takes that only if its
rule says so (`accept_rule`). What this side offers is kept in `SharedFiles`:
its newest files, each for an hour, to the whole room or to some members.

What a member may make this side keep is bounded by `OfferLimits` (kept in
`OfferBook`); an accept policy (`auto_accept`) runs a few downloads at once
and takes the next offer when one ends. What a member's accepts may make this
side upload is bounded by `UploadLimits` (decided by `UploadBook`): one stream
per member and file, a few at once (the rest wait, and hear `file-wait`), a
rate, and the bytes buffered per member and per room. Nothing a member sends
escapes from here into aiortc: a bad offer or chunk is counted or fails its
transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel

from .files import (
    DEFAULT_CHUNK,
    AcceptRule,
    FileDownload,
    FileOffer,
    FileRejected,
    OfferBook,
    OfferLimits,
    SharedFiles,
    StartUpload,
    StopUpload,
    UploadBook,
    UploadLimits,
    WaitNotice,
    chunk_frame,
    local_name,
    parse_offer_frame,
    part_name,
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
    earlier: bool = False
    """Shared before we came: fetch it if you like; no accept policy takes it unasked."""


@dataclass(frozen=True, slots=True)
class FileProgress:
    id: str
    done: int
    size: int
    sending: bool
    member: bytes | None = None
    """On the sending side, the member the bytes go to (one as its stream opens: it
    accepted the file; one as the last chunk leaves)."""


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
    member: bytes | None = None
    """On the sending side, the member who declined the file."""


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


class _PartFile:
    """The partial file of one transfer, opened at its first verified chunk (nothing is
    written for an offer whose sender never sends) and closed whenever its channel is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None
        self._lost = False

    def write_at(self, offset: int, data: memoryview) -> None:
        if self._lost:
            raise OSError(f"{self.path.name}: an earlier write did not reach the disk")
        if self._handle is None:
            if offset == 0:
                self._handle = self.path.open("wb")
            else:  # resuming: the verified prefix is on disk (FileNotFoundError otherwise)
                self._handle = self.path.open("r+b")
                self._handle.truncate(offset)
                self._handle.seek(offset)
        self._handle.write(data)

    def close(self) -> None:
        """Flush and close; OSError if what was written did not reach the disk (and every
        later write fails too: the file on disk no longer matches the verified prefix)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                self._lost = True
                raise


@dataclass(slots=True, eq=False)
class _Upload:
    """One stream of ours, from `StartUpload` until it ends or `StopUpload`."""

    serial: int
    member: bytes
    channel: RTCDataChannel
    task: asyncio.Task[None] | None = None
    opened: asyncio.Future[int | None] | None = None
    """The offset to stream from once the channel opens; None if it closed first."""
    seen: int = 0
    """Its channel's `bufferedAmount` when the timer last looked."""
    sent_all: bool = False
    """Every chunk sent: the receiver closes the channel once it has verified the file."""


@dataclass(slots=True)
class _Incoming:
    sender: bytes
    download: FileDownload
    part: Path
    target_dir: Path
    active_at: float
    """When it was accepted or last took a verified chunk (a stall is counted from it)."""
    part_file: _PartFile
    channel: RTCDataChannel | None = None
    """The one channel whose chunks count (a newer one replaces it)."""
    repairs: int = 0
    reported: int = 0


class Transfers:
    """The file transfers of one room.

    `clock` gives the time for the offer and upload bounds (monotonic seconds;
    tests pass their own). `auto_accept` is the accept policy: the offers
    `accept_rule` takes go into that directory unasked, at most
    `limits.downloads_per_member` and `downloads_per_room` at once (by default
    every file shared after we came, none shared before). `upload_limits`
    bounds what members' accepts make this side upload.
    """

    def __init__(
        self,
        store: PeerStore,
        send_control: SendControl,
        open_channel: OpenChannel,
        emit: Emit,
        max_size: int,
        *,
        limits: OfferLimits | None = None,
        upload_limits: UploadLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._send_control = send_control
        self._open_channel = open_channel
        self._emit = emit
        self.max_size = max_size
        self.limits = limits or OfferLimits()
        self._clock = clock
        self.outgoing: dict[str, tuple[FileOffer, Path]] = {}
        """What we can serve, and from where (the files `shared` holds)."""
        self._answered: dict[str, set[bytes]] = {}
        """Per file we offer, the members whose file-done or file-decline was told."""
        self.shared = SharedFiles(self.limits)
        """What we offer, for how long, and to whom each file is new."""
        self.offers = OfferBook(self.limits)
        self.counters = self.offers.counters
        """Drops and failures by name (shared with the offer and upload books)."""
        self.uploads = UploadBook(upload_limits, self.counters)
        self._uploads: dict[int, _Upload] = {}
        self._buffering: dict[RTCDataChannel, bytes] = {}
        """Our upload channels that may still hold data (closing ones too), by member."""
        self._buffer_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self.incoming: dict[str, _Incoming] = {}
        self.auto_accept: Path | None = None
        self.accept_rule = AcceptRule()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._chunk_errors = 0

    # --- sending -------------------------------------------------------------------

    async def offer(
        self,
        path: Path,
        members: list[bytes],
        present: Iterable[bytes] = (),
        to: Collection[bytes] | None = None,
    ) -> FileOffer:
        """Offer a file to the `members` linked now (and to whoever connects later). It
        is new to them and to the other `present` members; `to` offers it to those
        members only."""
        size = (await asyncio.to_thread(path.stat)).st_size
        if size > self.max_size:
            raise ValueError(f"{path.name} is {size} bytes; the limit is {self.max_size}")
        sha = await asyncio.to_thread(file_sha256, path)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        offer = FileOffer(os.urandom(16).hex(), path.name, size, mime, sha, DEFAULT_CHUNK)
        self.outgoing[offer.id] = (offer, path)
        now = self._clock()
        for gone in self.shared.add(offer, now, [*members, *present], to):
            self.outgoing.pop(gone, None)  # receivers keep no more of ours
            self._answered.pop(gone, None)
        for member in members:
            if self.shared.serves(offer.id, member, now):
                self._send_control(member, offer.to_json())
        self._arm()
        return offer

    def offer_to(self, file_id: str, members: Iterable[bytes], linked: Iterable[bytes]) -> None:
        """Offer a file we offer already to more members, as new to them (now to the
        `linked` ones, to the others when they connect)."""
        added = set(self.shared.address(file_id, members))
        offer = self.shared.get(file_id, self._clock())
        if offer is None:
            return
        for member in linked:
            if member in added:
                self._send_control(member, offer.to_json())

    def member_connected(self, member: bytes) -> None:
        """A (re)opened link: offers still wanted go again, partial downloads resume.

        The re-offers are what a member that joined late gets, as files shared
        `earlier` (unless it was present when we offered them); they are bounded by
        what we offer (`shared`), and a receiver ignores the ones it already knows.
        """
        for offer, earlier in self.shared.for_member(member, self._clock()):
            self._send_control(member, offer.to_json(earlier))
        for file_id, incoming in self.incoming.items():
            if incoming.sender == member:
                self._accept(file_id, incoming)

    def member_left(self, member: bytes) -> None:
        """A member left the room: its offers are forgotten (its downloads stall out),
        its uploads stop and its waiting accepts go."""
        self.offers.forget_member(member)
        self.uploads.forget_member(member, self._clock())
        self._run_uploads()

    def _on_accept(self, member: bytes, frame: dict[str, Any]) -> None:
        file_id = str(frame.get("id"))
        entry = self.outgoing.get(file_id)
        offset = frame.get("offset")
        if (
            entry is None
            or (file_id in self.shared and not self.shared.serves(file_id, member, self._clock()))
            or not isinstance(offset, int)
            or isinstance(offset, bool)
            or not 0 <= offset <= entry[0].size
        ):
            self._count("drop.accept_unknown")
            return
        self.uploads.accept(member, entry[0].id, offset, self._clock())
        self._run_uploads()
        self._arm()

    def _run_uploads(self) -> None:
        """Carry out what the upload book decided."""
        while not self._closed and (command := self.uploads.next_command()) is not None:
            if isinstance(command, StartUpload):
                self._start_upload(command)
            elif isinstance(command, StopUpload):
                upload = self._uploads.pop(command.serial, None)
                if upload is not None:
                    self._end_stream(upload)
            elif isinstance(command, WaitNotice):
                self._send_control(command.member, {"t": "file-wait", "id": command.file_id})

    def _start_upload(self, command: StartUpload) -> None:
        entry = self.outgoing.get(command.file_id)
        channel = None
        if entry is not None:  # else forgotten since (we keep our newest offers only)
            channel = self._open_channel(command.member, f"file:{command.file_id}")
        if entry is None or channel is None:
            self.uploads.ended(command.serial, self._clock())
            return
        upload = _Upload(command.serial, command.member, channel)
        upload.opened = asyncio.get_running_loop().create_future()
        self._uploads[upload.serial] = upload
        self._buffering[channel] = command.member
        channel.bufferedAmountLowThreshold = LOW_WATER

        def on_open() -> None:
            # The offset is taken as the channel opens (a later accept replaces the
            # stream), here rather than in the task, so that the order is the events'.
            if upload.opened is not None and not upload.opened.done():
                upload.opened.set_result(self.uploads.begin(upload.serial, self._clock()))

        def on_low() -> None:
            if self._uploads.get(upload.serial) is upload:
                self.uploads.progress(upload.serial, self._clock())
            self._buffer_freed()

        def on_close() -> None:
            self._buffering.pop(channel, None)
            if upload.opened is not None and not upload.opened.done():
                upload.opened.set_result(None)
            if self._uploads.get(upload.serial) is upload:  # the receiver closed it
                del self._uploads[upload.serial]
                self._end_stream(upload)
                self.uploads.ended(upload.serial, self._clock())
                self._run_uploads()
            self._buffer_freed()

        channel.on("open", on_open)
        channel.on("bufferedamountlow", on_low)
        channel.on("close", on_close)
        if channel.readyState == "open":
            on_open()
        upload.task = self._spawn(self._stream(upload, *entry))

    def _end_stream(self, upload: _Upload) -> None:
        """Close the channel (what it buffered still goes out, then it resets) and end
        the stream's task; its bytes count against the bounds until they are sent."""
        if upload.task is not None and upload.task is not asyncio.current_task():
            upload.task.cancel()
        upload.channel.close()
        self._buffer_freed()

    async def _stream(self, upload: _Upload, offer: FileOffer, path: Path) -> None:
        """Send the chunks; then the upload keeps its slot until the receiver closes the
        channel (it does once it has verified the file) or it stalls. Closing it here,
        right behind the last chunk, can lose that chunk: Chromium drops what it has not
        yet delivered when the stream resets."""
        try:
            offset = await upload.opened if upload.opened is not None else None
            if offset is not None:
                self._emit(FileProgress(offer.id, offset, offer.size, True, upload.member))
                upload.sent_all = await self._send_from(upload, offer, path, offset)
        except OSError as exc:  # the file went away or cannot be read
            log.info("file %s: cannot send (%s)", offer.id[:8], exc)
        finally:
            if not upload.sent_all and self._uploads.get(upload.serial) is upload:
                del self._uploads[upload.serial]
                self._end_stream(upload)
                self.uploads.ended(upload.serial, self._clock())
                self._run_uploads()

    async def _send_from(self, upload: _Upload, offer: FileOffer, path: Path, offset: int) -> bool:
        """Stream from `offset`; True when every chunk was sent."""
        channel = upload.channel
        with path.open("rb") as handle:
            handle.seek(offset)
            position = offset
            while position < offer.size and channel.readyState == "open":
                await self._room_to_send(upload)
                data = handle.read(offer.chunk_size) if channel.readyState == "open" else b""
                if not data:
                    break
                channel.send(chunk_frame(position, data))
                position += len(data)
                self.uploads.progress(upload.serial, self._clock())
        if position < offer.size:
            return False
        self._emit(FileProgress(offer.id, position, offer.size, True, upload.member))
        return True

    async def _room_to_send(self, upload: _Upload) -> None:
        """Wait while the channel, its member's uploads or the room's buffer too much.

        Checked right before each send, so a bound is passed by one chunk at most.
        A wait ends when any of our upload channels drains below `LOW_WATER` or
        closes; a stream waiting for others counts as moving once its own channel
        has drained (it is not the one stalled)."""
        channel = upload.channel
        while channel.readyState == "open" and self._over_bounds(upload):
            waiter = asyncio.get_running_loop().create_future()
            self._buffer_waiters.append(waiter)
            await waiter
            if channel.bufferedAmount <= LOW_WATER:
                self.uploads.progress(upload.serial, self._clock())

    def _over_bounds(self, upload: _Upload) -> bool:
        if upload.channel.bufferedAmount > HIGH_WATER:
            return True
        limits = self.uploads.limits
        room = member = 0
        for channel, owner in list(self._buffering.items()):
            if channel.readyState == "closed" or (
                channel.readyState == "closing" and not channel.bufferedAmount
            ):
                del self._buffering[channel]
                continue
            room += channel.bufferedAmount
            if owner == upload.member:
                member += channel.bufferedAmount
        return member > limits.buffered_per_member or room > limits.buffered_per_room

    def _buffer_freed(self) -> None:
        waiters, self._buffer_waiters = self._buffer_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- receiving ----------------------------------------------------------------------

    def _on_offer(self, member: bytes, frame: dict[str, Any]) -> None:
        file_id = frame.get("id")
        if isinstance(file_id, str) and (
            self.offers.known(file_id) or file_id in self.incoming or file_id in self.outgoing
        ):
            return  # a re-offer (every reconnection brings one), or our own
        now = self._clock()
        if not self.offers.admit(member, now):
            return
        try:
            offer, earlier = parse_offer_frame(frame, self.max_size)
        except FileRejected as exc:
            self._count("drop.offer_malformed")
            self._emit(FileFailed(str(file_id or "")[:32], f"offer refused: {exc}"))
            return
        self._expire(now)
        if not self.offers.add(member, offer, now, earlier):
            return
        self._emit(FileOffered(member, offer, earlier))
        self._fill_slots()
        self._arm()

    def accept(self, file_id: str, directory: Path) -> None:
        """Take an offered file into `directory`, resuming a partial download if there is one.

        KeyError if no such offer is kept (never made, declined, or forgotten by age).
        No file is created until the first verified chunk arrives.
        """
        if file_id in self.incoming:
            return
        entry = self.offers.get(file_id)
        if entry is None:
            raise KeyError(file_id)
        directory.mkdir(parents=True, exist_ok=True)
        self.offers.take(file_id)
        sender, offer = entry
        part = directory / part_name(offer.id)
        download = self._resume(offer, part)
        incoming = _Incoming(sender, download, part, directory, self._clock(), _PartFile(part))
        self.incoming[file_id] = incoming
        if incoming.download.complete:  # empty, or finished before a restart
            self._finish(file_id, incoming)
        else:
            self._accept(file_id, incoming)
        self._arm()

    def _resume(self, offer: FileOffer, part: Path) -> FileDownload:
        """The download of `offer`, from the verified prefix of its partial file if any."""
        saved = self.store.partial_download(offer.sha256)
        if saved is None or Path(saved.path) != part:
            return FileDownload(offer)
        try:
            return FileDownload(offer, _read_blocks(part, saved.verified_bytes))
        except (OSError, FileRejected) as exc:
            log.info("file %s: partial file not usable (%s); from the start", offer.id[:8], exc)
            self.store.finish_download(offer.sha256)
            return FileDownload(offer)

    def decline(self, file_id: str) -> None:
        """Say no to an offered file; the sender stops offering it to us (KeyError if unknown)."""
        entry = self.offers.take(file_id)
        if entry is None:
            raise KeyError(file_id)
        self.offers.settle(file_id)
        self._send_control(entry[0], {"t": "file-decline", "id": file_id})
        self._fill_slots()

    def set_accept_rule(self, rule: AcceptRule) -> None:
        """Which offers the accept policy takes from now on (the kept ones included)."""
        self.accept_rule = rule
        self._fill_slots()

    def _fill_slots(self) -> None:
        """The accept policy: take the oldest waiting offers while slots are free."""
        if self.auto_accept is None:
            return
        busy = Counter(incoming.sender for incoming in self.incoming.values())
        while (file_id := self.offers.next_acceptable(busy, self.accept_rule.takes)) is not None:
            sender = self.offers.get(file_id)
            try:
                self.accept(file_id, self.auto_accept)
            except OSError as exc:  # the directory cannot be made: the offers wait (and age)
                self._emit(FileFailed(file_id, f"cannot receive into {self.auto_accept}: {exc}"))
                return
            busy[sender[0] if sender else b""] += 1

    def _accept(self, file_id: str, incoming: _Incoming) -> None:
        offset = incoming.download.resume_offset
        self._send_control(incoming.sender, {"t": "file-accept", "id": file_id, "offset": offset})

    def on_channel(self, member: bytes, channel: RTCDataChannel) -> None:
        label = channel.label
        file_id = label.removeprefix("file:")
        incoming = self.incoming.get(file_id)
        if not label.startswith("file:") or incoming is None or incoming.sender != member:
            channel.close()
            return
        self._drop_channel(incoming)  # what an older channel still carries is moot
        incoming.channel = channel

        def on_message(message: bytes | str) -> None:
            if incoming.channel is not channel or isinstance(message, str):
                return
            try:
                self._chunk(file_id, incoming, message)
            except FileRejected as exc:
                self._drop_channel(incoming)
                self._repair(file_id, incoming, str(exc))
            except OSError as exc:
                self._fail(file_id, incoming, f"cannot write the file: {exc}", "failed.download_io")
            except Exception:  # a bug; never out of aiortc's callback
                self._chunk_errors += 1
                if self._chunk_errors == 1:
                    log.exception("file %s: chunk handler failed", file_id[:8])
                self._fail(file_id, incoming, "internal error", "error.chunk_handler")

        def on_close() -> None:
            if incoming.channel is channel:
                self._drop_channel(incoming)

        channel.on("message", on_message)
        channel.on("close", on_close)

    @staticmethod
    def _drop_channel(incoming: _Incoming) -> None:
        channel, incoming.channel = incoming.channel, None
        with contextlib.suppress(OSError):  # remembered: the next write fails the transfer
            incoming.part_file.close()
        if channel is not None:
            channel.close()

    def _chunk(self, file_id: str, incoming: _Incoming, frame: bytes) -> None:
        """Verify and write one chunk; place the file when it is complete."""
        offset = incoming.download.verified
        data = incoming.download.receive_chunk(frame)
        incoming.part_file.write_at(offset, data)
        incoming.active_at = self._clock()
        self._progress(file_id, incoming)
        if incoming.download.complete:
            incoming.part_file.close()  # OSError if the file did not reach the disk
            self._drop_channel(incoming)
            self._finish(file_id, incoming)

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
        if incoming.repairs > MAX_REPAIRS:
            self._fail(file_id, incoming, f"gave up after {MAX_REPAIRS} repairs: {reason}")
            return
        self._accept(file_id, incoming)

    def _fail(self, file_id: str, incoming: _Incoming, reason: str, counter: str = "") -> None:
        """End a download: its channel, partial file and record go, its slot frees."""
        del self.incoming[file_id]
        self._drop_channel(incoming)
        if counter:
            self._count(counter)
        with contextlib.suppress(OSError):
            incoming.part.unlink(missing_ok=True)
        self.store.finish_download(incoming.download.offer.sha256)
        self._emit(FileFailed(file_id, reason))
        self._fill_slots()

    def _finish(self, file_id: str, incoming: _Incoming) -> None:
        try:
            target = self._place(incoming)
        except OSError as exc:
            self._fail(file_id, incoming, f"cannot place the file: {exc}", "failed.download_io")
            return
        del self.incoming[file_id]
        self.offers.settle(file_id)
        self.store.finish_download(incoming.download.offer.sha256)
        self._send_control(incoming.sender, {"t": "file-done", "id": file_id})
        self._emit(FileDone(file_id, target, incoming.sender))
        self._fill_slots()

    @staticmethod
    def _place(incoming: _Incoming) -> Path:
        """Move the verified file into its directory under a local name not yet taken."""
        target = incoming.target_dir / local_name(incoming.download.offer.name)
        stem, suffix, n = target.stem, target.suffix, 1
        while target.exists():
            target = incoming.target_dir / f"{stem} ({n}){suffix}"
            n += 1
        size = incoming.download.offer.size
        if size == 0:
            target.touch(exist_ok=False)
        elif incoming.part.stat().st_size != size:  # the digest was of the stream, not the disk
            raise OSError(f"{incoming.part.name} holds {incoming.part.stat().st_size} bytes")
        else:
            os.replace(incoming.part, target)
        return target

    # --- time: offers age, downloads and uploads stall, waiting receivers hear of it ----------

    def handle_timer(self) -> None:
        """Forget offers past their age, fail downloads and stop uploads that stalled,
        remind receivers waiting for an upload slot (the timer calls this; tests with
        their own clock call it by hand)."""
        self._timer = self._timer_at = None
        now = self._clock()
        self._expire(now)
        stall = self.limits.stall
        for file_id, incoming in list(self.incoming.items()):
            if self.incoming.get(file_id) is incoming and now - incoming.active_at >= stall:
                reason = f"stalled: no data for {stall:g} s"
                self._fail(file_id, incoming, reason, "failed.download_stalled")
        self._fill_slots()
        self._look_at_uploads(now)
        self.uploads.handle_timer(now)
        self._run_uploads()
        self._buffer_freed()  # streams waiting on the bounds look again
        self._arm()

    def _look_at_uploads(self, now: float) -> None:
        """Before the stall check: a channel that drained since we last looked took data,
        even too slowly to fall to `LOW_WATER` (no event says so); one with nothing
        buffered and more to send waits for the bounds, not for its receiver."""
        for upload in self._uploads.values():
            buffered, channel = upload.channel.bufferedAmount, upload.channel
            if buffered < upload.seen or (
                not buffered and channel.readyState == "open" and not upload.sent_all
            ):
                self.uploads.progress(upload.serial, now)
            upload.seen = buffered

    def _expire(self, now: float) -> None:
        deadline = self.offers.next_expiry()
        if deadline is not None and deadline <= now:
            self.offers.expire(now)
        deadline = self.shared.next_expiry()
        if deadline is not None and deadline <= now:
            for file_id in self.shared.expire(now):
                self.outgoing.pop(file_id, None)
                self._answered.pop(file_id, None)

    def _arm(self) -> None:
        """Keep one timer, at the earliest offer expiry, download or upload stall, or
        `file-wait` notice."""
        deadlines = [i.active_at + self.limits.stall for i in self.incoming.values()]
        timers = (self.offers.next_expiry(), self.shared.next_expiry(), self.uploads.get_timer())
        for deadline in timers:
            if deadline is not None:
                deadlines.append(deadline)
        if not deadlines:
            return
        deadline = min(deadlines)
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand (tests): handle_timer is called directly
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self._clock()), self.handle_timer)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # --- the control frames ----------------------------------------------------------------

    def on_control(self, member: bytes, frame: dict[str, Any]) -> bool:
        """Handle a file frame from the control channel; False if it is not one."""
        kind = frame.get("t")
        if kind == "file-offer":
            self._on_offer(member, frame)
        elif kind == "file-accept":
            self._on_accept(member, frame)
        elif kind == "file-wait":  # our accept waits for a slot at the sender: not stalled
            incoming = self.incoming.get(str(frame.get("id")))
            if incoming is not None and incoming.sender == member:
                incoming.active_at = self._clock()
        elif kind == "file-decline":
            file_id = str(frame.get("id"))
            if self._first_answer(file_id, member):
                self._emit(FileFailed(file_id, f"declined by {member.hex()[:12]}", member))
        elif kind == "file-done":
            file_id = str(frame.get("id"))
            if self._first_answer(file_id, member):
                self._emit(FileDone(file_id, None, member))
        else:
            return False
        return True

    def _first_answer(self, file_id: str, member: bytes) -> bool:
        """Whether `member`'s file-done or file-decline of a file we offer is its first:
        told once (a member repeating it would have the application told, and a line
        shown, for each), at most `limits.members` members per file."""
        if file_id not in self.outgoing:
            return False
        answered = self._answered.setdefault(file_id, set())
        if member in answered or len(answered) >= self.limits.members:
            return False
        answered.add(member)
        return True

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        self._closed = True  # ending streams starts no others
        for upload in list(self._uploads.values()):
            self._end_stream(upload)
        self._uploads.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
