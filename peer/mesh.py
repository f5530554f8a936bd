"""A peer's links and its signaling node, as a core with no I/O (docs/protocol.md 5.0).

`Mesh` decides, for one identity, which signaling node to talk to and which
WebRTC link to open to which room member, when, and who offers. The glue
(`peer/peer.py` in Python, `signaling/web/js/peer.js` in the browser, which
runs `mesh.js`, this module's twin) tells it what happened: a node
connected or lost, a join answered, a member joined or left, a verified
offer or relink arrived, a link opened or failed, fresh ICE servers came;
and the time. It answers with commands (`commands()`): connect to that node,
join that room, offer to that member on link 7, answer on link 8, send a
relink, close link 6, ask for ICE servers, tell the application this. And
`get_timer()` / `handle_timer(now)`. Randomness (backoff jitter) comes from
an injected `rng() -> [0, 1)`, so tests and the differential test with the
JS twin run on virtual time with one random sequence.

The rules, and who they constrain:

- Members come only from the node (`joined`, `peer_joined`, and `named`: the
  members a first join under way names once we signed, docs/protocol.md
  2.5.3): an offer or a relink from a key the node has not seated in our
  layer is refused and counted, never a reason to add a member (a stranger
  cannot reach us).
- Who offers: the newcomer offers to every member in its `joined`, and to
  those named before it at once; `joined` offers to no one twice and lets go
  of a named member it does not list, open link or not. A
  member heard of through `peer_joined` waits `offer_grace` for that offer;
  then the lower key offers and the higher key sends a signed `relink`.
  Glare (both offered): the lower key's offer wins.
- A failed link, or one not open `connect_timeout` after it was made, is
  given up and offered again the same way, after exponential backoff with
  full jitter; the application is told once that the member is unreachable.
- Make before break: an offer or relink for a link that is open does not
  close it. A spare link is negotiated beside it and replaces it only once
  its own data channel is open; if the spare fails, the old link stays. So
  no signal alone ever closes an open link, and a member cannot make us
  open connections without bound: offers and relinks per member are
  rate-limited (a token bucket), and a member has at most one spare.
- Fail-over: one node at a time; on a lost connection, the other known
  nodes first, then rounds with exponential backoff and full jitter. A
  connection closed because the same identity connected elsewhere (4001)
  is not retried: two processes with one key would replace each other in
  a loop. Node lists (`welcome`, `moving`) are deduplicated and bounded.
- Membership is reconciled on every (re)join: a member no longer in the
  layer, and with no open link to us, is removed with `MemberLeft`.
- Moving (docs/protocol.md 3.2: a `join` while seated, for another layer or
  beside a friend's key): the links stay until the node answers. A `joined`
  in another layer than our seat means the old layer's members are no longer
  ours: every one of them is let go, open link or not, and we offer to the
  new layer's members as a newcomer does. A refused move asks for the old
  seat again (the node may have let it go before refusing); a rejoin refused
  because our layer filled up while we were away sits wherever the node
  places us. A `peer_joined` or `peer_left` for a layer we neither sit in nor
  asked for was sent before a move and is ignored (a member who moved with us
  is not lost to its old layer's `peer_left`). Fail-over rejoins the layer we
  sit in.
- TURN credentials are renewed before they expire: `RequestIceServers` at
  half their life, and at most `renew_before` before expiry; new links use
  the fresh ones. A relayed link whose own credentials are about to expire
  is replaced (make before break) in case its relay checks expiry on every
  request; a relay that follows the REST convention keeps it alive anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from signaling.protocol import TokenBucket

Rng = Callable[[], float]

MAX_NODES = 64
"""Node URLs remembered for fail-over (bootstrap list, welcome and moving lists)."""
CLOSE_REPLACED = 4001
MAX_DOUBLINGS = 32
"""Backoff stops doubling here (any cap is reached long before; 2**1024 would overflow)."""
RETRY_ICE_AFTER = 30.0
"""An `ice-servers` request not answered this long ago is asked again."""


@dataclass(frozen=True, slots=True)
class MeshConfig:
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    """Fail-over rounds over the node list: full jitter up to base * 2^round, capped."""
    relink_base: float = 0.5
    relink_cap: float = 10.0
    """Re-offering a failed link: full jitter up to base * 2^attempt, capped."""
    offer_grace: float = 1.0
    """How long a member waits for a newcomer's offer before the keys decide who offers."""
    connect_timeout: float = 30.0
    """A link not open this long after it was made is given up (aioice's own checks
    retransmit for about a minute before ICE fails)."""
    renew_before: float = 300.0
    """Fetch fresh ICE credentials this long before they expire (or at half their life)."""
    max_members: int = 256
    """Members kept per room: a node that lists more (a rogue one) gets the first ones."""
    offers_per_second: float = 0.5
    offer_burst: float = 4.0
    """Offers and relinks taken from one member: a rogue member cannot make us build
    connections without bound."""
    return_after: float = 60.0
    return_cap: float = 960.0
    """Connected to a node the person did not choose (one learned from the mesh, after
    theirs failed), try theirs again this long after, doubling per failed try, capped:
    nodes learned are a fall-back, not a new home."""


# --- commands: what the glue does ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectNode:
    url: str


@dataclass(frozen=True, slots=True)
class JoinRoom:
    """Join `room` (or, seated, move): in `layer`, else beside `friend`'s key, else
    where the node places us."""

    room: bytes
    layer: int | None
    friend: bytes | None = None


@dataclass(frozen=True, slots=True)
class RequestIceServers:
    pass


@dataclass(frozen=True, slots=True)
class Offer:
    """Make link `link` to `member` and signal a signed offer."""

    room: bytes
    member: bytes
    link: int


@dataclass(frozen=True, slots=True)
class Answer:
    """Make link `link` from the offer just received from `member`, and signal the answer."""

    room: bytes
    member: bytes
    link: int


@dataclass(frozen=True, slots=True)
class SendRelink:
    """Signal `member` a signed relink: "offer me a (new) link"."""

    room: bytes
    member: bytes


@dataclass(frozen=True, slots=True)
class CloseLink:
    room: bytes
    member: bytes
    link: int


# --- what the application learns -------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberJoined:
    room: bytes
    member: bytes


@dataclass(frozen=True, slots=True)
class MemberLeft:
    room: bytes
    member: bytes


@dataclass(frozen=True, slots=True)
class LinkUp:
    """`link` to `member` is open (a first link, a relink, or a spare taking over)."""

    room: bytes
    member: bytes
    link: int


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The open link to `member` is gone; messages wait for the next one."""

    room: bytes
    member: bytes
    link: int


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No link to `member` could be made (told once, until one opens)."""

    room: bytes
    member: bytes
    link: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A signal from `member` was not acted on: not a member, or too many."""

    room: bytes
    member: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Where the signaling connection stands: connecting, connected, lost, retrying,
    replaced; or returning (a chosen node tried while still connected elsewhere)."""

    state: str
    url: str
    wait: float = 0.0


Command = ConnectNode | JoinRoom | RequestIceServers | Offer | Answer | SendRelink | CloseLink
Notice = MemberJoined | MemberLeft | LinkUp | LinkDown | Unreachable | Refused | NodeStatus


# --- state -----------------------------------------------------------------------


class NodeState(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"
    REPLACED = "replaced"
    CLOSED = "closed"


@dataclass(slots=True)
class _Link:
    id: int
    offered: bool
    """We made the offer (else we answered one)."""
    created: float
    credentials_expire: float | None
    open: bool = False
    answered: bool = False
    """For an offer: the answer was applied (no longer a glare candidate)."""
    relayed: bool = False
    renewed_at: float | None = None
    """When a spare was last asked for, before this link's credentials expire."""


@dataclass(slots=True)
class _Member:
    offers: TokenBucket
    link: _Link | None = None
    spare: _Link | None = None
    attempts: int = 0
    retry_at: float | None = None
    """When to try again (grace, backoff): the lower key offers, the higher relinks."""
    reported: bool = False
    trying_since: float | None = None
    """When we started trying to connect (no link open since): the application hears
    `connect_timeout` after this, however many links were tried meanwhile."""
    unlisted: bool = False
    """Missing from the last `joined`, kept only for its open link: gone when it drops."""
    named: bool = False
    """Named by a join under way (2.5.3) and not yet listed by its `joined`: let go, open
    link or not, if the `joined` does not list it."""


@dataclass(slots=True)
class _Room:
    layer: int | None = None
    """The layer a (re)join asks for: the one asked at first or by a move, else our seat."""
    friend: bytes | None = None
    """A join or move asked to sit beside this key (until the node answers)."""
    seat: int | None = None
    """The layer the node last seated us in (None: never seated yet)."""
    seated: bool = False
    moving: bool = False
    """A move was asked and not answered yet."""
    members: dict[bytes, _Member] = field(default_factory=dict)


class Mesh:
    """Node fail-over and room links of one identity; see the module docstring."""

    def __init__(
        self, key: bytes, nodes: list[str], config: MeshConfig, rng: Rng, now: float
    ) -> None:
        if not nodes:
            raise ValueError("a peer needs at least one signaling node URL")
        self.key = key
        self.config = config
        self._rng = rng
        self.nodes: list[str] = []
        self.learn_nodes(nodes)
        self.chosen = list(self.nodes)
        """The nodes given at the start (the person's): the ones to return to."""
        self.state = NodeState.IDLE
        self.node: str | None = None
        self.returning: str | None = None
        """A chosen node being tried while connected to a learned one (`return_after`)."""
        self._return_at: float | None = None
        self._return_tries = 0
        """Returns that failed in a row: a chosen node that refused us, or that dropped us
        within `return_after` of its welcome (one that accepts and drops would otherwise
        pull the rooms back and forth every `return_after`)."""
        self._chosen_since: float | None = None
        """When the chosen node we are connected to welcomed us."""
        self._returned = False
        """Whether that welcome was a return (from a learned node)."""
        self._tried: set[str] = set()
        self._round = 0
        self._wait_until: float | None = None
        self.rooms: dict[bytes, _Room] = {}
        self._next_link = 0
        self._ice_expires: float | None = None
        self._ice_renew_at: float | None = None
        self._ice_asked: float | None = None
        """When fresh ICE servers were last asked for (None: not waiting for any)."""
        self._out: list[Command | Notice] = []
        self.counters: dict[str, int] = {}

    # --- output ------------------------------------------------------------------

    def commands(self) -> list[Command | Notice]:
        out, self._out = self._out, []
        return out

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # --- the signaling node ------------------------------------------------------

    def start(self, now: float) -> None:
        if self.state is NodeState.IDLE:
            self._connect_next(now)

    def close(self) -> None:
        self.state = NodeState.CLOSED
        for room in list(self.rooms):
            self.leave(room)

    def wants(self, url: str) -> bool:
        """Whether a connection to `url` that reached its welcome is to be taken (the
        glue closes any other: asked for before the core moved on)."""
        if self.state is NodeState.CONNECTING:
            return url == self.node
        return self.state is NodeState.CONNECTED and url == self.returning

    def node_connected(self, url: str, learned: list[str], now: float) -> None:
        if not self.wants(url):
            return
        self._returned = self.state is NodeState.CONNECTED
        if self._returned:  # back at a chosen node: the rooms move there
            for room in self.rooms.values():
                room.seated = False
        self.state = NodeState.CONNECTED
        self.node = url
        self.returning = None
        self._round = 0
        self._tried.clear()
        self.learn_nodes(learned)
        if url in self.chosen:
            self._chosen_since, self._return_at = now, None
        else:
            config = self.config
            wait = _backoff(config.return_after, config.return_cap, self._return_tries)
            self._return_at = now + wait
        self._out.append(NodeStatus("connected", url))
        for key, room in self.rooms.items():
            self._out.append(JoinRoom(key, room.layer, room.friend))

    def node_failed(self, url: str, now: float) -> None:
        """A connection attempt to `url` did not get as far as the welcome."""
        if self.state is NodeState.CONNECTED and url == self.returning:
            self.returning = None
            self._return_tries += 1
            wait = _backoff(self.config.return_after, self.config.return_cap, self._return_tries)
            self._return_at = now + wait
            return
        if self.state is NodeState.CONNECTING and url == self.node:
            self._connect_next(now)

    def node_lost(self, url: str, code: int | None, now: float) -> None:
        """The connection to `url` closed (after its welcome)."""
        if self.state is not NodeState.CONNECTED or url != self.node:
            return
        self.returning, self._return_at = None, None
        if self._chosen_since is not None:
            if now - self._chosen_since >= self.config.return_after:
                self._return_tries = 0  # it served a while: tries start over
            elif self._returned:
                self._return_tries += 1  # a return it dropped soon: failed, as a refusal
            self._chosen_since = None
        for room in self.rooms.values():
            room.seated = False
        if code == CLOSE_REPLACED:  # the same key connected elsewhere: not ours to fight
            self.state = NodeState.REPLACED
            self._out.append(NodeStatus("replaced", url))
            return
        # the node that dropped us is the least likely to answer: try the others first
        self.nodes = [*(n for n in self.nodes if n != url), url]
        self._tried = {url}
        self._out.append(NodeStatus("lost", url))
        self._connect_next(now)

    def moving(self, nodes: list[str]) -> None:
        """The node is going away and names others: try those first."""
        self.nodes = list(dict.fromkeys([*nodes, *self.nodes]))[:MAX_NODES]

    def learn_nodes(self, urls: list[str]) -> None:
        """More nodes to fail over to (a welcome's list, members' home nodes); bounded."""
        for url in urls:
            if url not in self.nodes and len(self.nodes) < MAX_NODES:
                self.nodes.append(url)

    def _connect_next(self, now: float) -> None:
        untried = [url for url in self.nodes if url not in self._tried]
        if not untried:  # a whole round failed: wait, then start a new one
            cap = _backoff(self.config.backoff_base, self.config.backoff_cap, self._round)
            wait = self._rng() * cap
            self._round += 1
            self._tried.clear()
            self.state = NodeState.WAITING
            self._wait_until = now + wait
            self._out.append(NodeStatus("retrying", "", wait))
            return
        url = untried[0]
        self._tried.add(url)
        self.state = NodeState.CONNECTING
        self.node = url
        self._out.append(NodeStatus("connecting", url))
        self._out.append(ConnectNode(url))

    # --- rooms -------------------------------------------------------------------

    def join(self, room: bytes, layer: int | None = None, friend: bytes | None = None) -> None:
        """Sit in `room`: in `layer`, else beside `friend`, else where the node says."""
        if room in self.rooms:
            return
        self.rooms[room] = _Room(layer=layer, friend=friend)
        if self.state is NodeState.CONNECTED:
            self._out.append(JoinRoom(room, layer, friend))

    def move(self, room: bytes, layer: int | None = None, friend: bytes | None = None) -> None:
        """Sit elsewhere in a joined `room`: in `layer`, else beside `friend`. The links
        stay until the node answers (`joined`, or `join_refused`)."""
        state = self.rooms.get(room)
        if state is None:
            return
        state.layer, state.friend, state.moving = layer, friend, True
        if self.state is NodeState.CONNECTED:
            self._out.append(JoinRoom(room, layer, friend))

    def join_refused(self, room: bytes, full: bool) -> None:
        """The node refused a join of `room` (`full`: the layer asked for has no seat).

        A refused move asks for our seat again: the node may have let it go before
        refusing. A rejoin refused because our layer filled up while we were away asks
        for any seat. Anything else (a first join, a refused seat) is the application's
        to tell; nothing is asked twice, so refusals never loop."""
        state = self.rooms.get(room)
        if state is None or state.seat is None:
            return  # a first join: the application gives the room up
        if state.moving:
            state.moving, state.layer = False, state.seat
        elif full and not state.seated and state.layer is not None:
            state.layer = None
        else:
            return
        state.friend = None
        if self.state is NodeState.CONNECTED:
            self._out.append(JoinRoom(room, state.layer))

    def leave(self, room: bytes) -> None:
        state = self.rooms.pop(room, None)
        if state is None:
            return
        for member, entry in state.members.items():
            self._drop_links(room, member, entry)

    def joined(
        self,
        room: bytes,
        layer: int,
        members: list[bytes],
        ice_expires: float | None,
        now: float,
    ) -> None:
        """The node seated us in `layer`, with these members (a first join, a rejoin or a
        move). In another layer than our seat, the old layer's members are not ours any
        more, whatever their links, and we are the newcomer who offers."""
        state = self.rooms.get(room)
        if state is None:
            return
        moved = state.seat is not None and state.seat != layer
        newcomer = state.seat is None or moved
        state.layer, state.seat, state.seated = layer, layer, True
        state.friend, state.moving = None, False
        self.ice_servers(ice_expires, now)
        listed = set(members)
        listed.discard(self.key)
        for member in [m for m in state.members if m not in listed]:
            link = state.members[member].link
            if state.members[member].named:  # named early, not in the layer we sit in
                self._count("named.not_listed")
                self._remove(room, state, member)
            elif moved or link is None or not link.open:  # in another layer, or gone meanwhile
                self._remove(room, state, member)
            else:
                state.members[member].unlisted = True
        for member in members:
            known = state.members.get(member)
            if member == self.key:
                continue
            if known is None:
                entry = self._add(room, state, member, now)
                if entry is None:
                    continue
                if newcomer:
                    self._offer(room, member, entry, now)
                else:
                    entry.retry_at = now + self.config.offer_grace
            else:
                known.unlisted = known.named = False
                if known.link is None and known.retry_at is None:
                    self._retry_later(known, now)

    def named(self, room: bytes, members: list[bytes], now: float) -> None:
        """A first join under way named `members` (its `sign` request's `members`, or a
        `members` frame without an id; docs/protocol.md 2.5.3), and we signed: offer to
        them now, as a newcomer to its `joined`'s members. The `joined` that follows
        offers to no one twice, and lets go of a named member it does not list."""
        state = self.rooms.get(room)
        if state is None or state.seated or state.seat is not None:
            self._count("refused.named.not_joining")  # only a first join is under way here
            return
        for member in members:
            if member == self.key or member in state.members:
                continue
            entry = self._add(room, state, member, now)
            if entry is not None:
                entry.named = True
                self._offer(room, member, entry, now)

    def peer_joined(self, room: bytes, member: bytes, now: float, layer: int | None = None) -> None:
        """The node says `member` sat down in our layer (`layer`, when it says which)."""
        state = self.rooms.get(room)
        if state is None or member == self.key:
            return
        if layer is not None and not _expects(state, layer):
            self._count("refused.member.other_layer")  # sent before a move: not ours
            return
        if member in state.members:
            state.members[member].unlisted = state.members[member].named = False
            return
        entry = self._add(room, state, member, now)
        if entry is not None:  # the newcomer offers; if not, keys decide
            entry.retry_at = now + self.config.offer_grace

    def peer_left(self, room: bytes, member: bytes, layer: int | None = None) -> None:
        """The node says `member` left our layer (`layer`, when it says which)."""
        state = self.rooms.get(room)
        if state is None or member not in state.members:
            return
        if layer is not None and not _expects(state, layer):
            self._count("refused.member_left.other_layer")  # the old layer's, told late
            return
        self._remove(room, state, member)

    def _add(self, room: bytes, state: _Room, member: bytes, now: float) -> _Member | None:
        if len(state.members) >= self.config.max_members:
            self._count("refused.member.full")
            return None
        bucket = TokenBucket(self.config.offers_per_second, self.config.offer_burst, now)
        entry = state.members[member] = _Member(bucket)
        self._out.append(MemberJoined(room, member))
        return entry

    def _remove(self, room: bytes, state: _Room, member: bytes) -> None:
        entry = state.members.pop(member)
        self._drop_links(room, member, entry)
        self._out.append(MemberLeft(room, member))

    def _drop_links(self, room: bytes, member: bytes, entry: _Member) -> None:
        for link in (entry.spare, entry.link):
            if link is not None:
                if link.open and link is entry.link:
                    self._out.append(LinkDown(room, member, link.id))
                self._out.append(CloseLink(room, member, link.id))
        entry.link = entry.spare = None

    # --- signals from members (verified by the glue) -----------------------------

    def _member(self, room: bytes, sender: bytes, now: float, what: str) -> _Member | None:
        state = self.rooms.get(room)
        entry = state.members.get(sender) if state is not None else None
        if entry is None:
            self._count(f"refused.{what}.not_member")
            self._out.append(Refused(room, sender, f"{what} from a key that is not a member"))
            return None
        if not entry.offers.take(now):
            self._count(f"refused.{what}.rate")
            self._out.append(Refused(room, sender, f"too many {what}s"))
            return None
        return entry

    def offer_received(self, room: bytes, sender: bytes, now: float) -> None:
        entry = self._member(room, sender, now, "offer")
        if entry is None:
            return
        pending = _pending(entry)
        if pending is not None and pending.offered and not pending.answered and self.key < sender:
            self._count("glare.ours")  # both offered: the lower key's offer wins
            return
        fresh = self._new_link(entry, offered=False, now=now)
        self._place(room, sender, entry, fresh)
        self._out.append(Answer(room, sender, fresh.id))

    def relink_received(self, room: bytes, sender: bytes, now: float) -> None:
        """The member asks us (the lower key) to offer a new link."""
        entry = self._member(room, sender, now, "relink")
        if entry is None:
            return
        if self.key > sender:
            self._count("refused.relink.higher_key")  # only the lower key is asked
            return
        pending = _pending(entry)
        if pending is not None and pending.offered and not pending.answered:
            if now - pending.created < 2 * self.config.offer_grace:
                return  # an offer of ours is on its way already
            self._count("reoffer")  # it asks again: our offer never reached it, or was lost
        self._offer(room, sender, entry, now)

    def answered(self, room: bytes, member: bytes, link: int) -> None:
        """The answer to our offer on `link` was applied."""
        found = self._find(room, member, link)
        if found is not None:
            found[1].answered = True

    # --- links -------------------------------------------------------------------

    def _new_link(self, entry: _Member, offered: bool, now: float) -> _Link:
        self._next_link += 1
        if entry.trying_since is None and (entry.link is None or not entry.link.open):
            entry.trying_since = now
        return _Link(self._next_link, offered, now, self._ice_expires)

    def _offer(self, room: bytes, member: bytes, entry: _Member, now: float) -> None:
        fresh = self._new_link(entry, offered=True, now=now)
        self._place(room, member, entry, fresh)
        self._out.append(Offer(room, member, fresh.id))

    def _place(self, room: bytes, member: bytes, entry: _Member, fresh: _Link) -> None:
        """A new link goes beside an open one as its spare (make before break), or
        replaces a link that is not open."""
        if entry.link is not None and entry.link.open:
            old, entry.spare = entry.spare, fresh
        else:
            old, entry.link = entry.link, fresh
        if old is not None:
            self._out.append(CloseLink(room, member, old.id))
        entry.retry_at = None

    def _find(self, room: bytes, member: bytes, link: int) -> tuple[_Member, _Link] | None:
        state = self.rooms.get(room)
        entry = state.members.get(member) if state is not None else None
        if entry is None:
            return None
        for candidate in (entry.link, entry.spare):
            if candidate is not None and candidate.id == link:
                return entry, candidate
        return None

    def link_open(self, room: bytes, member: bytes, link: int, relayed: bool, now: float) -> None:
        found = self._find(room, member, link)
        if found is None:
            return
        entry, opened = found
        opened.open, opened.relayed = True, relayed
        if opened is entry.spare:  # the spare takes over; the old link goes
            old = entry.link
            entry.link, entry.spare = opened, None
            if old is not None:
                if old.open:
                    self._out.append(LinkDown(room, member, old.id))
                self._out.append(CloseLink(room, member, old.id))
        entry.attempts = 0
        entry.retry_at = None
        entry.reported = False
        entry.trying_since = None
        self._out.append(LinkUp(room, member, link))

    def link_failed(
        self, room: bytes, member: bytes, link: int, ice_failed: bool, now: float
    ) -> None:
        """`link` closed or failed (`ice_failed`: no path was ever found)."""
        found = self._find(room, member, link)
        if found is None:
            return
        entry, failed = found
        if failed is entry.spare:  # the open link stays; nothing else changes
            entry.spare = None
            self._out.append(CloseLink(room, member, link))
            return
        entry.link = None
        if failed.open:
            self._out.append(LinkDown(room, member, link))
        elif ice_failed:
            self._report(room, member, entry, link)  # before the close: the glue says why
        self._out.append(CloseLink(room, member, link))
        if entry.spare is not None:  # a spare on its way takes the place of the failed link
            entry.link, entry.spare = entry.spare, None
            return
        if entry.unlisted:  # its link was all that said it was here
            self._remove(room, self.rooms[room], member)
            return
        self._retry_later(entry, now)

    def _report(self, room: bytes, member: bytes, entry: _Member, link: int) -> None:
        if not entry.reported:
            entry.reported = True
            self._out.append(Unreachable(room, member, link))

    def _retry_later(self, entry: _Member, now: float) -> None:
        cap = _backoff(self.config.relink_base, self.config.relink_cap, entry.attempts)
        entry.attempts += 1
        entry.retry_at = now + self._rng() * cap

    def _retry(self, room: bytes, member: bytes, entry: _Member, now: float) -> None:
        """Grace or backoff is over and there is no usable link: the lower key offers,
        the higher asks it to (and tries again later, in case the relink is lost)."""
        entry.retry_at = None
        if entry.link is not None:
            return
        if self.key < member:
            self._offer(room, member, entry, now)
        else:
            self._out.append(SendRelink(room, member))
            self._retry_later(entry, now)

    # --- ICE credentials ---------------------------------------------------------

    def ice_servers(self, expires: float | None, now: float) -> None:
        """Fresh ICE servers arrived (with a join or on request): new links use them."""
        self._ice_asked = None
        if expires is None:
            self._ice_expires = self._ice_renew_at = None
            return
        self._ice_expires = expires
        life = max(0.0, expires - now)
        self._ice_renew_at = now + max(life / 2, life - self.config.renew_before)

    def _ice_due(self) -> float | None:
        """When to ask for fresh ICE servers: at renewal time, and again if unanswered."""
        if self._ice_renew_at is None:
            return None
        if self._ice_asked is None:
            return self._ice_renew_at
        return self._ice_asked + RETRY_ICE_AFTER

    def _renew_at(self, entry: _Member) -> float | None:
        """When a member's relayed link replaces itself, before its credentials expire;
        if a replacement failed, again `relink_cap` after the last try (never while a
        spare is on its way)."""
        link = entry.link
        if link is None or not link.open or not link.relayed or link.credentials_expire is None:
            return None
        if entry.spare is not None:
            return None
        life = max(0.0, link.credentials_expire - link.created)
        due = link.created + max(life * 3 / 4, life - self.config.renew_before / 2)
        if link.renewed_at is not None:
            due = max(due, link.renewed_at + self.config.relink_cap)
        return due

    # --- time --------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next deadline. What needs the node (retries, renewals) waits while there
        is none: it resumes with the next `joined`, so no deadline is ever in the past."""
        deadlines: list[float] = []
        signalling = self.state is NodeState.CONNECTED
        if self.state is NodeState.WAITING and self._wait_until is not None:
            deadlines.append(self._wait_until)
        if signalling and (renew_ice := self._ice_due()) is not None:
            deadlines.append(renew_ice)
        if signalling and self.returning is None and self._return_at is not None:
            deadlines.append(self._return_at)
        for state in self.rooms.values():
            for entry in state.members.values():
                for link in (entry.link, entry.spare):
                    if link is not None and not link.open:
                        deadlines.append(link.created + self.config.connect_timeout)
                if entry.trying_since is not None and not entry.reported:
                    deadlines.append(entry.trying_since + self.config.connect_timeout)
                if not (signalling and state.seated):
                    continue
                if entry.retry_at is not None:
                    deadlines.append(entry.retry_at)
                if (renew := self._renew_at(entry)) is not None:
                    deadlines.append(renew)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        waiting = self.state is NodeState.WAITING and self._wait_until is not None
        if waiting and self._wait_until is not None and self._wait_until <= now:
            self._wait_until = None
            self._connect_next(now)
        signalling = self.state is NodeState.CONNECTED
        renew_ice = self._ice_due()
        if signalling and renew_ice is not None and renew_ice <= now:
            self._ice_asked = now
            self._out.append(RequestIceServers())
        back = self._return_at
        if signalling and self.returning is None and back is not None and back <= now:
            self._return_at = None
            self.returning = self.chosen[self._return_tries % len(self.chosen)]
            self._out.append(NodeStatus("returning", self.returning))
            self._out.append(ConnectNode(self.returning))
        for room, state in self.rooms.items():
            for member, entry in list(state.members.items()):
                self._deadlines(room, member, entry, now)
                if signalling and state.seated:
                    self._due(room, member, entry, now)

    def _deadlines(self, room: bytes, member: bytes, entry: _Member, now: float) -> None:
        """Links not open `connect_timeout` after they were made are given up."""
        deadline = self.config.connect_timeout
        spare = entry.spare
        if spare is not None and not spare.open and spare.created + deadline <= now:
            self.link_failed(room, member, spare.id, False, now)
        link = entry.link
        if link is not None and not link.open and link.created + deadline <= now:
            self._report(room, member, entry, link.id)  # as after an ICE failure
            self.link_failed(room, member, link.id, False, now)
        since = entry.trying_since
        if since is not None and not entry.reported and since + deadline <= now:
            current = entry.link.id if entry.link is not None else 0
            self._report(room, member, entry, current)  # links replaced, none opened

    def _due(self, room: bytes, member: bytes, entry: _Member, now: float) -> None:
        """Retries and renewals, which need the node to carry a signal."""
        if entry.retry_at is not None and entry.retry_at <= now:
            self._retry(room, member, entry, now)
        link, renew = entry.link, self._renew_at(entry)
        if link is not None and renew is not None and renew <= now:
            link.renewed_at = now
            if self.key < member:
                self._offer(room, member, entry, now)
            else:
                self._out.append(SendRelink(room, member))


def _expects(state: _Room, layer: int) -> bool:
    """Whether a member announced in `layer` can be ours: it is the layer we sit in, or
    the one a join on its way asked for (a friend's, not known yet, included)."""
    if state.seat is None or state.layer is None:
        return True
    return layer in (state.seat, state.layer)


def _pending(entry: _Member) -> _Link | None:
    """The link being negotiated: the spare beside an open link, else a link not yet open."""
    if entry.link is not None and entry.link.open:
        return entry.spare
    return entry.link


def _backoff(base: float, cap: float, attempts: int) -> float:
    """The full-jitter window after `attempts` failures: base * 2^attempts, capped."""
    doublings: int = 2 ** min(attempts, MAX_DOUBLINGS)
    return min(cap, base * doublings)
