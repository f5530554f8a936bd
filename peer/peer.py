"""The peer API: `async with Peer(...) as p: room = await p.join(url)`.

A `Peer` is one identity (its data directory) talking to the mesh:

- a smart signaling client: a list of node URLs; it connects to one, and
  when the connection drops (or the node says `moving`) it tries the next
  with exponential backoff and full jitter, then rejoins every room. Data
  channels stay up meanwhile: they do not need the node once connected;
- per room, one `PeerLink` (aiortc) per member of the layer; the newcomer
  offers, glare goes to the lower key, and a link that fails is offered
  again by the member with the lower key, so reconnection needs no
  coordination;
- a link that does not open within `PeerConfig.connect_timeout` (or whose ICE
  fails first) is given up and offered again; the room is told once, with a
  `MemberUnreachable` (a `PeerProblem` naming the member and why: no direct
  path, and the relay unreachable or not enough), until that member connects;
- per room, a `ReliableRoom` core (peer/messaging.py) fed by the links, its
  clocks and deliveries saved in the SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel

from signaling.protocol import Scope, canonical_url, room_key, verify_signature

from .messaging import Delivered, Discontinuity, Envelope, ReliableRoom, RoomConfig
from .sdp import DescriptionRejected, ReplayGuard, parse_description, verify_description
from .signaling import (
    BadNodeFrame,
    Closed,
    ErrorFrame,
    Joined,
    Moving,
    PeerJoined,
    PeerLeft,
    SignalFrom,
    SignalingClient,
    SignalingError,
)
from .store import PeerStore
from .transfer import FileDone, FileEvent, FileFailed, FileOffered, FileProgress, Transfers
from .webrtc import PeerLink, ice_configuration

log = logging.getLogger(__name__)

MAX_NAME = 64


# --- what the application sees -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    author: bytes
    text: str
    lamport: int
    sent_at: float
    seq: int
    mine: bool


@dataclass(frozen=True, slots=True)
class MemberJoined:
    key: bytes


@dataclass(frozen=True, slots=True)
class MemberLeft:
    key: bytes


@dataclass(frozen=True, slots=True)
class Connected:
    key: bytes
    path: str | None
    """'direct' or 'relayed'."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of `author` that this peer will never see (older than the resume window)."""

    author: bytes
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Rejoined:
    """The peer moved to another signaling node and sits in the room again through it."""

    node: str
    layer: int


@dataclass(frozen=True, slots=True)
class PeerProblem:
    """Something the application should show: a node unreachable, a refused offer..."""

    message: str


@dataclass(frozen=True, slots=True)
class MemberUnreachable(PeerProblem):
    """No link to `key` could be made: neither a direct path nor one through the relay."""

    key: bytes


RoomEventT = (
    Message | MemberJoined | MemberLeft | Connected | Gap | Rejoined | PeerProblem | FileEvent
)

__all__ = [
    "Connected",
    "FileDone",
    "FileFailed",
    "FileOffered",
    "FileProgress",
    "Gap",
    "MemberJoined",
    "MemberLeft",
    "MemberUnreachable",
    "Message",
    "Peer",
    "PeerConfig",
    "PeerProblem",
    "Rejoined",
    "Room",
]


@dataclass(frozen=True, slots=True)
class PeerConfig:
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    relink_base: float = 0.5
    relink_cap: float = 10.0
    offer_grace: float = 1.0
    """How long a member waits for a newcomer's offer before the keys decide who offers."""
    connect_timeout: float = 30.0
    """A link not open this long after it was made is given up (aioice's own checks
    retransmit for about a minute before ICE fails)."""
    relay_only: bool = False
    room: RoomConfig = field(default_factory=RoomConfig)
    max_events: int = 10_000
    max_file_bytes: int = 1 << 30


class Room:
    """A joined room: send messages, read events."""

    def __init__(self, peer: Peer, key: bytes, layer: int) -> None:
        self.peer = peer
        self.key = key
        self.layer = layer
        seq, lamport = peer.store.room_clock(key)
        self.core = ReliableRoom(
            key,
            peer.public_key,
            peer.sign,
            verify_signature,
            peer.config.room,
            seq=seq,
            lamport=lamport,
            delivered=peer.store.delivered(key),
            history=peer.store.history(key, peer.config.room.history_count),
            now=time.time(),
        )
        if self.core.lamport != lamport or self.core.refused_on_restore:
            # a clock pushed ahead before such envelopes were refused, repaired on restore
            peer.store.repair_room_clock(key, self.core.lamport, self.core.refused_on_restore)
        self.members: set[bytes] = set()
        self.names: dict[bytes, str] = {}
        """Display names members gave themselves (self-declared, bound to their key)."""
        self.links: dict[bytes, PeerLink] = {}
        self.ice_servers: list[dict[str, Any]] = []
        self._events: asyncio.Queue[RoomEventT] = asyncio.Queue(peer.config.max_events)
        self._timer: asyncio.TimerHandle | None = None
        self._relinks: dict[bytes, int] = {}
        self._unreachable: set[bytes] = set()
        """Members the application was told are unreachable (once, until they connect)."""
        self.dropped_events = 0
        self.transfers = Transfers(
            peer.store,
            self._send_control,
            self._open_file_channel,
            self._emit,
            peer.config.max_file_bytes,
        )
        self.transfers.auto_accept = peer.accept_files_to

    # --- the application's side ---------------------------------------------------

    async def send(self, text: str) -> Envelope:
        env = self.core.send(text, time.time())
        self._service()
        return env

    async def send_file(self, path: Path) -> str:
        """Offer a file to every member; returns its id (events follow its progress)."""
        members = [k for k, link in self.links.items() if link.open]
        offer = await self.transfers.offer(Path(path), members)
        return offer.id

    def accept_file(self, file_id: str, directory: Path) -> None:
        self.transfers.accept(file_id, Path(directory))

    def decline_file(self, file_id: str) -> None:
        self.transfers.decline(file_id)

    def _send_control(self, member: bytes, frame: dict[str, Any]) -> bool:
        link = self.links.get(member)
        return link is not None and link.send(frame)

    def _open_file_channel(self, member: bytes, label: str) -> RTCDataChannel | None:
        link = self.links.get(member)
        if link is None or not link.open:
            return None
        return link.pc.createDataChannel(label)

    async def events(self) -> AsyncIterator[RoomEventT]:
        while True:
            yield await self._events.get()

    async def next_event(self, within: float = 10.0) -> RoomEventT:
        return await asyncio.wait_for(self._events.get(), within)

    def paths(self) -> dict[bytes, str | None]:
        return {k: link.path() for k, link in self.links.items() if link.open}

    def transcript(self) -> list[Envelope]:
        return self.core.transcript()

    # --- links ---------------------------------------------------------------------------

    def _new_link(self, member: bytes) -> PeerLink:
        old = self.links.pop(member, None)
        if old is not None:
            self.core.disconnected(member)
            self.peer._spawn(old.close())
        link = PeerLink(
            self.key,
            self.peer.public_key,
            member,
            self.peer.sign,
            ice_configuration(self.ice_servers, self.peer.config.relay_only),
            self._frame,
            self._link_state,
            self._file_channel,
        )
        self.links[member] = link
        self.peer._spawn(self._connect_deadline(link))
        return link

    async def _connect_deadline(self, link: PeerLink) -> None:
        await asyncio.sleep(self.peer.config.connect_timeout)
        if self.links.get(link.member) is link and not link.ever_open and not link.failed:
            self._report_unreachable(link)
            await link.close()  # the closed state relinks, as a failure does

    def _report_unreachable(self, link: PeerLink) -> None:
        if link.member not in self._unreachable:
            self._unreachable.add(link.member)
            reason = f"cannot connect to {link.member.hex()[:12]}: {link.failure_reason()}"
            self._emit(MemberUnreachable(reason, link.member))

    async def offer_to(self, member: bytes) -> None:
        link = self._new_link(member)
        desc = await link.offer(time.time())
        await self.peer._signal(member, {"t": "sdp", "desc": desc.to_json()}, self.key)

    def _frame(self, member: bytes, frame: Any) -> None:
        if isinstance(frame, dict) and frame.get("t") == "profile":
            name = frame.get("name")
            if isinstance(name, str) and 0 < len(name) <= MAX_NAME:
                self.names[member] = name
            return
        if isinstance(frame, dict) and self.transfers.on_control(member, frame):
            return
        self.core.receive(member, frame, time.time())
        self._service()

    def _link_state(self, link: PeerLink) -> None:
        if self.links.get(link.member) is not link:
            return
        if link.open:
            self._relinks.pop(link.member, None)
            self._unreachable.discard(link.member)
            if self.peer.store.name:
                link.send({"t": "profile", "name": self.peer.store.name[:MAX_NAME]})
            self.core.connected(link.member, time.time())
            self._emit(Connected(link.member, link.path()))
            self.transfers.member_connected(link.member)
        else:
            self.core.disconnected(link.member)
            if link.pc.connectionState == "failed" and not link.ever_open:
                self._report_unreachable(link)
            if link.failed and link.member in self.members:
                self.peer._spawn(self._relink(link.member, link))
        self._service()

    async def _relink(self, member: bytes, failed: PeerLink | None, wait: float = 0.0) -> None:
        """Re-establish a failed (or never made) link: the lower key offers; the higher asks it.

        The other side may not have noticed the failure yet (a closed DTLS
        session is not always reported), so the higher key says so in a
        `relink` signal rather than waiting for ICE consent to expire there.
        """
        attempt = self._relinks.get(member, 0)
        self._relinks[member] = attempt + 1
        cap = min(self.peer.config.relink_cap, self.peer.config.relink_base * 2**attempt)
        await asyncio.sleep(wait + random.uniform(0, cap))
        if self.links.get(member) is not failed or member not in self.members:
            return
        try:
            if self.peer.public_key < member:
                await self.offer_to(member)
            else:
                await self.peer._signal(member, {"t": "relink"}, self.key)
        except (SignalingError, ConnectionError) as exc:
            self._emit(PeerProblem(f"cannot reach {member.hex()[:12]}: {exc}"))

    def expect_offer(self, member: bytes) -> None:
        """A member we heard of from the node: the newcomer offers, but if two joins
        crossed, each may take the other for the newcomer; then the keys decide."""
        if member not in self.links:
            self.peer._spawn(self._relink(member, None, wait=self.peer.config.offer_grace))

    def _file_channel(self, link: PeerLink, channel: RTCDataChannel) -> None:
        self.transfers.on_channel(link.member, channel)

    # --- the core ---------------------------------------------------------------------

    def _service(self) -> None:
        core = self.core
        for member, frame in core.frames_to_send():
            link = self.links.get(member)
            if link is not None:
                link.send(frame)
        while (event := core.next_event()) is not None:
            if isinstance(event, Delivered):
                env = event.envelope
                self.peer.store.save_message(env, core.seq, core.lamport)
                mine = env.author == self.peer.public_key
                self._emit(
                    Message(env.author, env.body, env.lamport, env.sent_at / 1000, env.seq, mine)
                )
            elif isinstance(event, Discontinuity):
                self._emit(Gap(event.author, event.first, event.last))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = core.get_timer()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - time.time())
            self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(time.time())
        self._service()

    def _emit(self, event: RoomEventT) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transfers.close()
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()


class Peer:
    """One identity in the mesh. Use as `async with Peer(data_dir, nodes) as peer`."""

    def __init__(
        self,
        data_dir: Path,
        nodes: Sequence[str],
        name: str | None = None,
        config: PeerConfig | None = None,
        accept_files_to: Path | None = None,
    ) -> None:
        """`accept_files_to`: take every offered file into this directory, unasked."""
        if not nodes:
            raise ValueError("a peer needs at least one signaling node URL")
        self.store = PeerStore(Path(data_dir))
        if name is not None:
            self.store.name = name
        self.config = config or PeerConfig()
        self.accept_files_to = accept_files_to
        self.nodes = list(dict.fromkeys(nodes))
        self.public_key = bytes(self.store.key.verify_key)
        self.rooms: dict[bytes, Room] = {}
        self.node: SignalingClient | None = None
        self._replays = ReplayGuard()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected = asyncio.Event()
        self._closing = False

    def sign(self, message: bytes) -> bytes:
        return self.store.key.sign(message).signature

    async def __aenter__(self) -> Peer:
        await self._connect_any()
        self._spawn(self._stay_connected())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closing = True
        links = [link for room in self.rooms.values() for link in room.links.values()]
        await asyncio.gather(*(link.drain() for link in links), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for room in self.rooms.values():
            await room.close()
        if self.node is not None:
            await self.node.close()
        self.store.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- rooms ---------------------------------------------------------------------------

    async def join(
        self, url: str, scope: Scope | str = Scope.PAGE, secret: bytes | None = None
    ) -> Room:
        """Join the room of a page; links to its members are set up in the background."""
        key = room_key(canonical_url(url, scope), secret)
        if key in self.rooms:
            return self.rooms[key]
        await self._connected.wait()
        assert self.node is not None
        joined = await self.node.join(key)
        room = Room(self, key, joined.layer)
        self.rooms[key] = room
        self._seat(room, joined, offer=True)
        return room

    def _seat(self, room: Room, joined: Joined, offer: bool) -> None:
        room.layer = joined.layer
        room.ice_servers = [server.to_json() for server in joined.ice_servers]
        for member in joined.members:
            new = member.key not in room.members
            room.members.add(member.key)
            if new:
                room._emit(MemberJoined(member.key))
            link = room.links.get(member.key)
            if offer and (link is None or link.failed):
                self._spawn(self._offer(room, member.key))

    async def _offer(self, room: Room, member: bytes) -> None:
        try:
            await room.offer_to(member)
        except (SignalingError, ConnectionError) as exc:
            room._emit(PeerProblem(f"cannot offer to {member.hex()[:12]}: {exc}"))

    async def leave(self, room: Room) -> None:
        self.rooms.pop(room.key, None)
        await room.close()
        if self.node is not None:
            with contextlib.suppress(SignalingError):
                await self.node.leave(room.key)

    # --- signaling ------------------------------------------------------------------------

    async def _signal(self, to: bytes, payload: dict[str, Any], room: bytes) -> None:
        await self._connected.wait()
        assert self.node is not None
        await self.node.signal(to, payload, room)

    async def _connect_any(self) -> None:
        """Connect to the first node that answers; backoff with full jitter between rounds."""
        attempt = 0
        while True:
            for url in list(self.nodes):
                try:
                    client = await SignalingClient.connect(url, self.store.key, self.store.name)
                except (SignalingError, OSError, TimeoutError) as exc:
                    log.info("node %s unreachable: %s", url, exc)
                    continue
                self.node = client
                for learned in client.nodes:
                    if learned not in self.nodes:
                        self.nodes.append(learned)
                self._connected.set()
                return
            cap = min(self.config.backoff_cap, self.config.backoff_base * 2**attempt)
            attempt += 1
            for room in self.rooms.values():
                room._emit(PeerProblem("no signaling node reachable; retrying"))
            await asyncio.sleep(random.uniform(0, cap))

    async def _stay_connected(self) -> None:
        while not self._closing:
            assert self.node is not None
            await self._read_node(self.node)
            self._connected.clear()
            failed = self.node
            # Try the other nodes first: the one that dropped us is the least likely to answer.
            if failed.node_url in self.nodes:
                self.nodes.remove(failed.node_url)
                self.nodes.append(failed.node_url)
            await failed.close()
            await self._connect_any()
            await self._rejoin()

    async def _rejoin(self) -> None:
        assert self.node is not None
        for room in list(self.rooms.values()):
            try:
                joined = await self.node.join(room.key, room.layer)
            except SignalingError as exc:
                room._emit(PeerProblem(f"rejoin failed: {exc}"))
                continue
            self._seat(room, joined, offer=False)
            room._emit(Rejoined(self.node.node_url, joined.layer))

    async def _read_node(self, node: SignalingClient) -> None:
        async for event in node.events():
            if isinstance(event, SignalFrom):
                await self._on_signal(event)
            elif isinstance(event, PeerJoined):
                room = self.rooms.get(event.room)
                if room is not None and event.member.key not in room.members:
                    room.members.add(event.member.key)
                    room._emit(MemberJoined(event.member.key))
                    room.expect_offer(event.member.key)
            elif isinstance(event, PeerLeft):
                room = self.rooms.get(event.room)
                if room is not None and event.key in room.members:
                    room.members.discard(event.key)
                    link = room.links.pop(event.key, None)
                    room.core.disconnected(event.key)
                    if link is not None:
                        self._spawn(link.close())
                    room._emit(MemberLeft(event.key))
            elif isinstance(event, Moving):
                self.nodes = [*event.nodes, *self.nodes]
                return
            elif isinstance(event, ErrorFrame | BadNodeFrame):
                log.info("node said %s: %s", event.code, event.message)
            elif isinstance(event, Closed):
                return

    async def _on_signal(self, event: SignalFrom) -> None:
        payload = event.payload
        room = self.rooms.get(event.room) if event.room is not None else None
        if room is None or not isinstance(payload, dict):
            return
        if payload.get("t") == "relink":
            if event.sender in room.members and self.public_key < event.sender:
                link = room.links.get(event.sender)
                if link is None or not link.awaiting_answer:
                    await self._offer(room, event.sender)
            return
        if payload.get("t") != "sdp":
            return
        try:
            desc = parse_description(payload.get("desc"))
            verify_description(
                desc,
                room.key,
                event.sender,
                self.public_key,
                time.time(),
                verify_signature,
                self._replays,
            )
        except DescriptionRejected as exc:
            room._emit(PeerProblem(f"refused a description from {event.sender.hex()[:12]}: {exc}"))
            return
        if desc.kind == "offer":
            await self._on_offer(room, event.sender, desc)
        else:
            link = room.links.get(event.sender)
            if link is not None and link.awaiting_answer:
                await link.accept_answer(desc)

    async def _on_offer(self, room: Room, sender: bytes, desc: Any) -> None:
        link = room.links.get(sender)
        if link is not None and link.awaiting_answer and self.public_key < sender:
            return  # glare: both offered; the lower key's offer wins, and that is ours
        if sender not in room.members:
            room.members.add(sender)
            room._emit(MemberJoined(sender))
        link = room._new_link(sender)
        answer = await link.answer(desc, time.time())
        await self._signal(sender, {"t": "sdp", "desc": answer.to_json()}, room.key)
