"""The peer API: `async with Peer(...) as p: room = await p.join(url)`.

A page's room is split into layers (groups of about 24, docs/protocol.md 2.3);
a `Room` is our seat in one of them: `room.layer`, with `room.layers` and
`room.total` the node's estimates for the whole page. `await room.census()`
asks for a fresh picture with a few layers' counts, `await room.move(layer)`
and `await room.sit_with(key)` move to another layer (the links follow), and
`peer.join(url, layer=..., friend=...)` sits down where asked in the first
place. Layers are counted from 0, as on the wire.

A `Peer` is one identity (its data directory) talking to the mesh. Who to
connect to, and when, is decided by the sans-IO core `peer.mesh.Mesh`
(docs/protocol.md 5.0): node fail-over with backoff, who offers, glare,
relinks, connect deadlines, make-before-break spares, membership
reconciliation on every rejoin, ICE credential renewal. This module is the
glue that carries out its commands:

- one `SignalingClient` at a time (the Mesh says which node);
- per room, one `PeerLink` (aiortc) per link id the Mesh makes; signals
  (offers, answers, relinks) are signed end to end and verified here
  before the Mesh hears of them;
- per room, a `ReliableRoom` core (peer/messaging.py) fed by the current
  link of each member, its clocks and deliveries saved in the SQLite store;
- file transfers (peer/transfer.py) on the same links.

One timer for the Mesh, one per room for its messaging core, each re-armed
after every event: neither core ever waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel
from nacl.signing import SigningKey

from signaling.protocol import (
    MAX_LAYER,
    ErrorCode,
    IceServer,
    Scope,
    TokenBucket,
    canonical_url,
    load_or_create_seed,
    room_key,
    verify_signature,
)

from . import mesh
from .blocks import BLOCK, MAX_BLOCKS, MUTE, BlockEntry, FloodMutes
from .device import (
    DEFAULT_LIFETIME_MS,
    MAX_BYTES,
    MAX_DEVICES,
    REVOCATION_BYTES,
    Delegation,
    DelegationError,
    Devices,
    Revocation,
    check_delegation,
    issue_delegation,
    issue_revocation,
    parse_revocation,
    people,
    serialize_delegation,
    serialize_revocation,
)
from .dm import plan as dm_plan
from .friends import (
    MAX_CONTACTS,
    RECORD_BURST,
    RECORD_RATE,
    ContactCard,
    GetPresence,
    Place,
    PresenceBook,
    PresenceError,
    PresenceNote,
    PutPresence,
    dm_room,
    parse_card_frame,
    x25519_seed,
)
from .messaging import (
    Chat,
    Content,
    Delivered,
    Discontinuity,
    Envelope,
    Flooding,
    MessageRef,
    MessagingError,
    Reaction,
    Reissue,
    ReliableRoom,
    RoomConfig,
    check_name,
    reactions_for,
)
from .sdp import (
    NONCE_BYTES,
    RELINK,
    DescriptionRejected,
    ReplayGuard,
    SignedDescription,
    parse_description,
    sign_description,
    verify_description,
)
from .signaling import (
    BadNodeFrame,
    Closed,
    ErrorFrame,
    Joined,
    LayerCount,
    Moving,
    Named,
    PeerJoined,
    PeerLeft,
    SignalFrom,
    SignalingClient,
    SignalingError,
)
from .store import PRUNE_EVERY, Contact, PeerStore
from .transfer import FileDone, FileEvent, FileFailed, FileOffered, FileProgress, Transfers
from .webrtc import PeerLink, ice_configuration

log = logging.getLogger(__name__)

MAX_NAME = 64
MAX_NAMES = 1024
"""Profile names kept per room (as the core's `max_names`): one per member key that named itself."""
JOIN_TIMEOUT = 30.0
DM_TICK = 5.0
"""Seconds between two looks at which DM rooms to be in (presence reads every 60 s)."""
MAX_DEVICE_CHANGES = 8
"""Times one member's person or device label may change in a room (5.3)."""
MAX_CARDS = 4096
"""Contact cards of members kept in memory, so one can be added as a contact."""
MAX_REFUSED = 256
"""Keys refused in one DM room, remembered so they get no second probation (7.4)."""
DEVICE_KEY_FILE = "device.key"
"""A device's own key, beside the identity's (docs/protocol.md 5.3), mode 0600."""
DEVICE_CERT_FILE = "device.cert"
"""A delegation to this device's key issued elsewhere (`pagemesh identity delegate` on the
machine that holds the identity key, then `adopt` here), in hex: 5.3."""
REVOKED_FILE = "revoked"
"""The revocations this identity issued (140 bytes each, the newest last), 5.3."""
MAX_OWN_REVOCATIONS = 16
"""The most an identity keeps and shows on each link: a person has a few devices."""


# --- what the application sees -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    author: bytes
    text: str
    """What was said (a reaction's emoji for a reaction; empty for content not read)."""
    lamport: int
    sent_at: float
    seq: int
    mine: bool
    content: Content | None = None
    """The envelope read (`Chat`: text, signed name, the message replied to; `Reaction`)."""
    replaces: int | None = None
    """Ours, said again under a new seq: the seq it was shown with (docs/protocol.md 5.0.1)."""


@dataclass(frozen=True, slots=True)
class MemberJoined:
    key: bytes


@dataclass(frozen=True, slots=True)
class MemberLeft:
    key: bytes


@dataclass(frozen=True, slots=True)
class Profile:
    """A member said what to call it (its link's `profile` frame): a new or changed name."""

    key: bytes
    name: str


@dataclass(frozen=True, slots=True)
class Device:
    """A member showed a delegation (docs/protocol.md 5.3): its key `key` is a device of
    the person whose identity key is `identity`, called `label` by that person."""

    key: bytes
    identity: bytes
    label: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """The identity `identity` took back its device `key` (a revocation it signed, 5.3):
    `key` is its own person from now on."""

    key: bytes
    identity: bytes


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
class Moved:
    """The node seated us in another layer of the room, as asked (`Room.move`, `sit_with`):
    the old layer's members are gone, the new layer's are being linked."""

    layer: int
    layers: int
    total: int


@dataclass(frozen=True, slots=True)
class Census:
    """A room-wide picture from the node (docs/protocol.md 3.2, `layers`): the layer we
    sit in, the estimated number of layers and of people on the page, and the member
    counts of a few layers (ours and others we could move to)."""

    layer: int
    layers: int
    total: int
    counts: tuple[LayerCount, ...]


@dataclass(frozen=True, slots=True)
class PeerProblem:
    """Something the application should show: a node unreachable, a refused offer..."""

    message: str


@dataclass(frozen=True, slots=True)
class MemberUnreachable(PeerProblem):
    """No link to `key` could be made: neither a direct path nor one through the relay."""

    key: bytes


@dataclass(frozen=True, slots=True)
class Replaced(PeerProblem):
    """This identity connected to the node from elsewhere (another process or device);
    this one stops using the node rather than fight over it. Links stay up."""


@dataclass(frozen=True, slots=True)
class DmDelivered:
    """In a DM room (docs/protocol.md 7.4): the contact acknowledged our messages up to
    `upto` (our seq): every one of ours up to there has reached them."""

    contact: bytes
    upto: int


RoomEventT = (
    Message
    | DmDelivered
    | MemberJoined
    | MemberLeft
    | Profile
    | Device
    | Revoked
    | Connected
    | Gap
    | Rejoined
    | Moved
    | PeerProblem
    | FileEvent
    | Flooding
)

__all__ = [
    "Census",
    "Connected",
    "Device",
    "DmDelivered",
    "FileDone",
    "FileFailed",
    "FileOffered",
    "FileProgress",
    "Flooding",
    "Gap",
    "MemberJoined",
    "MemberLeft",
    "MemberUnreachable",
    "Message",
    "Moved",
    "Peer",
    "PeerConfig",
    "PeerProblem",
    "Profile",
    "Rejoined",
    "Replaced",
    "Revoked",
    "Room",
]


@dataclass(frozen=True, slots=True)
class PeerConfig:
    mesh: mesh.MeshConfig = field(default_factory=mesh.MeshConfig)
    """Fail-over, who offers, backoff, deadlines, renewal: the link-management rules."""
    relay_only: bool = False
    turn_transport: str = ""
    """Which of the node's TURN URLs links use, as aiortc uses one: "udp", "tcp" or "tls"
    (`turns:`, for networks that let only TCP to 443 out); "" keeps the node's order."""
    room: RoomConfig = field(default_factory=RoomConfig)
    max_events: int = 10_000
    max_file_bytes: int = 1 << 30
    device_lifetime_ms: int = DEFAULT_LIFETIME_MS
    dm_probation: float = 5.0
    """In a DM room (7.4): how long a key not yet known as the contact's (or our own
    identity's) device has, from its first sign, to show such a delegation."""
    dm_probation_max: int = 2
    """In a DM room: keys on probation at once (more unknown keys are refused)."""
    """How long a device's delegation lasts (it is renewed at half that), docs/protocol.md 5.3."""
    early_offers: bool = True
    """Offer to the members a first join's `sign` request or `members` frame names, once
    signed, before `joined` (docs/protocol.md 2.5.3); False: after `joined`, as before."""


class Room:
    """A joined room: send messages, read events."""

    def __init__(self, peer: Peer, key: bytes, layer: int = 0) -> None:
        self.peer = peer
        self.key = key
        self.layer = layer
        """The layer we sit in (from 0), as the node last said."""
        self.layers = 1
        """The node's estimate of the room's layers (from `joined`, or a census)."""
        self.total = 1
        """The node's estimate of the people on the page, us included."""
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
            blocked=peer.blocked,
        )
        self.hidden: dict[bytes, int | None] = {}
        """Blocked keys the node lists here, by layer (the Mesh never hears of them;
        an unblock hands them to it). At most the node's list of members."""
        self.flood_muted = FloodMutes()
        """Authors muted for flooding until this room is closed, the newest MAX_FLOOD_MUTED
        (docs/protocol.md 5.4)."""
        if self.core.lamport != lamport or self.core.refused_on_restore:
            # a clock pushed ahead before such envelopes were refused, repaired on restore
            peer.store.repair_room_clock(key, self.core.lamport, self.core.refused_on_restore)
        self._saved = 0
        """Messages saved since the room's store was last pruned."""
        self._prune_store()
        self.names: dict[bytes, str] = {}
        """Display names members gave themselves (self-declared, bound to their key)."""
        self.devices = Devices()
        """Which member keys are devices of which person (delegations checked, 5.3)."""
        if peer.delegation is not None:
            self.devices.add(peer.delegation)
        for revocation in peer.revocations:
            self.devices.revoke(revocation)
        for revocation, sender in peer.heard_revocations.revocations():
            self.devices.revoke(revocation, sender)
        self.refused_devices: dict[str, int] = {}
        self._device_changes: dict[bytes, int] = {}
        """Times each member's person or label changed here (at most MAX_DEVICES members)."""
        """Delegations refused, by code: those members stay their own person."""
        self.links: dict[bytes, PeerLink] = {}
        """The current link to each member (a spare being negotiated is not here)."""
        self._by_id: dict[int, PeerLink] = {}
        self._events: asyncio.Queue[RoomEventT] = asyncio.Queue(peer.config.max_events)
        self._timer: asyncio.TimerHandle | None = None
        self.seated: asyncio.Future[Joined] | None = None
        """Resolved by the first `joined` (Peer.join waits on it)."""
        self.early_links: set[bytes] = set()
        """Members whose link opened before the first `joined` came: offered to once the
        join's sign request or a `members` frame named them (docs/protocol.md 2.5.3)."""
        self.moving: asyncio.Future[Joined] | None = None
        """Resolved by the answer to a move (Room.move and sit_with wait on it)."""
        self.move_unsent: asyncio.Future[Joined] | None = None
        """The move the next join sent for this room carries (the Mesh sends it at once,
        or with the rejoin once a node is back); other joins' answers are not its."""
        self.dropped_events = 0
        self.transfers = Transfers(
            peer.store,
            self._send_control,
            self._open_file_channel,
            self._emit,
            peer.config.max_file_bytes,
        )
        self.transfers.auto_accept = peer.accept_files_to
        self.contact: bytes | None = None
        """In a DM room (7.4): the contact, the only person whose keys get a link."""
        self.dm_acked = 0
        """In a DM room: our highest seq the contact acknowledged (kept in the store)."""
        self._dm_said = self.core.seq
        self.probation: dict[bytes, float] = {}
        """In a DM room: unknown keys given a link to show a delegation, by deadline."""
        self.refused: dict[bytes, None] = {}
        """In a DM room: keys refused here (oldest first, at most MAX_REFUSED)."""
        self._held: dict[bytes, PeerLink] = {}
        """Links up to a key on probation: nothing of the room goes on them."""
        self._probation_timer: asyncio.TimerHandle | None = None

    def admits(self, key: bytes) -> bool:
        """Whether `key` may be a member here: anyone in a page's room; in a DM room only
        the contact's key, or a device key that showed us a delegation from the contact
        or from our own identity."""
        mine = (self.peer.public_key, self.peer.identity_key)
        if self.contact is None or key == self.contact or key in mine:
            return True
        return self.peer.device_identity(key) in (self.contact, self.peer.identity_key)

    def consider(self, key: bytes, listed: bool = True) -> bool:
        """Whether `key` may have a link here (7.4): a key admitted, or one on probation,
        which an unknown key the node lists (`listed`) becomes while fewer than
        `dm_probation_max` are; a signal alone puts nobody on probation."""
        if self.admits(key) or key in self.probation:
            return True
        full = len(self.probation) >= self.peer.config.dm_probation_max
        if not listed or key in self.refused or full:
            self.peer.refused_strangers += 1
            return False
        self.probation[key] = time.monotonic() + self.peer.config.dm_probation
        if self._probation_timer is None:
            self._probation_timer = asyncio.get_running_loop().call_later(
                self.peer.config.dm_probation, self._probation_due
            )
        return True

    def _probation_due(self) -> None:
        self._probation_timer = None
        now = time.monotonic()
        for key, deadline in list(self.probation.items()):
            if deadline <= now:
                self._refuse(key, remember=False)
        if self.probation:
            wait = max(0.0, min(self.probation.values()) - now)
            self._probation_timer = asyncio.get_running_loop().call_later(wait, self._probation_due)

    def _refuse(self, key: bytes, remember: bool = True) -> None:
        """A key on probation showed no delegation that admits it: its link closes and
        the Mesh forgets it. One that showed something else stays refused in this room;
        one that ran out of time may try again (a slow device)."""
        self.probation.pop(key, None)
        self._held.pop(key, None)
        if remember:
            self.refused[key] = None
            while len(self.refused) > MAX_REFUSED:
                del self.refused[next(iter(self.refused))]
        self.peer.refused_strangers += 1
        self.peer.mesh.peer_left(self.key, key)
        self.peer._drive()

    def _probation_frame(self, member: bytes, frame: Any) -> None:
        """The first frame of a key on probation: a `device` frame whose delegation
        admits it, or the link closes."""
        if isinstance(frame, dict) and frame.get("t") == "device":
            self._device(member, frame.get("cert"))
        if not self.admits(member):
            self._refuse(member)
            return
        self.probation.pop(member, None)
        link = self._held.pop(member, None)
        if link is not None and link.open:
            self._link_up(member, link)

    def contact_linked(self) -> bool:
        """In a DM room: a link to the contact (or one of its devices) is open."""
        return any(link.open and self.admits(k) for k, link in self.links.items())

    def waiting(self) -> list[Envelope]:
        """In a DM room: our messages the contact has not acknowledged yet (oldest first)."""
        mine = self.peer.public_key
        return [e for e in self.core.transcript() if e.author == mine and e.seq > self.dm_acked]

    # --- the application's side ---------------------------------------------------

    async def send(self, text: str) -> Envelope:
        """Send `text` as a plain `text` envelope (no name, no reply)."""
        env = self.core.send(text, time.time())
        self._service()
        return env

    async def say(self, text: str, reply_to: MessageRef | None = None) -> Envelope:
        """Send `text` as a `chat` envelope signed with our display name (so later readers
        see who said it after we left), optionally replying to a message."""
        env = self.core.say(text, time.time(), name=self._signed_name(), reply_to=reply_to)
        self._service()
        return env

    async def react(self, target: MessageRef, emoji: str, on: bool = True) -> Envelope:
        """Put `emoji` on a message (or take it off)."""
        env = self.core.react(target, emoji, time.time(), on=on, name=self._signed_name())
        self._service()
        return env

    def name_of(self, key: bytes) -> str | None:
        """A member's name: signed in their envelopes, else from their link's profile;
        none for a key blocked (docs/protocol.md 5.4)."""
        if key in self.peer.blocked:
            return None
        return self.core.name_of(key) or self.names.get(key)

    def person_of(self, key: bytes) -> bytes:
        """The identity key `key` speaks for (a device's delegation valid now, 5.3), or
        `key` itself: a key with no delegation is its own person."""
        return self.devices.person_of(key, int(time.time() * 1000))

    def device_label(self, key: bytes) -> str | None:
        """What the person calls the device `key` (its delegation valid now), else None."""
        found = self.devices.delegation(key, int(time.time() * 1000))
        return found.label if found is not None else None

    def people(self) -> dict[bytes, set[bytes]]:
        """Who is here, by person: identity key -> its keys here now (us included)."""
        return people({*self.members, self.peer.public_key}, self.devices, int(time.time() * 1000))

    # --- blocks and mutes (docs/protocol.md 5.4) ------------------------------------

    def block(self, key: bytes) -> None:
        """Block `key`'s person in every room, for good (stored): no link, none of its
        messages or files, not listed in `members`. It is not told. `unblock` undoes it.
        A device that showed a delegation blocks its identity, so all its devices (5.4)."""
        self.peer.block(self._person(key), self.name_of(key) or "")

    def _person(self, key: bytes) -> bytes:
        person = self.peer.person_blocked(key) or self.person_of(key)
        if person == self.peer.identity_key:
            raise ValueError("one cannot block oneself")
        return person

    def unblock(self, key: bytes) -> bool:
        return self.peer.unblock(key)

    def mute(self, key: bytes) -> None:
        """Hide `key`'s messages (no `Message` events; they are still received, kept
        and acknowledged) and keep its link; stored, in every room."""
        self.peer.mute(self._person(key), self.name_of(key) or "")

    def unmute(self, key: bytes) -> bool:
        """Show `key`'s messages again (a mute for flooding too)."""
        flooding = key in self.flood_muted
        self.flood_muted.discard(key)
        return self.peer.unmute(key) or flooding

    @property
    def blocked(self) -> frozenset[bytes]:
        return self.peer.blocked

    @property
    def muted(self) -> frozenset[bytes]:
        """Keys muted (stored) and muted here for flooding."""
        return self.peer.muted | self.flood_muted

    def shows(self, key: bytes) -> bool:
        """Whether this room shows `key`'s messages."""
        peer = self.peer
        return key not in peer.blocked and key not in peer.muted and key not in self.flood_muted

    def reactions(self) -> dict[MessageRef, dict[str, set[bytes]]]:
        """Each message's reactions: emoji -> the keys that put it there."""
        return reactions_for(self.core.transcript())

    def _signed_name(self) -> str | None:
        name = self.peer.store.name
        if not name:
            return None
        try:
            return check_name(name)
        except MessagingError:
            return None

    async def send_file(self, path: Path, to: Collection[bytes] | None = None) -> str:
        """Offer a file to every member (or only to the members `to`); returns its id
        (events follow its progress). It is new to the members here now; whoever comes
        later hears of it as shared earlier (docs/protocol.md 5.2)."""
        members = [k for k, link in self.links.items() if link.open]
        offer = await self.transfers.offer(Path(path), members, self.members, to)
        return offer.id

    async def census(self) -> Census:
        """Ask the node for the room-wide picture; `layers` and `total` follow it."""
        node = self.peer.node
        if node is None:
            raise SignalingError("closed", "no signaling node at the moment")
        reply = await node.layers(self.key)
        self.layers, self.total = reply.layers, reply.total
        return Census(reply.layer, reply.layers, reply.total, reply.counts)

    async def move(self, layer: int) -> int:
        """Sit in `layer` (from 0) instead: links to the old layer's members close, links
        to the new one's open in the background. Returns the layer the node seated us
        in; a full layer raises SignalingError `layer-full` and we stay where we were."""
        if not 0 <= layer <= MAX_LAYER:
            raise ValueError(f"a layer is in 0..{MAX_LAYER}")
        return await self.peer._move(self, layer, None)

    async def sit_with(self, friend: bytes) -> int:
        """Move to the layer `friend` (a member's public key) sits in; as `move`. A key
        not in the room raises SignalingError `unknown-peer`."""
        if len(friend) != 32:
            raise ValueError("a friend is a 32-byte public key")
        return await self.peer._move(self, None, friend)

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
        """The room's next event; TimeoutError after `within` seconds.

        Cancelled just as an event comes, this raises CancelledError and the event stays
        queued. `asyncio.wait_for` on Python 3.11 returns the event instead and drops the
        cancellation (bpo-42130): `pagemesh chat` then waited up to an hour for its
        printer to stop when a file's `file-done` came in with the /leave.
        """
        async with asyncio.timeout(within):
            return await self._events.get()

    def paths(self) -> dict[bytes, str | None]:
        return {k: link.path() for k, link in self.links.items() if link.open}

    def transcript(self) -> list[Envelope]:
        return self.core.transcript()

    @property
    def members(self) -> set[bytes]:
        """The members the Mesh holds for this room (as the node listed them, less the
        keys blocked)."""
        state = self.peer.mesh.rooms.get(self.key)
        return set(state.members) if state is not None else set()

    @property
    def ice_servers(self) -> list[dict[str, Any]]:
        """The STUN/TURN servers new links use (the peer's freshest, for every room)."""
        return self.peer.ice_servers

    # --- links, as the Mesh says ------------------------------------------------------

    def make_link(self, member: bytes, link_id: int) -> PeerLink:
        link = PeerLink(
            self.key,
            self.peer.public_key,
            member,
            self.peer.sign,
            ice_configuration(
                self.peer.ice_servers, self.peer.config.relay_only, self.peer.config.turn_transport
            ),
            self._frame,
            lambda changed: self.peer.link_changed(self, link_id, changed),
            self._file_channel,
        )
        self._by_id[link_id] = link
        if member not in self.links or not self.links[member].open:
            self.links[member] = link  # a spare waits beside the open link until it opens
        return link

    def link(self, link_id: int) -> PeerLink | None:
        return self._by_id.get(link_id)

    def awaiting_answer(self, member: bytes) -> tuple[int, PeerLink] | None:
        for link_id, link in self._by_id.items():
            if link.member == member and link.awaiting_answer:
                return link_id, link
        return None

    def close_link(self, member: bytes, link_id: int) -> None:
        link = self._by_id.pop(link_id, None)
        if link is None:
            return
        if self.links.get(member) is link:
            del self.links[member]
        self.peer._spawn(link.close())

    def link_up(self, member: bytes, link_id: int) -> None:
        link = self._by_id.get(link_id)
        if link is None:
            return
        self.links[member] = link
        if self.seated is not None and not self.seated.done():
            self.early_links.add(member)  # bounded: the Mesh's members of this room
        if not self.admits(member):  # on probation (7.4): who we are, nothing of the room
            self._held[member] = link
            if self.peer.delegation is not None:
                link.send(self.peer.device_frame())
            return
        self._link_up(member, link)

    def _link_up(self, member: bytes, link: PeerLink) -> None:
        if self.peer.delegation is not None:  # first: who we speak for, before any message
            link.send(self.peer.device_frame())
        for revocation in self.peer.revocations:  # devices this identity took back
            link.send(revoke_frame(revocation))
        if self.peer.store.name:
            link.send({"t": "profile", "name": self.peer.store.name[:MAX_NAME]})
        link.send(self.peer.card.to_frame())  # our contact card (docs/protocol.md 7.1)
        self.core.connected(member, time.time())
        self._emit(Connected(member, link.path()))
        self.transfers.member_connected(member)
        self._service()

    def link_down(self, member: bytes) -> None:
        self.core.disconnected(member)
        self._service()

    def _frame(self, member: bytes, frame: Any) -> None:
        if not self.admits(member):
            if member in self.probation:
                self._probation_frame(member, frame)
            return
        if isinstance(frame, dict) and frame.get("t") == "typing":
            return  # ephemeral; the terminal shows no typing indicators
        if isinstance(frame, dict) and frame.get("t") == "profile":
            name = frame.get("name")
            if isinstance(name, str) and 0 < len(name) <= MAX_NAME:
                if self.names.get(member) != name:
                    self._emit(Profile(member, name))
                self.names.pop(member, None)
                self.names[member] = name
                # bounded: every key that ever linked here named itself (the least recent go)
                while len(self.names) > MAX_NAMES:
                    del self.names[next(iter(self.names))]
            return
        if isinstance(frame, dict) and frame.get("t") == "device":
            self._device(member, frame.get("cert"))
            return
        if isinstance(frame, dict) and frame.get("t") == "revoke":
            self._revoke(member, frame.get("cert"))
            return
        if isinstance(frame, dict) and frame.get("t") == "card":
            try:  # signed by the person: a device's card is its identity's (5.3, 7.1)
                self.peer.card_received(parse_card_frame(self.person_of(member), frame), member)
            except PresenceError as refused:
                log.info("refused the contact card of %s: %s", member.hex()[:12], refused)
            return
        if isinstance(frame, dict) and self.transfers.on_control(member, frame):
            return
        self.core.receive(member, frame, time.time())
        self._service()

    def _device(self, member: bytes, cert: object) -> None:
        """A member's delegation (5.3): checked against its own key and now; refused, the
        member stays its own person, whatever identity it claimed."""
        try:
            if not isinstance(cert, str) or len(cert) > 2 * MAX_BYTES:
                raise DelegationError("short", "a device frame carries a delegation in hex")
            try:
                data = bytes.fromhex(cert)
            except ValueError:
                raise DelegationError("short", "a delegation in hex") from None
            delegation = check_delegation(data, member, int(time.time() * 1000), verify_signature)
            if self.devices.revoked(delegation.identity, member):
                raise DelegationError("revoked", "the identity took this device back")
            self._count_change(member, delegation)
        except DelegationError as refused:
            self.refused_devices[refused.code] = self.refused_devices.get(refused.code, 0) + 1
            log.info("refused the delegation of %s: %s", member.hex()[:12], refused)
            return
        if self.peer.device_seen(member, delegation.identity):
            return  # a device of a blocked person: its link is closed (5.4)
        if self.devices.add(delegation):
            self._emit(Device(member, delegation.identity, delegation.label))

    def _count_change(self, member: bytes, delegation: Delegation) -> None:
        """A delegation that would change the person or label of `member` (one it shows
        valid now) counts; past MAX_DEVICE_CHANGES, DelegationError `changes`: a member
        cycling made-up identities is not a new person (and a new relabelling) each time."""
        held = self.devices.delegation(member, int(time.time() * 1000))
        if held is None or (held.identity, held.label) == (delegation.identity, delegation.label):
            return
        changes = self._device_changes.pop(member, 0) + 1
        self._device_changes[member] = changes
        while len(self._device_changes) > MAX_DEVICES:
            del self._device_changes[next(iter(self._device_changes))]
        if changes > MAX_DEVICE_CHANGES:
            raise DelegationError("changes", "this member changed its person too often")

    def _revoke(self, member: bytes, cert: object) -> None:
        """A revocation (5.3), from whoever sends it: its identity's signature is what
        counts. A device it takes back is its own person from now on."""
        try:
            if not isinstance(cert, str) or len(cert) != 2 * REVOCATION_BYTES:
                raise DelegationError("revocation", "a revoke frame carries a revocation in hex")
            try:
                data = bytes.fromhex(cert)
            except ValueError:
                raise DelegationError("revocation", "a revocation in hex") from None
            revocation = parse_revocation(data, verify_signature)
        except DelegationError as refused:
            code = f"revoke.{refused.code}"
            self.refused_devices[code] = self.refused_devices.get(code, 0) + 1
            return
        self.peer.revocation_heard(revocation, member)

    def _file_channel(self, link: PeerLink, channel: RTCDataChannel) -> None:
        if not self.admits(link.member):  # on probation: no files (7.4)
            channel.close()
            return
        self.transfers.on_channel(link.member, channel)

    # --- the messaging core -------------------------------------------------------------

    def _service(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            if isinstance(event, Reissue):
                # our key moved here from a device that had said more: say ours again
                self.peer.store.forget_messages(self.key, event.envelopes)
                for env in event.envelopes:
                    try:
                        core.send(env.body, time.time(), env.kind, replaces=env.seq)
                    except MessagingError as exc:  # only a clock out of range
                        log.warning("could not say message %d again: %s", env.seq, exc)
            elif isinstance(event, Delivered):
                env = event.envelope
                self.peer.store.save_message(env, core.seq, core.lamport)
                self._saved += 1
                if self._saved >= PRUNE_EVERY:
                    self._prune_store()
                mine = env.author == self.peer.public_key
                content = event.content
                text = env.body if env.kind == "text" else ""
                if isinstance(content, Chat):
                    text = content.text
                elif isinstance(content, Reaction):
                    text = content.emoji
                sent_at = env.sent_at / 1000
                if not mine and not self.shows(env.author):
                    continue  # received, kept and acknowledged; not shown
                self._emit(
                    Message(
                        env.author, text, env.lamport, sent_at, env.seq, mine, content,
                        event.replaces,
                    )
                )  # fmt: skip
            elif isinstance(event, Discontinuity):
                self._emit(Gap(event.author, event.first, event.last))
            elif isinstance(event, Flooding):
                self.flood_muted.add(event.author)  # until the room closes or an unmute
                self._emit(event)
        for member, frame in core.frames_to_send():
            link = self.links.get(member)
            if link is not None:
                link.send(frame)
        if self.contact is not None:
            self._dm_acks()
        self._timer = _rearm(self._timer, core.get_timer(), self._on_timer)

    def _dm_acks(self) -> None:
        """A DM room: what the contact's keys acknowledged, kept, and told once."""
        assert self.contact is not None
        if self.core.seq != self._dm_said:  # something new of ours: knock, wait (7.4)
            self._dm_said = self.core.seq
            self.peer._dm_due()
        upto = max((self.core.acked(k) for k in self.links if self.admits(k)), default=0)
        if upto > self.dm_acked:
            self.dm_acked = upto
            self.peer.store.set_dm_acked(self.key, upto)
            self._emit(DmDelivered(self.contact, upto))
            self.peer._dm_due()

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(time.time())
        self._service()

    def _prune_store(self) -> None:
        """Keep no more of this room on disk than the core keeps (docs/protocol.md 5.0.1)."""
        config = self.core.config
        self.peer.store.prune_room(
            self.key, config.max_history, config.max_authors, config.history_count
        )
        self._saved = 0

    def _emit(self, event: RoomEventT) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._probation_timer is not None:
            self._probation_timer.cancel()
        await self.transfers.close()
        for link in list(self._by_id.values()):
            await link.close()
        self._by_id.clear()
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
        device: str | None = None,
    ) -> None:
        """`accept_files_to`: take every offered file into this directory, unasked.

        `device` (a label, may be empty): speak as a device of this identity (docs/protocol.md
        5.3) with a key of its own (`device.key` beside the identity's), certified by the
        identity key and renewed at half its life, so this device and another of the same
        identity are both in a room at once. Without it the identity key speaks itself."""
        if not nodes:
            raise ValueError("a peer needs at least one signaling node URL")
        self.store = PeerStore(Path(data_dir))
        if name is not None:
            self.store.name = name
        self.config = config or PeerConfig()
        self.accept_files_to = accept_files_to
        self.identity_key = bytes(self.store.key.verify_key)
        """The person's key: members who checked our delegation show us under it."""
        self.signing_key: SigningKey = self.store.key
        """What signs presence, descriptions and envelopes: the device key, if any."""
        self.device_label = device
        self.delegation: Delegation | None = None
        self._renewal: asyncio.TimerHandle | None = None
        self.revocations = load_revocations(Path(data_dir), self.identity_key)
        """Devices this identity took back, shown to every member on every link."""
        self.heard_revocations = Devices()
        """Revocations members showed us in any room (5.3): a device is revoked in every
        room, and a room opened later starts with them (the same bounds and eviction)."""
        if device is not None:
            self.signing_key = SigningKey(load_or_create_seed(Path(data_dir) / DEVICE_KEY_FILE))
            given = load_device_cert(Path(data_dir), bytes(self.signing_key.verify_key))
            if given is not None and given.identity != self.identity_key:
                # the identity key lives elsewhere: this device speaks under its delegation
                # until it expires, and cannot renew it or revoke anything
                self.delegation, self.identity_key = given, given.identity
                self.device_label = given.label
            else:
                self._issue_delegation()
        self.public_key = bytes(self.signing_key.verify_key)
        self.mesh = mesh.Mesh(
            self.public_key, list(nodes), self.config.mesh, random.Random().random, time.time()
        )
        self.blocks: dict[bytes, BlockEntry] = {}
        """Keys blocked or muted (docs/protocol.md 5.4), as stored: a person's identity key,
        or a key that is its own person."""
        self.block_devices: dict[bytes, bytes] = {}
        """Device keys that showed a delegation from a person in `blocks` (5.4), as stored:
        device -> identity. `blocked` and `muted` hold them too."""
        self.blocked: frozenset[bytes] = frozenset()
        self.muted: frozenset[bytes] = frozenset()
        self._unkept_devices: dict[bytes, bytes] = {}
        """Devices of blocked people past what the store keeps: caught until we stop."""
        self._load_blocks()
        self.refused_blocked = 0
        """Offers, relinks and answers from blocked keys, dropped unanswered."""
        self.rooms: dict[bytes, Room] = {}
        self.node: SignalingClient | None = None
        self.ice_servers: list[dict[str, Any]] = []
        self._ice_from: SignalingClient | None = None
        """The node `ice_servers` came from (an early offer waits for this node's, 2.5.3)."""
        self._ice_asked: tuple[SignalingClient, asyncio.Task[None]] | None = None
        self._offers: dict[tuple[bytes, bytes], SignedDescription] = {}
        """A verified offer waits here for the Mesh's Answer (taken in the same turn)."""
        self._replays = ReplayGuard()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected = asyncio.Event()
        self.on_node_problem: Callable[[str], None] | None = None
        """Told in a sentence when no signaling node answers: what a command line says
        while a join waits (a joined room's events say it too, as PeerProblem)."""
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        # Contacts and their presence (docs/protocol.md 7): our card is the identity's.
        x_private = x25519_seed(bytes(self.store.key))
        self.card = ContactCard.create(self.store.key, x_private)
        self.cards: dict[bytes, ContactCard] = {}
        """Cards members sent us, newest last (at most MAX_CARDS): adding one takes it."""
        self._cards_given: dict[bytes, bytes] = {}
        """Member key -> the person whose card its link gave last (at most MAX_CARDS)."""
        self._card_givers: dict[bytes, bytes] = {}
        """Person -> the member key whose link gave the card kept (only for cards kept)."""
        self.presence = PresenceBook(self.identity_key, x_private, os.urandom)
        self.presence.set_mode(self.store.presence_mode, time.time())
        self._pages: dict[bytes, str | None] = {}
        """The canonical page of each joined room (None: a private room, never told)."""
        self._presence_timer: asyncio.TimerHandle | None = None
        self._record_pace = TokenBucket(RECORD_RATE, RECORD_BURST, time.time())
        self._presence_turn = asyncio.Lock()
        """One presence round at a time, its requests paced by `_record_pace`."""
        self._place_room: bytes | None = None
        self.dm_rooms: dict[bytes, Room] = {}
        """Joined DM rooms by contact (docs/protocol.md 7.4)."""
        self.dm_opened: asyncio.Queue[Room] = asyncio.Queue(64)
        """Each DM room as it is joined, for the application to show."""
        self._dm_kept: set[bytes] = set()
        """Contacts whose DM the person opened: kept joined whatever presence says."""
        self._dm_timer: asyncio.TimerHandle | None = None
        self._dm_keys: dict[bytes, tuple[bytes, bytes]] = {}
        """contact -> (pair secret, DM room): derived once per secret."""
        self._dm_stored: dict[bytes, int] = {}
        """contact -> how many of ours wait in a DM room not joined (read once, kept
        until the room is joined or left)."""
        self.refused_strangers = 0
        """Signals and members in DM rooms from keys that are not the contact's."""
        self._reload_contacts()

    @property
    def nodes(self) -> list[str]:
        """The nodes this peer knows, in the order it would try them."""
        return list(self.mesh.nodes)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    def _issue_delegation(self) -> None:
        """A fresh delegation from the identity key to our device key (5.3)."""
        self.delegation = issue_delegation(
            lambda message: self.store.key.sign(message).signature,
            self.identity_key,
            bytes(self.signing_key.verify_key),
            int(time.time() * 1000),
            self.config.device_lifetime_ms,
            self.device_label or "",
        )

    def revoke_device(self, device: bytes) -> Revocation:
        """Take back every delegation this identity gave `device` (a lost or stolen device,
        5.3): kept in `revoked` and shown now on every link, and on every link after."""
        if self.identity_key != bytes(self.store.key.verify_key):
            raise ValueError(
                "this device does not hold its identity's key: revoke from one that does"
            )
        revocation = issue_revocation(
            lambda message: self.store.key.sign(message).signature,
            self.identity_key,
            device,
            int(time.time() * 1000),
        )
        self.revocations = [
            *(r for r in self.revocations if r.device != device),
            revocation,
        ][-MAX_OWN_REVOCATIONS:]
        save_revocations(self.store.data_dir, self.revocations)
        for room in self.rooms.values():
            if room.devices.revoke(revocation):
                room._emit(Revoked(device, self.identity_key))
            for link in room.links.values():
                if link.open:
                    link.send(revoke_frame(revocation))
        return revocation

    def device_frame(self) -> dict[str, Any]:
        """The control frame that shows our delegation to a member (5.3)."""
        assert self.delegation is not None
        return {"t": "device", "cert": serialize_delegation(self.delegation).hex()}

    def _renew_delegation(self) -> None:
        """At half its life: a new delegation, shown to every member linked now."""
        self._renewal = None
        self._issue_delegation()
        assert self.delegation is not None
        for room in self.rooms.values():
            room.devices.add(self.delegation)
            for link in room.links.values():
                if link.open:
                    link.send(self.device_frame())
        self._schedule_renewal()

    def _schedule_renewal(self) -> None:
        if self.delegation is None or self._closing:
            return
        if self.identity_key != bytes(self.store.key.verify_key):
            return  # issued elsewhere: renewed by adopting a new one there
        half = (self.delegation.expires - self.delegation.not_before) / 2000
        self._renewal = asyncio.get_running_loop().call_later(half, self._renew_delegation)

    async def __aenter__(self) -> Peer:
        self._schedule_renewal()
        self.mesh.start(time.time())
        self._drive()
        await self._connected.wait()
        self._presence_due()
        self._dm_due()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._closing:
            await self._say_offline()
        self._closing = True
        if self._presence_timer is not None:
            self._presence_timer.cancel()
        if self._dm_timer is not None:
            self._dm_timer.cancel()
        links = [link for room in self.rooms.values() for link in room.links.values()]
        await asyncio.gather(*(link.drain() for link in links), return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        if self._renewal is not None:
            self._renewal.cancel()
        self.mesh.close()
        self.mesh.commands()  # closing links is the rooms' job below
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
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a peer task failed", exc_info=error)

    # --- rooms ---------------------------------------------------------------------------

    async def join(
        self,
        url: str,
        scope: Scope | str = Scope.PAGE,
        secret: bytes | None = None,
        *,
        layer: int | None = None,
        friend: bytes | None = None,
    ) -> Room:
        """Join the room of a page; links to its members are set up in the background.

        `layer` (from 0) asks for that layer, else `friend` (a member's public key) for
        the layer that member sits in; else the node places us. A full layer raises
        SignalingError `layer-full`, a friend not in the room `unknown-peer`. A room
        joined already is returned as it is (`Room.move` moves it)."""
        if layer is not None and not 0 <= layer <= MAX_LAYER:
            raise ValueError(f"a layer is in 0..{MAX_LAYER}")
        if friend is not None and len(friend) != 32:
            raise ValueError("a friend is a 32-byte public key")
        key = room_key(canonical_url(url, scope), secret)
        self._pages[key] = None if secret is not None else canonical_url(url, scope)
        room = self.rooms.get(key)
        if room is None:
            self.store.page_room_joined(key, keep=self.rooms.keys())
            room = self.rooms[key] = Room(self, key)
            room.seated = asyncio.get_running_loop().create_future()
            self.mesh.join(key, layer, friend)
            self._drive()
        assert room.seated is not None
        try:
            await asyncio.wait_for(asyncio.shield(room.seated), JOIN_TIMEOUT)
        except BaseException:
            if not room.seated.done() or room.seated.exception() is not None:
                await self.leave(room)
            raise
        return room

    async def _move(self, room: Room, layer: int | None, friend: bytes | None) -> int:
        if self.rooms.get(room.key) is not room:
            raise SignalingError("not-in-room", "this room was left")
        if room.moving is not None and not room.moving.done():
            raise SignalingError("busy", "a move is on its way already")
        moving: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        room.moving = room.move_unsent = moving
        self.mesh.move(room.key, layer, friend)
        self._drive()
        joined = await asyncio.wait_for(moving, JOIN_TIMEOUT)  # a late answer: Rejoined
        return joined.layer

    async def leave(self, room: Room) -> None:
        if room.contact is not None and self.dm_rooms.get(room.contact) is room:
            del self.dm_rooms[room.contact]
            self._dm_stored[room.contact] = len(room.waiting())
        self.rooms.pop(room.key, None)
        self._pages.pop(room.key, None)
        self._update_place()
        self.mesh.leave(room.key)
        self._drive()
        await room.close()
        if self.node is not None:
            with contextlib.suppress(SignalingError):
                await self.node.leave(room.key)

    # --- the Mesh: feed it, carry out what it says ---------------------------------

    def _drive(self) -> None:
        for command in self.mesh.commands():
            try:
                self._carry_out(command)
            except Exception:  # one failed command must not stop the others
                log.exception("carrying out %r", command)
        if not self._closing:
            self._timer = _rearm(self._timer, self.mesh.get_timer(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.mesh.handle_timer(time.time())
        self._drive()

    def _carry_out(self, command: mesh.Command | mesh.Notice) -> None:
        if isinstance(command, mesh.ConnectNode):
            self._spawn(self._connect(command.url))
        elif isinstance(command, mesh.JoinRoom):
            room = self.rooms.get(command.room)
            move = None
            if room is not None:
                move, room.move_unsent = room.move_unsent, None
            self._spawn(self._join(command.room, command.layer, command.friend, move))
        elif isinstance(command, mesh.RequestIceServers):
            self._spawn(self._renew_ice_servers())
        elif isinstance(command, mesh.Offer | mesh.Answer | mesh.SendRelink | mesh.CloseLink):
            self._link_command(command)
        else:
            self._tell(command)

    def _link_command(
        self, command: mesh.Offer | mesh.Answer | mesh.SendRelink | mesh.CloseLink
    ) -> None:
        room = self.rooms.get(command.room)
        if room is None:
            return
        if isinstance(command, mesh.Offer):
            link = room.make_link(command.member, command.link)
            self._spawn(self._send_offer(room, link))
        elif isinstance(command, mesh.Answer):
            offer = self._offers.pop((command.room, command.member), None)
            if offer is not None:
                link = room.make_link(command.member, command.link)
                self._spawn(self._send_answer(room, link, offer))
        elif isinstance(command, mesh.SendRelink):
            self._spawn(self._send_relink(room, command.member))
        else:
            room.close_link(command.member, command.link)

    def _tell(self, notice: mesh.Notice) -> None:
        """What the Mesh has the application learn."""
        if isinstance(notice, mesh.NodeStatus):
            self._node_status(notice)
            return
        room = self.rooms.get(notice.room)
        if room is None:
            return
        if isinstance(notice, mesh.MemberJoined):
            room._emit(MemberJoined(notice.member))
        elif isinstance(notice, mesh.MemberLeft):
            room.transfers.member_left(notice.member)
            room._emit(MemberLeft(notice.member))
        elif isinstance(notice, mesh.LinkUp):
            room.link_up(notice.member, notice.link)
        elif isinstance(notice, mesh.LinkDown):
            room.link_down(notice.member)
        elif isinstance(notice, mesh.Unreachable):
            link = room.link(notice.link)
            why = link.failure_reason() if link is not None else "no path"
            message = f"cannot connect to {notice.member.hex()[:12]}: {why}"
            room._emit(MemberUnreachable(message, notice.member))
        else:
            log.info("refused a signal from %s: %s", notice.member.hex()[:12], notice.reason)

    def _node_status(self, status: mesh.NodeStatus) -> None:
        if status.state == "connected":
            self._connected.set()
            return
        if status.state == "returning":  # a chosen node tried while this one still serves
            return
        self._connected.clear()
        if status.state == "retrying":
            for room in self.rooms.values():
                room._emit(
                    PeerProblem(f"no signaling node reachable; retrying in {status.wait:.1f} s")
                )
            if self.on_node_problem is not None:
                tried = ", ".join(self.mesh.nodes)
                self.on_node_problem(f"no answer from {tried}; trying again in {status.wait:.0f} s")
        elif status.state == "replaced":
            message = "this identity connected from elsewhere; not reconnecting"
            for room in self.rooms.values():
                room._emit(Replaced(message))
            for room in list(self.rooms.values()):
                if room.seated is not None and not room.seated.done():
                    room.seated.set_exception(SignalingError("replaced", message))

    # --- contacts and their presence (docs/protocol.md 7) --------------------------------

    def contacts(self) -> list[Contact]:
        return self.store.contacts()

    def add_contact(self, key: bytes, petname: str, room: Room | None = None) -> Contact:
        """Keep `key` as a contact named `petname`, with the card it sent us if any, and
        (kept here only) the room and page where we met."""
        petname = petname.strip()
        if not 0 < len(petname) <= MAX_NAME:
            raise ValueError(f"a petname has 1 to {MAX_NAME} characters")
        if len(key) != 32 or key == self.identity_key:
            raise ValueError("a contact is another person's 32-byte key")
        if len(self.store.contacts()) >= MAX_CONTACTS and key not in self._contact_keys():
            raise ValueError(f"at most {MAX_CONTACTS} contacts")
        card = self.cards.get(key)
        contact = Contact(
            key,
            petname,
            card.x if card else None,
            card.sig if card else None,
            room.key if room else None,
            self._pages.get(room.key) if room else None,
            int(time.time()),
        )
        self.store.save_contact(contact)
        self._reload_contacts()
        return contact

    def rename_contact(self, key: bytes, petname: str) -> bool:
        petname = petname.strip()
        if not 0 < len(petname) <= MAX_NAME:
            raise ValueError(f"a petname has 1 to {MAX_NAME} characters")
        return self.store.rename_contact(key, petname)

    def forget_contact(self, key: bytes) -> bool:
        gone = self.store.forget_contact(key)
        self._reload_contacts()
        return gone

    def set_presence(self, mode: str) -> None:
        """Tell contacts nothing (`off`), that we are online (`on`), or also where
        (`with-room`): the page's room and our layer, never a private room's page."""
        self.presence.set_mode(mode, time.time())
        self.store.presence_mode = mode
        self._presence_due()

    async def refresh_presence(self) -> dict[bytes, PresenceNote]:
        """Publish our presence and read our contacts' now, not at the next refresh."""
        self.presence.due_now()
        self.presence.handle_timer(time.time())
        await self._carry_out_presence(self.presence.commands())
        return self.contacts_online()

    def contacts_online(self) -> dict[bytes, PresenceNote]:
        """Contacts online now, with where they are when they said."""
        return self.presence.online(time.time())

    def card_received(self, card: ContactCard, giver: bytes | None = None) -> None:
        """A card that verified, from the link of member `giver` (7.1). A link gives the
        card of the person it speaks for now: its earlier one, of another person, goes
        (unless another link gave it since), so one member cycling made-up identities
        keeps one card here and pushes out nobody else's."""
        if giver is not None:
            before = self._cards_given.pop(giver, None)
            if before not in (None, card.key) and self._card_givers.get(before) == giver:
                self.cards.pop(before, None)
                self._card_givers.pop(before, None)
            self._cards_given[giver] = card.key
            self._card_givers[card.key] = giver
            while len(self._cards_given) > MAX_CARDS:
                del self._cards_given[next(iter(self._cards_given))]
        self.cards.pop(card.key, None)
        self.cards[card.key] = card
        while len(self.cards) > MAX_CARDS:
            gone = next(iter(self.cards))
            del self.cards[gone]
            self._card_givers.pop(gone, None)
        for contact in self.store.contacts():
            if contact.key == card.key and (contact.x, contact.card_sig) != (card.x, card.sig):
                self.store.save_contact(Contact(card.key, contact.petname, card.x, card.sig))
                self._reload_contacts()

    def _contact_keys(self) -> set[bytes]:
        return {c.key for c in self.store.contacts()}

    def _reload_contacts(self) -> None:
        cards: dict[bytes, ContactCard | None] = {}
        for c in self.store.contacts():
            cards[c.key] = (
                ContactCard(c.key, c.x, c.card_sig)
                if c.x is not None and c.card_sig is not None
                else None
            )
        self.presence.set_contacts(cards)
        if self._presence_timer is not None:
            self._presence_due()

    def _update_place(self) -> None:
        key = self._place_room
        room = self.rooms.get(key) if key is not None else None
        if room is not None and room.contact is not None:
            room = None  # a DM room is nobody's place (7.4)
        pages = [r for r in self.rooms.values() if r.contact is None]
        if room is None and pages:
            room = pages[-1]
        node = self.node
        if room is None or node is None:
            self.presence.set_place(None)
        else:
            page = self._pages.get(room.key)
            self.presence.set_place(Place(room.key, room.layer, page, node.node_url or None))
        if self._presence_timer is not None:
            self._presence_due()

    def _presence_due(self) -> None:
        """Run the presence book's due work now, then re-arm its one timer."""
        if self._closing:
            return
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        now = time.time()
        self.presence.handle_timer(now)
        commands = self.presence.commands()
        if commands:
            self._spawn(self._carry_out_presence(commands))
        deadline = self.presence.get_timer()
        loop = asyncio.get_running_loop()
        delay = 30.0 if deadline is None else max(0.05, deadline - now)
        self._presence_timer = loop.call_later(delay, self._presence_due)

    async def _carry_out_presence(self, commands: list[PutPresence | GetPresence]) -> None:
        async with self._presence_turn:
            await self._presence_requests(commands)

    async def _presence_requests(self, commands: list[PutPresence | GetPresence]) -> None:
        node = self.node
        if node is None:
            return
        for command in commands:
            if not self._record_pace.take(time.time()):
                # Under a token: one is back within 1 / RECORD_RATE seconds.
                await asyncio.sleep(1.0 / RECORD_RATE)
                self._record_pace.take(time.time())
            if self.node is not node:
                return  # another node now: the next round goes there
            try:
                if isinstance(command, PutPresence):
                    await node.put_record(command.record)
                else:
                    record = await node.get_record(command.key, command.publisher)
                    self.presence.found(command.contact, command.epoch, record, time.time())
            except (SignalingError, TimeoutError) as exc:
                log.info("presence: %s", exc)  # the next round tries again
                if isinstance(exc, SignalingError) and exc.code == "unknown-type":
                    return  # a node from before 7.3: nothing more to try there

    async def _say_offline(self) -> None:
        """Tell contacts we left, at once, rather than let our notes expire (7.2)."""
        self.presence.going_offline(time.time())
        commands = self.presence.commands()
        if commands and self.node is not None:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._carry_out_presence(commands), 3.0)

    # --- direct messages (docs/protocol.md 7.4) ------------------------------------------

    def dm_room_key(self, contact: bytes) -> bytes | None:
        """The DM room with `contact` (None before we hold their contact card)."""
        secret = self.presence.secret_with(contact)
        if secret is None:
            return None
        known = self._dm_keys.get(contact)
        if known is None or known[0] != secret:
            known = self._dm_keys[contact] = (secret, dm_room(secret))
        return known[1]

    def revocation_heard(self, revocation: Revocation, sender: bytes) -> None:
        """A member showed a revocation in one room (5.3): it holds in every room we are
        in, and in those we open later; a device it takes away is its own person there."""
        self.heard_revocations.revoke(revocation, sender)
        for room in self.rooms.values():
            if room.devices.revoke(revocation, sender):
                room._emit(Revoked(revocation.device, revocation.identity))

    def device_identity(self, key: bytes) -> bytes | None:
        """The person a member key is a checked device of, in any room we are in."""
        for room in self.rooms.values():
            person = room.person_of(key)
            if person != key:
                return person
        return None

    def _considers(self, room_key_: bytes, key: bytes) -> bool:
        room = self.rooms.get(room_key_)
        return room is None or room.consider(key)

    async def open_dm(self, contact: bytes, keep: bool = True) -> Room:
        """Join the DM room with `contact` (a contact whose card we hold). `keep`: stay in
        it whatever presence says, until `close_dm`. Messages said there while the contact
        is away wait in our store and go when they are both online (7.4)."""
        key = self.dm_room_key(contact)
        if key is None:
            raise ValueError("no contact card from them yet: meet them in a room once more")
        if keep:
            self._dm_kept.add(contact)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(self, key)
            room.contact = contact
            room.dm_acked = self.store.dm_acked(key)
            self._pages[key] = None
            self.dm_rooms[contact] = room
            room.seated = asyncio.get_running_loop().create_future()
            self.mesh.join(key, None, None)
            self._drive()
            with contextlib.suppress(asyncio.QueueFull):
                self.dm_opened.put_nowait(room)
        assert room.seated is not None
        try:
            await asyncio.wait_for(asyncio.shield(room.seated), JOIN_TIMEOUT)
        except BaseException:
            if not room.seated.done() or room.seated.exception() is not None:
                await self.close_dm(contact)
            raise
        return room

    async def close_dm(self, contact: bytes) -> None:
        """Leave the DM room with `contact` (what waits there stays in the store)."""
        self._dm_kept.discard(contact)
        room = self.dm_rooms.pop(contact, None)
        if room is not None:
            await self.leave(room)

    def dm_waiting(self, contact: bytes) -> list[Envelope]:
        """Our messages to `contact` not acknowledged yet, from the store if the room is
        not joined: what waits for them to come online."""
        room = self.dm_rooms.get(contact)
        if room is not None:
            return room.waiting()
        key = self.dm_room_key(contact)
        if key is None:
            return []
        acked = self.store.dm_acked(key)
        return [
            e
            for e in self.store.history(key, self.config.room.history_count)
            if e.author == self.public_key and e.seq > acked
        ]

    def _dm_waiting_count(self, contact: bytes) -> int:
        room = self.dm_rooms.get(contact)
        if room is not None:
            return len(room.waiting())
        if contact not in self._dm_stored:
            self._dm_stored[contact] = len(self.dm_waiting(contact))
        return self._dm_stored[contact]

    def _dm_due(self) -> None:
        """Soon: look again at which DM rooms to be in (presence and acks changed)."""
        if self._closing:
            return
        if self._dm_timer is not None:
            self._dm_timer.cancel()
        self._dm_timer = asyncio.get_running_loop().call_later(0, self._dm_tick)

    def _dm_tick(self) -> None:
        """Which DM rooms to be in, from what presence says now; who to knock for."""
        self._dm_timer = None
        if self._closing:
            return
        now = time.time()
        contacts = [c.key for c in self.store.contacts() if self.dm_room_key(c.key) is not None]
        waiting = frozenset(c for c in contacts if self._dm_waiting_count(c))
        if self.presence.set_knocks(waiting) and self._presence_timer is not None:
            self._presence_due()  # the notes for these contacts say `dm` from now
        decided = dm_plan(
            contacts,
            self.presence.online(now),
            waiting,
            self.presence.knocking(now),
            self._dm_kept,
            list(self.dm_rooms),
            [c for c, room in self.dm_rooms.items() if room.contact_linked()],
        )
        for contact in decided.leave:
            if contact not in self._dm_kept:
                self._spawn(self.close_dm(contact))
        for contact in decided.join:
            self._spawn(self._open_dm_quietly(contact))
        self._dm_timer = asyncio.get_running_loop().call_later(DM_TICK, self._dm_tick)

    async def _open_dm_quietly(self, contact: bytes) -> None:
        try:
            await self.open_dm(contact, keep=False)
        except (SignalingError, TimeoutError, ValueError) as exc:
            log.info("DM room: %s", exc)  # the next tick tries again

    # --- the signaling node ------------------------------------------------------------

    async def _connect(self, url: str) -> None:
        try:
            client = await SignalingClient.connect(url, self.signing_key, self.store.name)
        except (SignalingError, OSError, TimeoutError) as exc:
            if isinstance(exc, SignalingError) and exc.code == ErrorCode.TOO_OLD:
                log.warning("node %s: %s", url, exc)  # a person has to act: said, not hidden
            else:
                log.info("node %s unreachable: %s", url, exc)
            self.mesh.node_failed(url, time.time())
            self._drive()
            return
        client.tell_named = self.config.early_offers
        if self._closing or not self.mesh.wants(url):  # closed, or the Mesh moved on
            await client.close()
            return
        previous, self.node = self.node, client
        if previous is not None:
            self._spawn(previous.close())
        self.mesh.node_connected(url, list(client.nodes), time.time())
        self._drive()
        self._spawn(self._read_node(client, url))

    async def _join(
        self,
        key: bytes,
        layer: int | None,
        friend: bytes | None,
        move: asyncio.Future[Joined] | None,
    ) -> None:
        """Carry out a JoinRoom: a first join, a rejoin, or the join of `move`."""
        room, node = self.rooms.get(key), self.node
        if room is None or room.seated is None or node is None:
            if move is not None and not move.done():
                move.set_exception(SignalingError("closed", "no signaling node at the moment"))
            return
        try:
            joined = await node.join(key, layer, friend)
        except SignalingError as exc:
            if self.node is not node and move is None:
                return  # a node left meanwhile: the current one seats us
            self._join_refused(room, exc, move)
            return
        if self.rooms.get(key) is not room:
            return
        first = not room.seated.done()
        room.layer, room.layers, room.total = joined.layer, joined.layers, joined.total
        self._use_ice_servers(joined.ice_servers, node)
        room.hidden = {m.key: joined.layer for m in joined.members if m.key in self.blocked}
        members = [m.key for m in joined.members if m.key not in self.blocked]
        if room.contact is not None:  # a DM room: the contact's keys only (7.4)
            members = [k for k in members if room.consider(k)]
        self.mesh.learn_nodes([member.url for member in joined.members])  # more to fail over to
        self.mesh.joined(key, joined.layer, members, _expiry(joined.ice_servers), time.time())
        if room.contact is None:  # a DM room is nobody's place (7.4)
            self._place_room = key
        self._update_place()
        if first:
            room.seated.set_result(joined)
        elif move is not None and not move.done():
            move.set_result(joined)
            room._emit(Moved(joined.layer, joined.layers, joined.total))
        else:
            room._emit(Rejoined(node.node_url, joined.layer))
        self._drive()

    def _join_refused(
        self, room: Room, exc: SignalingError, move: asyncio.Future[Joined] | None
    ) -> None:
        """A first join fails `Peer.join`; a refused move fails `Room.move` and the Mesh
        asks for the old seat again; a refused rejoin is told (docs/protocol.md 3.5)."""
        assert room.seated is not None
        if not room.seated.done():
            room.seated.set_exception(exc)
            return
        if self.rooms.get(room.key) is not room:
            return
        if move is not None and not move.done():
            move.set_exception(exc)
        elif move is None:
            room._emit(PeerProblem(f"rejoin failed: {exc}"))
        self.mesh.join_refused(room.key, exc.code == "layer-full")
        self._drive()

    async def _renew_ice_servers(self) -> None:
        if self.node is None:
            return
        try:
            servers = await self.node.ice_servers()
        except SignalingError as exc:
            log.info("could not renew ICE servers: %s", exc)
            return
        self._use_ice_servers(servers, self.node)
        self.mesh.ice_servers(_expiry(servers), time.time())
        self._drive()

    async def _ice_servers_of(self, node: SignalingClient) -> None:
        """This node's ICE servers: from its welcome (5.0), else asked once (an early
        offer's link needs its TURN servers as much as one made after `joined`, which
        carries them)."""
        if self._ice_from is node:
            return
        if node.welcome_ice_servers is not None:
            self._use_ice_servers(node.welcome_ice_servers, node)
            self.mesh.ice_servers(_expiry(node.welcome_ice_servers), time.time())
            return
        if self._ice_asked is None or self._ice_asked[0] is not node:
            self._ice_asked = (node, asyncio.create_task(self._ask_ice_servers(node)))
        await asyncio.shield(self._ice_asked[1])

    async def _ask_ice_servers(self, node: SignalingClient) -> None:
        try:
            servers = await node.ice_servers()
        except SignalingError as exc:
            log.info("could not get ICE servers: %s", exc)
            return
        if self.node is node and self._ice_from is not node:
            self._use_ice_servers(servers, node)
            self.mesh.ice_servers(_expiry(servers), time.time())

    def _use_ice_servers(self, servers: tuple[IceServer, ...], node: SignalingClient) -> None:
        """New links use `servers`, which came from `node`."""
        self.ice_servers = [server.to_json() for server in servers]
        self._ice_from = node

    async def _read_node(self, node: SignalingClient, url: str) -> None:
        code: int | None = None
        async for event in node.events():
            now = time.time()
            if isinstance(event, SignalFrom):
                self._on_signal(event, now)
            elif isinstance(event, PeerJoined):
                self.mesh.learn_nodes([event.url])
                if event.key in self.blocked:
                    self._hide(event.room, event.key, event.layer)
                elif not self._considers(event.room, event.key):
                    pass  # a DM room: not the contact, and no probation (7.4)
                else:
                    self.mesh.peer_joined(event.room, event.key, now, event.layer)
            elif isinstance(event, Named):  # a join under way, signed (2.5.3)
                self._spawn(self._named(node, event))
            elif isinstance(event, PeerLeft):
                if (room := self.rooms.get(event.room)) is not None:
                    room.hidden.pop(event.key, None)
                self.mesh.peer_left(event.room, event.key, event.layer)
            elif isinstance(event, Moving):
                self.mesh.moving(list(event.nodes))
            elif isinstance(event, ErrorFrame | BadNodeFrame):
                log.info("node said %s: %s", event.code, event.message)
            elif isinstance(event, Closed):
                code = event.code
            self._drive()
        if self.node is node and not self._closing:
            self.mesh.node_lost(url, code, time.time())
            self._drive()

    # --- blocks and mutes (docs/protocol.md 5.4) ----------------------------------------

    def _load_blocks(self) -> None:
        """Blocks and mutes as stored, and the two sets every frame is checked against:
        the keys stored and the devices remembered for them (a person, 5.4)."""
        self.blocks = self.store.blocks()
        mine = (self.public_key, self.identity_key)
        found = {**self.store.block_devices(), **self._unkept_devices}
        self.block_devices = {d: i for d, i in found.items() if i in self.blocks and d not in mine}
        for level in (BLOCK, MUTE):
            keys = {k for k, e in self.blocks.items() if e.level == level}
            keys |= {d for d, i in self.block_devices.items() if i in keys}
            setattr(self, "blocked" if level == BLOCK else "muted", frozenset(keys))

    def person_blocked(self, key: bytes) -> bytes | None:
        """The stored entry that catches `key` (itself, or the person it is a remembered
        device of), if `key` is blocked or muted."""
        if key in self.blocks:
            return key
        return self.block_devices.get(key)

    def _devices_of(self, identity: bytes) -> set[bytes]:
        """The keys that showed us a valid delegation from `identity`, in any room."""
        found: set[bytes] = set()
        for room in self.rooms.values():
            for key in room.members | set(room.links) | set(room.hidden):
                if key != identity and room.person_of(key) == identity:
                    found.add(key)
        return found - {self.public_key}

    def _remember_devices(self, identity: bytes, devices: Iterable[bytes]) -> None:
        for device in devices:
            if not self.store.set_block_device(device, identity):
                log.warning("too many devices of blocked people kept; %s only until we stop",
                            device.hex()[:12])  # fmt: skip
                self._unkept_devices[device] = identity
                while len(self._unkept_devices) > MAX_BLOCKS:  # bounded: the oldest goes
                    del self._unkept_devices[next(iter(self._unkept_devices))]
        self._load_blocks()

    def _close_blocked(self, keys: Iterable[bytes]) -> None:
        """Keys just blocked: their links close, the Mesh forgets them as members, the
        messaging cores stop delivering them."""
        for room in self.rooms.values():
            for key in keys:
                room.core.block(key)
                room.flood_muted.discard(key)
                state = self.mesh.rooms.get(room.key)
                if state is not None and key in state.members:
                    self._hide(room.key, key, room.layer)
                    self.mesh.peer_left(room.key, key)
            room._service()
        self._drive()

    def block(self, key: bytes, label: str = "") -> None:
        """Block `key` everywhere, stored: its links close, the Mesh forgets it as a
        member, the messaging cores stop delivering it. Nothing is sent to it. `key` is a
        person: every device that showed us a delegation from it, now or later, is
        blocked with it (docs/protocol.md 5.4)."""
        if key in (self.public_key, self.identity_key):
            raise ValueError("one cannot block oneself")
        self.store.set_block(key, BLOCK, label, int(time.time()))
        self._remember_devices(key, self._devices_of(key))
        self._close_blocked({key} | {d for d, i in self.block_devices.items() if i == key})

    def _release(self, key: bytes) -> set[bytes]:
        """Forget the devices remembered for `key`; the keys it caught."""
        caught = {key} | {d for d, i in self.block_devices.items() if i == key}
        self.store.clear_block_devices(key)
        for device in caught:
            self._unkept_devices.pop(device, None)
        return caught

    def unblock(self, key: bytes) -> bool:
        """Undo `block` (of `key`, or of the person `key` is a remembered device of): its
        keys are members again where the node lists them."""
        key = self.person_blocked(key) or key
        if not self.store.clear_block(key, BLOCK):
            return False
        caught = self._release(key)
        self._load_blocks()
        now = time.time()
        for room in self.rooms.values():
            for each in caught:
                room.core.unblock(each)
                if each in room.hidden:
                    self.mesh.peer_joined(room.key, each, now, room.hidden.pop(each))
        self._drive()
        return True

    def mute(self, key: bytes, label: str = "") -> None:
        """Mute `key` everywhere, stored (a block of it becomes a mute); a person, as
        `block`."""
        if key in self.blocked:
            self.unblock(key)
        self.store.set_block(key, MUTE, label, int(time.time()))
        self._remember_devices(key, self._devices_of(key))

    def unmute(self, key: bytes) -> bool:
        key = self.person_blocked(key) or key
        found = self.store.clear_block(key, MUTE)
        if found:
            self._release(key)
        self._load_blocks()
        return found

    def device_seen(self, device: bytes, identity: bytes) -> bool:
        """A member showed a valid delegation from `identity` (5.3). If that person is
        blocked or muted the device is too, remembered; True if it is now blocked (its
        link closes, what it said is no longer shown)."""
        entry = self.blocks.get(identity)
        if entry is None or device in (self.public_key, self.identity_key):
            return False
        if self.block_devices.get(device) != identity:
            self._remember_devices(identity, [device])
        if entry.level != BLOCK:
            return False
        self._close_blocked([device])
        return True

    async def _named(self, node: SignalingClient, event: Named) -> None:
        """Members a first join under way named (2.5.3): offered to at once, admitted by
        the rules `joined` uses (blocked keys never, a DM room the contact's keys only;
        probation and devices when the link opens). `joined` lets go of any it does not
        list."""
        room = self.rooms.get(event.room)
        if not self.config.early_offers or room is None or room.seated is None:
            return
        if room.seated.done():
            return  # the Mesh would refuse it too: no first join under way
        await self._ice_servers_of(node)  # as `joined` would bring them
        if self.node is not node or self.rooms.get(event.room) is not room:
            return
        members = [
            m.key for m in event.members if m.key not in self.blocked and room.consider(m.key)
        ]
        self.mesh.learn_nodes([member.url for member in event.members])
        self.mesh.named(event.room, members, time.time())
        self._drive()

    def _hide(self, room_key: bytes, key: bytes, layer: int | None) -> None:
        """A blocked key the node lists in a room: remembered, never a member."""
        room = self.rooms.get(room_key)
        if room is not None and len(room.hidden) < self.mesh.config.max_members:
            room.hidden[key] = layer

    # --- signals: verified here, decided by the Mesh ------------------------------------

    def _on_signal(self, event: SignalFrom, now: float) -> None:
        if event.sender in self.blocked:
            self.refused_blocked += 1  # unanswered: to it we are unreachable
            return
        room = self.rooms.get(event.room)
        payload = event.payload
        kind = payload.get("t") if isinstance(payload, dict) else None
        if room is None or kind not in ("sdp", "relink"):
            return
        if not room.consider(event.sender, listed=False):
            return  # a DM room: unanswered, like a block (7.4)
        try:
            desc = parse_description(payload.get("desc"))
            if (desc.kind == RELINK) != (kind == "relink"):
                raise DescriptionRejected("a relink must be signed as a relink")
            verify_description(
                desc, room.key, event.sender, self.public_key, now, verify_signature, self._replays
            )
        except DescriptionRejected as exc:
            room._emit(PeerProblem(f"refused a description from {event.sender.hex()[:12]}: {exc}"))
            return
        if desc.kind == "offer":
            self._offers[(room.key, event.sender)] = desc
            self.mesh.offer_received(room.key, event.sender, now)
            self._drive()  # an Answer takes the offer now
            self._offers.pop((room.key, event.sender), None)  # not taken: refused, or glare
        elif desc.kind == RELINK:
            self.mesh.relink_received(room.key, event.sender, now)
        elif (pending := room.awaiting_answer(event.sender)) is not None:
            link_id, link = pending
            self._spawn(self._accept_answer(room, link_id, link, desc))

    async def _send_offer(self, room: Room, link: PeerLink) -> None:
        with _unless_closed(link):
            desc = await link.offer(time.time())
            await self._signal(room, link.member, {"t": "sdp", "desc": desc.to_json()})

    async def _send_answer(self, room: Room, link: PeerLink, offer: SignedDescription) -> None:
        with _unless_closed(link):
            answer = await link.answer(offer, time.time())
            await self._signal(room, link.member, {"t": "sdp", "desc": answer.to_json()})

    async def _accept_answer(
        self, room: Room, link_id: int, link: PeerLink, answer: SignedDescription
    ) -> None:
        await link.accept_answer(answer)
        self.mesh.answered(room.key, link.member, link_id)
        self._drive()

    async def _send_relink(self, room: Room, member: bytes) -> None:
        nonce = os.urandom(NONCE_BYTES)
        desc = sign_description(
            RELINK, "", room.key, self.public_key, member, nonce, time.time(), self.sign
        )
        await self._signal(room, member, {"t": "relink", "desc": desc.to_json()})

    async def _signal(self, room: Room, member: bytes, payload: dict[str, Any]) -> None:
        node = self.node
        if node is None:
            return  # the Mesh retries once a node is back
        try:
            await node.signal(member, payload, room.key)
        except SignalingError as exc:
            room._emit(PeerProblem(f"cannot signal {member.hex()[:12]}: {exc}"))

    # --- links -----------------------------------------------------------------------

    def link_changed(self, room: Room, link_id: int, link: PeerLink) -> None:
        if room.link(link_id) is not link:
            return
        now = time.time()
        if link.open:
            pair = link.selected_pair()
            relayed = pair is not None and pair[0] == "relay"
            self.mesh.link_open(room.key, link.member, link_id, relayed, now)
        elif link.failed or link.ever_open:
            ice_failed = link.pc.connectionState == "failed" and not link.ever_open
            self.mesh.link_failed(room.key, link.member, link_id, ice_failed, now)
        self._drive()


@contextlib.contextmanager
def _unless_closed(link: PeerLink) -> Iterator[None]:
    """Describing a link the Mesh has meanwhile closed fails in aiortc: that is no error."""
    try:
        yield
    except Exception:
        if not link.closed:
            raise


def _expiry(servers: tuple[IceServer, ...]) -> float | None:
    """When the first of these credentials expires (None: none expire)."""
    times = [s.expires_at for s in servers if s.expires_at is not None]
    return float(min(times)) if times else None


def revoke_frame(revocation: Revocation) -> dict[str, Any]:
    """The control frame that shows a revocation (5.3)."""
    return {"t": "revoke", "cert": serialize_revocation(revocation).hex()}


def load_device_cert(data_dir: Path, device: bytes) -> Delegation | None:
    """The delegation adopted for `device` (`device.cert`, hex), if it is one for this
    device key, well signed and not expired; else None (the caller then issues its own)."""
    try:
        text = (data_dir / DEVICE_CERT_FILE).read_text("ascii")[: 2 * MAX_BYTES + 2].strip()
        return check_delegation(
            bytes.fromhex(text), device, int(time.time() * 1000), verify_signature
        )
    except (FileNotFoundError, UnicodeDecodeError, ValueError, DelegationError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("%s is not a delegation for this device: %s", DEVICE_CERT_FILE, exc)
        return None


def load_revocations(data_dir: Path, identity: bytes) -> list[Revocation]:
    """The revocations `identity` issued, from `data_dir/revoked`; any record that is not
    one of them (another identity's, damaged) is skipped."""
    try:
        data = (data_dir / REVOKED_FILE).read_bytes()[: MAX_OWN_REVOCATIONS * REVOCATION_BYTES]
    except FileNotFoundError:
        return []
    kept = []
    for at in range(0, len(data) - REVOCATION_BYTES + 1, REVOCATION_BYTES):
        try:
            revocation = parse_revocation(data[at : at + REVOCATION_BYTES], verify_signature)
        except DelegationError:
            continue
        if revocation.identity == identity:
            kept.append(revocation)
    return kept


def save_revocations(data_dir: Path, revocations: list[Revocation]) -> None:
    """`revocations` in `data_dir/revoked`, mode 0600, written beside it then renamed."""
    path = data_dir / REVOKED_FILE
    temporary = path.with_name(f".{REVOKED_FILE}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"".join(serialize_revocation(r) for r in revocations))
    os.replace(temporary, path)


def _rearm(
    timer: asyncio.TimerHandle | None, deadline: float | None, callback: Any
) -> asyncio.TimerHandle | None:
    """One timer per core: cancel the old one, arm one for `deadline` (wall clock)."""
    if timer is not None:
        timer.cancel()
    if deadline is None:
        return None
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time() + max(0.0, deadline - time.time()), callback)
