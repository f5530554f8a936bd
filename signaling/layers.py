"""The room core: every rule of seating, layer views, presence and departures, with no I/O.

A node runs one `RoomCore`. Three things drive it (docs/protocol.md section 3.1,
docs/architecture.md "Rooms"):

- its clients: `connect`, `join`, `signed`, `leave`, `members`, `layers`,
  `signal`, `disconnect`;
- results of the commands it gave: `read_done` (records under a DHT key),
  `publish_done`, `home_checked` (a home node proved its id at its address);
- other nodes' link frames (`link_frame`) and the clock (`get_timer`,
  `handle_timer`).

Its output is a list of commands (`commands()`): read a key, publish a
record, check a home node, push a frame to a client, send a frame to another
node. `signaling/node.py` runs them over aiohttp and the DHT node; the
simulator's rooms scenario runs them over its in-memory network. Time arrives
as `now` (Unix seconds), randomness from an injected `random.Random`.

The rules, in short:

- A layer's members are published by their home nodes: one **seat list** per
  (node, layer), a DHT record signed by the node (`signaling.rooms.SeatList`).
  A seat list counts only once its node proved, at the DHT address it names,
  that it holds the key (`CheckHome`): a stranger with keys but no reachable
  node seats nobody.
- **Placement** costs the same at any room size: the node keeps an estimate of
  the room's layer count L; a newcomer is offered `choices` layers drawn at
  random below L-1, plus the last layer L-1 and the next one L, all read at
  once; it sits in the least full with a seat (power of two choices, so holes
  left by leavers are refilled), else in L (a new layer). After its seat list
  is stored the node reads the layer again: when concurrent joins overfilled
  it, those seated last move on (at most `max_attempts` times).
- A layer asked for (by number, or as a friend's) is honoured when it has a
  seat; otherwise `layer-full`.
- **Estimates**: each layer read moves L (a non-empty layer at or past L raises
  it; an empty last layer lowers it), and feeds a moving average of the fill
  of full-size layers; seat lists carry their node's estimates as hints for a
  node that has none. total = (L - 1) x fill + (members of the last layer).
- **Fairness**: per source address and room, `joins_per_minute` joins and at most
  `seats_per_source` seats at this node; per source address in all rooms together,
  `SOURCE_JOINS_FACTOR` times `joins_per_minute` joins (a fresh room each time must
  not bring a fresh budget of DHT reads and stores) and `SOURCE_SEATS_FACTOR` times
  `seats_per_source` seats.
- A node speaks only for its own clients; a presence or absence about a member
  homed elsewhere is dropped and counted.

Fast paths (docs/protocol.md 2.5; `RoomConfig.with_fast_paths()`): placement reads
answer at the DHT's quorum; the seat list a join's check follows is stored to a
majority of the key's holders, and the check and the periodic re-reads wait for the
whole lookup (2.5.1: two racing joins still meet); the seat list is stored while the client signs; a
node with no estimate reads layers 0 and 1 in its first round; reads that need
not be fresh may be answered from a read a few seconds old.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dht.identity import Identity
from dht.ratelimit import TokenBucket
from dht.reads import FULL, QUICK
from dht.records import Record, RecordLimits, Refusal, Verifier, check_record

from .protocol import (
    ErrorCode,
    HomeNode,
    IceServer,
    Join,
    Joined,
    LayerCount,
    LayerList,
    Layers,
    Left,
    LinkAbsence,
    LinkFrame,
    LinkPresence,
    LinkSignal,
    LinkSignalError,
    Member,
    MemberList,
    Members,
    PeerJoined,
    PeerLeft,
    Presence,
    RoomError,
    ServerFrame,
    Signal,
    SignalFrom,
    SignRequest,
    error,
    layer_key,
    parse_presence,
    presence_value,
)
from .rooms import (
    MAX_LAYER,
    SEAT_BYTES,
    SeatList,
    parse_seat_list,
    parse_seat_of,
    seat_list_bytes,
    seat_list_value,
    seat_of_key,
    seat_of_value,
)

Address = tuple[str, int]
MAX_PROBES = 6
"""Galloping rounds past the last known layer before a join sits in one it has not read."""
SOURCE_JOINS_FACTOR = 10
"""Joins one source may make in all rooms together, in units of `joins_per_minute`."""
SOURCE_SEATS_FACTOR = 8
"""Seats one source may hold in all rooms together, in units of `seats_per_source`."""
MIN_SIGNAL_COST = 256
"""Bytes a signal takes of its recipient's budget however small its payload."""


@dataclass(frozen=True, slots=True)
class RoomConfig:
    layer_size: int = 24
    presence_ttl: float = 60.0
    """A seat list lapses this long after its node last renewed it."""
    refresh: float = 20.0
    """How often seat lists are renewed, clients re-sign and seated layers are re-read."""
    choices: int = 2
    """Random layers offered to a newcomer besides the last and the next one."""
    max_attempts: int = 5
    view_cap: int = 96
    """Members this node keeps of one layer (a bound against anyone who lists too many)."""
    sign_timeout: float = 10.0
    seat_of_ttl: float = 600.0
    """Lifetime of the record that tells friends which layer a member sits in."""
    home_ttl: float = 600.0
    """How long a home node's proof is trusted; a failed proof is retried after a tenth."""
    estimate_ttl: float = 300.0
    max_estimates: int = 10_000
    max_homes: int = 10_000
    joins_per_minute: float = 12.0
    """Per source address and room, at this node (bursts of the same size)."""
    seats_per_source: int = 16
    """Seats one source address may hold in one room through this node."""
    signal_bytes_per_second: float = 262_144.0
    signal_bytes_burst: float = 2_097_152.0
    """Signal payload bytes one client of this node may receive from all senders together
    (each signal counted as at least `MIN_SIGNAL_COST`): every sender has its own budget,
    and a stranger holds many seats beside its target."""
    layers_listed: int = 6
    """Layers whose counts a `layers` answer carries besides the caller's own."""
    max_value_bytes: int = 2048
    """The DHT's record value limit: a seat list must fit in one record."""
    fill_weight: float = 0.1
    """Weight of a new sample in the moving average of a full-size layer's fill."""
    # Fast paths (docs/protocol.md 2.5), off by default; `with_fast_paths()` turns them on.
    quorum_reads: bool = False
    """Reads say how complete they must be: placement's at the DHT's quorum, the check
    after a store and the periodic re-reads the whole lookup. False: every read as the
    DHT does by default."""
    parallel_sign: bool = False
    """Store the seat list while the client signs its presence (a refused signature takes
    the seat back), instead of after."""
    cold_round: bool = False
    """A node with no estimate of a room reads layers 0 and 1 at once, and places from them
    when the room has at most two layers, instead of reading layer 0 first."""
    early_decisions: bool = False
    """Placement decides as soon as the home checks still pending cannot change its choice
    (the seat lists of unproven homes still count for nothing), instead of after every
    check. The check after the store still waits for them: `joined` lists every member
    proven there."""
    read_cache_ttl: float = 0.0
    """A client's `members` or `layers` request is answered from a read of the same key
    this recent (no decision rests on those: placement, checks and friends always read);
    0: never."""
    max_cached_reads: int = 256
    hinted_ahead: int = 1
    """Layers past the last one that placement reads when the room's size comes from seat
    lists' hints alone (a node with no estimate of a room of three layers or more); with
    the fast paths 2, so that hints one layer behind a growing room cost no probe round."""
    majority_seats: bool = False
    """The store of a seat list a join waits on (before its check) ends once a majority
    of the layer key's holders took it, the rest still sent (docs/protocol.md 2.5);
    False: once every holder answered."""
    read_ahead: bool = False
    """A node with no estimate of a room whose first round's seat lists hint at three
    layers or more starts the placement round's reads from those hints (median, proven
    or not) while the lists' homes are proven, instead of after; placement still decides
    from proven lists only (docs/protocol.md 2.5.4)."""
    early_offers: bool = False
    """With `parallel_sign`: the sign request of a join names the members the placement
    read proved in the chosen layer, and the client may signal them once it has signed,
    while its seat list is stored and checked (docs/protocol.md 2.5.3); False: a client
    signals only once seated."""
    store_reads: bool = False
    """The store of a seat list a join waits on asks every holder for the records it then
    holds under the layer key (the DHT's `pm_store_read`), and the join's check is made
    from those replies, without a read after the store; any holder that does not answer
    with all it holds (an older node, more than one page, no answer) and the check reads
    as before (docs/protocol.md 2.5.5). The store then waits for every holder."""
    seat_at_majority: bool = False
    """With `store_reads`: once more than half of the holders answered the store with all
    they hold, and those replies show the newcomer not to yield its seat, it is seated
    (`joined`); the other holders' replies are still read as the check would (members
    they show are learned and told, an overfill counted), instead of seating only after
    the slowest holder (docs/protocol.md 2.5.6)."""
    majority_pause: float = 600.0
    """After two periodic reads in a row (the whole lookup) found a layer of this node's
    clients over `layer_size` (holders that answered first hid racing joins from each
    other's majorities, or walks missed each other; a racer moving on is gone by the
    next), this node's joins into that room wait for every holder this long (2.5.6):
    holders that lie first overfill a layer once, not with every wave of joins."""

    hopeful_placement: bool = False
    """A placement round whose reads are in but whose homes are still being proven places
    as if every one of them proves itself, and the seat goes on (stored, signed, checked)
    while they do; it is not seated until they have, and then moves on to where the proven
    lists alone would have placed it, if that is elsewhere (docs/protocol.md 2.5.7)."""

    def with_fast_paths(self) -> RoomConfig:
        return replace(
            self,
            seat_at_majority=True,
            hopeful_placement=True,
            majority_seats=True,
            read_ahead=True,
            early_offers=True,
            store_reads=True,
            hinted_ahead=2,
            quorum_reads=True,
            parallel_sign=True,
            cold_round=True,
            early_decisions=True,
            read_cache_ttl=min(5.0, self.refresh / 4),
        )

    def without_fast_paths(self) -> RoomConfig:
        return replace(
            self,
            quorum_reads=False,
            parallel_sign=False,
            cold_round=False,
            early_decisions=False,
            read_cache_ttl=0.0,
            majority_seats=False,
            read_ahead=False,
            early_offers=False,
            store_reads=False,
            seat_at_majority=False,
            hopeful_placement=False,
            hinted_ahead=1,
        )


# --- commands (what the glue must do) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadKey:
    op: int
    key: bytes
    quorum: int | None = None
    """How complete the read must be (`DHTCore.get_records`); None: the DHT's default."""


@dataclass(frozen=True, slots=True)
class PublishRecord:
    op: int
    record: Record
    majority: bool = False
    """Done once a majority of the key's holders took it (`DHTCore.put_record`)."""
    read_back: bool = False
    """Each store asks for the records then held under the key, and the put waits for every
    holder (`DHTCore.put_record(read_back=True)`): `publish_done` gets them, or None."""
    early: bool = False
    """With `read_back`: `publish_held` gets what a majority of the holders held, when
    that comes before the put ends (`DHTCore.put_record(early=True)`, `RecordsHeld`)."""


@dataclass(frozen=True, slots=True)
class CheckHome:
    node_id: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class Push:
    client: bytes
    frame: ServerFrame


@dataclass(frozen=True, slots=True)
class TellNode:
    home: HomeNode
    frame: LinkFrame


@dataclass(frozen=True, slots=True)
class ReplyNode:
    remote: bytes
    frame: LinkFrame


@dataclass(frozen=True, slots=True)
class Forward:
    """A client's signal to a member homed elsewhere; if it cannot be sent, the glue tells
    the client `unavailable`."""

    client: bytes
    home: HomeNode
    frame: LinkSignal


@dataclass(frozen=True, slots=True)
class JoinFinished:
    """A join answered (for metrics): seated in `layer`, or refused when `layer` is None."""

    client: bytes
    room: bytes
    layer: int | None
    seconds: float
    reads: int


Command = ReadKey | PublishRecord | CheckHome | Push | TellNode | ReplyNode | Forward | JoinFinished


# --- state ----------------------------------------------------------------------------


@dataclass(slots=True)
class Seat:
    """One client's seat in one room at this node."""

    room: bytes
    layer: int
    since: int
    seq: int = 0
    record: Record | None = None
    """The client's own signed presence (it travels on node links as proof)."""
    seat_of_at: float = float("-inf")
    """When the friend-finding record was last published."""


@dataclass(slots=True)
class ClientState:
    key: bytes
    source: str
    seats: dict[bytes, Seat] = field(default_factory=dict)
    joining: bool = False
    sign_counter: int = 0
    reserved: set[bytes] = field(default_factory=set)
    """Rooms where a join holds a seat's place against its source until it is signed:
    joins in flight together cannot pass `seats_per_source` between them."""
    listed: set[tuple[bytes, int]] = field(default_factory=set)
    """(room, layer) whose seat list names it while its signature is awaited
    (`parallel_sign`): taken back if it goes."""
    offering: dict[bytes, tuple[Seat, dict[bytes, Presence]]] = field(default_factory=dict)
    """Room -> the seat a join under way is being given and the members its sign request
    named (`early_offers`, docs/protocol.md 2.5.3): whom the client may signal before it
    is seated. One join at a time per client, so at most one entry; gone when it ends."""
    inbound: TokenBucket | None = None
    """Signal bytes it may still receive (`signal_bytes_per_second`), made at its first."""


@dataclass(slots=True)
class LayerView:
    """What this node knows of one layer its clients sit in."""

    room: bytes
    layer: int
    members: dict[bytes, Presence] = field(default_factory=dict)
    since: dict[bytes, int] = field(default_factory=dict)
    departed: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """peer -> (ms of departure, expires_at): older evidence of that peer is ignored."""
    local: set[bytes] = field(default_factory=set)
    seats_seq: int = 0
    unstored: dict[bytes, Seat] = field(default_factory=dict)
    """This node's newly seated clients whose seat no store has carried yet."""
    publishing: bool = False
    dirty: bool = False
    waiting: list[Callable[[float], None]] = field(default_factory=list)
    """Continuations to run once the seat list that includes the latest change is stored."""
    early: list[Callable[[list[Record], float], None]] = field(default_factory=list)
    """Who hears what a majority of the holders held under the layer key once that store
    reached them (`seat_at_majority`)."""
    overfull_reads: int = 0
    """Periodic reads in a row that found the layer over `layer_size` (`majority_pause`)."""
    held: list[Record] | None = None
    """While those run: what every holder of the layer key held once that store reached it
    (`store_reads`), None if not all of them said."""

    def count(self) -> int:
        return len(self.members)


@dataclass(slots=True)
class Estimate:
    layers: int = 1
    fill: float = 0.0
    fill_samples: int = 0
    last: int = 0
    used_at: float = 0.0

    def total(self, layer_size: int) -> int:
        if self.layers <= 1:
            return self.last
        # Until this node has read a layer below the last, take them as full: placement
        # opens a new layer only when the ones offered are full.
        fill = self.fill if self.fill_samples else layer_size
        return round((self.layers - 1) * fill + self.last)


@dataclass(slots=True)
class HomeState:
    addr: Address
    ok: bool | None = None
    until: float = 0.0
    waiting: list[Callable[[float], None]] = field(default_factory=list)


@dataclass(slots=True)
class Layer:
    """A layer as one read found it: verified members, with seat times and hints."""

    room: bytes
    layer: int
    members: dict[bytes, Presence]
    since: dict[bytes, int]
    lists: list[SeatList]

    def ranked(self) -> list[bytes]:
        return sorted(self.members, key=lambda peer: (self.since.get(peer, 0), peer))


@dataclass(slots=True)
class Provisional:
    """A layer read before its home checks ended: the members of proven seat lists (and
    this node's own), and what the lists still being checked may add."""

    layer: Layer
    unproven: int
    """Members only lists of homes not yet proven (nor refused) name."""
    unproven_hint: int
    """The highest layer-count hint of those lists (0: none)."""
    hints: tuple[int, ...] = ()
    """The layer-count hints of every live list not refused, proven or not (what a
    read ahead goes by, never a decision: 2.5.4)."""

    @property
    def low(self) -> int:
        return len(self.layer.members)

    @property
    def high(self) -> int:
        return len(self.layer.members) + self.unproven


@dataclass(slots=True)
class ReadAhead:
    """A placement read started before the round it serves (`read_ahead`, 2.5.4): what
    it found so far, and the round's callbacks waiting on it."""

    early: Provisional | None = None
    found: Layer | None = None
    waiters: list[tuple[Callable[[Layer, float], None], Callable[[Provisional, float], None]]] = (
        field(default_factory=list)
    )


@dataclass(slots=True)
class JoinState:
    client: bytes
    frame: Join
    started: float
    attempt: int = 0
    reads: int = 0
    excluded: set[int] = field(default_factory=set)
    requested: bool = False
    probes: int = 0
    unchecked: bool = False
    """The last attempt: seated without the check after the store."""
    """Rounds that found every layer read full: the room is bigger than this node knew."""
    found: Layer | None = None
    """The read of the layer chosen, whose members the new view starts from."""
    hinted: bool = False
    """The room's size came from seat lists' hints alone (a node with no estimate)."""
    ahead: dict[int, ReadAhead] = field(default_factory=dict)
    """Layer -> a placement read started from the first round's hints while its homes
    were being proven (2.5.4); used (or dropped) by the next placement round."""
    held: list[Record] | None = None
    """What the store of the seat list naming the newcomer read back from every holder
    (`store_reads`, 2.5.5): the check is made from it; None: the check reads."""
    majority: Layer | None = None
    """The layer as a majority of those holders showed it, the newcomer not yielding: it
    is seated from that, before the others answered (`seat_at_majority`, 2.5.6)."""
    announced: set[bytes] = field(default_factory=set)
    """The homes told of the newcomer when it was seated (and this node)."""
    hoping: bool = False
    """Placed before the placement round's homes were proven (2.5.7): not seated until they
    are and the choice stands."""
    after_hope: Callable[[float], None] | None = None
    """The seating that waits for that."""
    seat: Seat | None = None
    """The seat this join is making now (an earlier one's late replies are not its own)."""
    estimate_at: Estimate | None = None
    """The room's estimate as the placement round began (what a hopeful placement is
    checked against, its own seat aside)."""


class RoomCore:
    """Rooms at one node (see the module docstring for the rules)."""

    def __init__(
        self,
        config: RoomConfig,
        identity: Identity,
        url: str,
        dht_addr: Address,
        rng: random.Random,
        verify: Verifier,
        record_limits: RecordLimits,
        ice_servers: Callable[[bytes, float], tuple[IceServer, ...]] = lambda _k, _n: (),
    ) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.home = HomeNode(identity.node_id, url)
        self.dht_addr = dht_addr
        self.rng = rng
        self.verify = verify
        self.record_limits = record_limits
        self.ice_servers = ice_servers
        self.clients: dict[bytes, ClientState] = {}
        self.views: dict[tuple[bytes, int], LayerView] = {}
        self.estimates: OrderedDict[bytes, Estimate] = OrderedDict()
        self.homes: OrderedDict[bytes, HomeState] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self.stopping = False
        self._commands: list[Command] = []
        self._op = 0
        self._reads: dict[int, list[Callable[[list[Record], float], None]]] = {}
        self._reading: dict[tuple[bytes, int | None], int] = {}
        self._read_keys: dict[int, tuple[bytes, int | None]] = {}
        self._cached: OrderedDict[bytes, tuple[float, list[Record]]] = OrderedDict()
        self._publishes: dict[int, Callable[[bool, float], None]] = {}
        self._read_backs: dict[int, Callable[[list[Record] | None], None]] = {}
        self._helds: dict[int, Callable[[list[Record], float], None]] = {}
        self._majority_paused: OrderedDict[bytes, float] = OrderedDict()
        """Room -> until when its joins are not seated at a majority (`majority_pause`)."""
        self._signs: dict[tuple[bytes, str], tuple[float, Callable[[bytes | None, float], None]]]
        self._signs = {}
        self._joins: dict[str, TokenBucket] = {}
        self._source_joins: dict[str, TokenBucket] = {}
        self._seats_by_source: Counter[tuple[str, bytes]] = Counter()
        self._seats_of_source: Counter[str] = Counter()
        """`_seats_by_source` summed over rooms."""
        self._next_refresh: float | None = None
        self._timers: list[tuple[float, int, tuple[bytes, str] | tuple[bytes, int, bytes]]] = []
        self._timer_seq = 0

    def seated_rooms(self, client: bytes) -> set[bytes]:
        """The rooms `client` holds a seat in at this node."""
        state = self.clients.get(client)
        return set(state.seats) if state is not None else set()

    def seats_per_record(self) -> int:
        """How many of this node's clients one seat list (one DHT record) can name."""
        head = seat_list_bytes(self.home.url, self.dht_addr[0], 0)
        return max(0, (self.config.max_value_bytes - head) // SEAT_BYTES)

    # --- output -----------------------------------------------------------------------

    def commands(self) -> list[Command]:
        out, self._commands = self._commands, []
        return out

    def _push(self, client: bytes, frame: ServerFrame) -> None:
        self._commands.append(Push(client, frame))

    def get_timer(self) -> float | None:
        """When `handle_timer` must run next: a signature's deadline, a remote member's
        expiry, or the periodic refresh (entries are dropped lazily, so it may be early)."""
        deadlines = [self._timers[0][0]] if self._timers else []
        if self._next_refresh is not None:
            deadlines.append(self._next_refresh)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, what = heapq.heappop(self._timers)
            if isinstance(what, tuple) and len(what) == 2:
                waiter = self._signs.get(what)
                if waiter is not None and waiter[0] <= now:
                    del self._signs[what]
                    waiter[1](None, now)
            else:
                room, layer, peer = what
                view = self.views.get((room, layer))
                known = view.members.get(peer) if view is not None else None
                lapsed = known is not None and known.expires_at <= now
                if view is not None and lapsed and peer not in view.local:
                    self._member_left(view, peer)  # its home stopped renewing it
        if self._next_refresh is not None and self._next_refresh <= now:
            self._refresh(now)

    def _at(self, when: float, what: tuple[bytes, str] | tuple[bytes, int, bytes]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, what))

    # --- clients ----------------------------------------------------------------------

    def connect(self, client: bytes, source: str, now: float) -> None:
        """A client proved its key (a reconnecting key replaces its old connection first)."""
        if client in self.clients:
            self.disconnect(client, now)
        self.clients[client] = ClientState(client, source)
        if self._next_refresh is None:
            self._next_refresh = now + self._period()

    def disconnect(self, client: bytes, now: float) -> None:
        state = self.clients.pop(client, None)
        if state is None:
            return
        for where in [w for w in self._signs if w[0] == client]:
            del self._signs[where]
        for room in list(state.seats):
            self._unseat(state, room, now, announce=not self.stopping)
        for room, layer in list(state.listed):
            self._unlist(state, room, layer, now)
        for room in list(state.reserved):
            self._release(state, room)

    def join(self, client: bytes, frame: Join, now: float) -> bool:
        """Start a join; False when one of this client's joins is still running."""
        state = self.clients.get(client)
        if state is None:
            return False
        if state.joining:
            return False
        refusal = None
        if not self._join_bucket(state.source, frame.room, now).take(now):
            refusal = "rate", "too many joins from your address to this room; wait a little"
        elif not self._source_join_bucket(state.source, now).take(now):
            refusal = "source_rate", "too many joins from your address; wait a little"
        if refusal is not None:
            self.counters[f"join.refused.{refusal[0]}"] += 1
            self._push(client, error(ErrorCode.RATE_LIMITED, refusal[1], frame.id))
            # Refused before it started: the glue gives back the room it reserved.
            self._commands.append(JoinFinished(client, frame.room, None, 0.0, 0))
            return True
        state.joining = True
        job = JoinState(client, frame, now)
        current = state.seats.get(frame.room)
        if current is not None and frame.friend is None and frame.layer in (None, current.layer):
            self._read_layer(
                frame.room, current.layer, now, lambda found, t: self._answer(job, current.layer, t)
            )
            job.reads += 1
        elif frame.friend is not None:
            self._find_friend(job, now)
        elif frame.layer is not None:
            job.requested = True
            self._try_layer(job, frame.layer, now)
        elif frame.room in self.estimates:
            self._choose(job, now)
        elif self.config.cold_round:
            self._first_round(job, now)
        else:
            job.reads += 1
            self._read_layer(frame.room, 0, now, lambda _found, t: self._choose(job, t))
        return True

    def _first_round(self, job: JoinState, now: float) -> None:
        """No estimate: layers 0 and 1 at once. Their seat lists' hints give the estimate;
        when the room has one layer, those are the layers placement reads (the last and
        the next), and with two, the ones it would place in if either has a seat."""
        room = job.frame.room
        found: dict[int, Layer] = {}
        early: dict[int, Provisional] = {}
        decided = [False]

        def provisional(layer: Provisional, t: float) -> None:
            early[layer.layer.layer] = layer
            if len(early) == 1 and self.config.read_ahead:
                # Layer 0's hints alone may say the room is big: the placement round's
                # reads need not wait for layer 1's pages (2.5.4).
                self._read_ahead(job, early, t)
            if len(early) == 2 and not decided[0]:
                decided[0] = self._place_early(job, early, t, cold=True)
                # A layer whose homes were proven before the other's read came: its
                # members are named now, not never (2.5.3).
                named: list[Layer] = list(found.values()) if decided[0] else []
                for proven in named:
                    self._name_proven(job, proven, t)
                if not decided[0] and self.config.read_ahead:
                    self._read_ahead(job, early, t)

        def got(layer: Layer, t: float) -> None:
            found[layer.layer] = layer
            if decided[0]:
                self._name_proven(job, layer, t)
            if len(found) < 2 or decided[0]:
                return
            decided[0] = True
            layers = self._estimate(room, t).layers
            size = self.config.layer_size
            if layers == 1 or (layers == 2 and any(len(f.members) < size for f in found.values())):
                self._place(job, found, t)
            else:
                job.hinted = True
                self._choose(job, t)

        job.reads += 2
        for layer in (0, 1):
            self._read_layer(room, layer, now, got, fresh=True, quorum=QUICK, early=provisional)

    def signed(self, client: bytes, request: str | int, sig: bytes, now: float) -> bool:
        """A client's signature for a presence it was asked to sign; False if none was asked."""
        waiter = self._signs.pop((client, str(request)), None)
        if waiter is None:
            return False
        waiter[1](sig, now)
        return True

    def leave(self, client: bytes, room: bytes, request: str | int | None, now: float) -> None:
        state = self.clients.get(client)
        if state is not None:
            self._unseat(state, room, now, announce=True)
        self._push(client, Left(room, request))

    def members(self, client: bytes, request: Members, now: float) -> None:
        seat = self._seat_of_client(client, request.room)
        if seat is None:
            self._push(client, error(ErrorCode.NOT_IN_ROOM, "not joined to that room", request.id))
            return

        def answer(_found: Layer, t: float) -> None:
            view = self.views.get((request.room, seat.layer))
            members = list(view.members.values()) if view else []
            others = tuple(_member(p) for p in members if p.peer != client)
            frame = MemberList(request.room, seat.layer, others, len(members), request.id)
            self._push(client, frame)

        self._read_layer(request.room, seat.layer, now, answer, cached=True)

    def layers(self, client: bytes, request: Layers, now: float) -> None:
        """The room-wide picture: the caller's layer and a few others, read now."""
        seat = self._seat_of_client(client, request.room)
        if seat is None:
            self._push(client, error(ErrorCode.NOT_IN_ROOM, "not joined to that room", request.id))
            return
        estimate = self._estimate(request.room, now)
        span = min(estimate.layers, MAX_LAYER + 1)
        listed = {seat.layer}
        for _ in range(4 * self.config.layers_listed):  # a few others, drawn at O(1)
            if len(listed) > min(self.config.layers_listed, span - 1):
                break
            listed.add(self.rng.randrange(span))
        wanted = sorted(listed)
        counts: dict[int, int] = {}

        def got(found: Layer, t: float) -> None:
            counts[found.layer] = len(found.members)
            if len(counts) < len(wanted):
                return
            est = self._estimate(request.room, t)
            est.layers = max(est.layers, seat.layer + 1)
            listed = tuple(
                LayerCount(i, counts[i]) for i in sorted(counts) if counts[i] or i == seat.layer
            )
            frame = LayerList(
                request.room,
                seat.layer,
                est.layers,
                est.total(self.config.layer_size),
                listed,
                request.id,
            )
            self._push(client, frame)

        for layer in wanted:
            self._read_layer(request.room, layer, now, got, cached=True)

    def signal(self, client: bytes, frame: Signal, now: float) -> None:
        """Route a signal within the sender's layer of `frame.room`, and nowhere else
        (docs/protocol.md 3.2): both ends seated in the same room and layer as this node
        sees it. Anyone else, whatever keys they hold, is an `unknown-peer`."""
        seat = self._seat_of_client(client, frame.room)
        view = self.views.get((frame.room, seat.layer)) if seat is not None else None
        target = view.members.get(frame.to) if view is not None else None
        if target is None and view is not None and seat is not None:
            target = self._offered_by(frame.to, client, frame.room, seat.layer)
        early = False
        if target is None:
            seat, target = self._offering(client, frame)
            view = self.views.get((frame.room, seat.layer)) if seat is not None else None
            early = target is not None
        if (
            seat is None
            or seat.record is None
            or view is None
            or target is None
            or frame.to == client
        ):
            self._unknown_peer(client, frame.id)
            return
        if target.home.node_id == self.node_id:
            if frame.to not in view.local or frame.to not in self.clients:
                self._unknown_peer(client, frame.id)
                return
            if not self._may_receive(frame.to, frame.payload, now):
                message = "the peer receives too many signals; slow down"
                self._push(client, error(ErrorCode.RATE_LIMITED, message, frame.id))
                return
            if early and seat is not None and seat.record is not None:
                # The member hears of the newcomer before its signal, as a member homed
                # elsewhere does from its node (`_link_signal`): its client takes signals
                # only from members its node named (2.5.3).
                self._push(frame.to, self._joined_frame(parse_presence(seat.record)))
            self._push(frame.to, SignalFrom(client, frame.payload, frame.room))
            self.counters["signal.local"] += 1
            return
        link = LinkSignal(client, frame.to, frame.payload, seat.record, frame.id)
        self._commands.append(Forward(client, target.home, link))
        self.counters["signal.remote"] += 1

    def _offering(self, client: bytes, frame: Signal) -> tuple[Seat | None, Presence | None]:
        """The seat a join under way is being given and the member `frame` is for, when
        the client signed that seat and its sign request named the member (2.5.3)."""
        state = self.clients.get(client)
        offering = state.offering.get(frame.room) if state is not None else None
        if offering is None or offering[0].record is None or state is None:
            return None, None
        seat, named = offering
        if (seat.room, seat.layer) not in state.listed and state.seats.get(seat.room) is not seat:
            return None, None  # taken back, or the client left the room meanwhile
        target = named.get(frame.to)
        return (seat, target) if target is not None else (None, None)

    def _offered_by(self, joiner: bytes, member: bytes, room: bytes, layer: int) -> Presence | None:
        """The signed presence of a client of this node whose join under way named
        `member` in `room`'s `layer` (2.5.3): the member may answer its offer before it is
        seated here too (a remote member's node learnt it from the offer's presence)."""
        state = self.clients.get(joiner)
        offering = state.offering.get(room) if state is not None else None
        if state is None or offering is None:
            return None
        seat, named = offering
        listed = (room, layer) in state.listed or state.seats.get(room) is seat
        if seat.layer != layer or seat.record is None or member not in named or not listed:
            return None
        return parse_presence(seat.record)

    def _name_proven(self, job: JoinState, found: Layer, now: float) -> None:
        """A join placed early (before its read's homes were proven) and being seated in
        `found`'s layer: once members are proven that its sign request did not name, the
        client is sent every member named so far in a `members` frame without an id, and
        may signal them like the others (2.5.3)."""
        state = self.clients.get(job.client)
        offering = state.offering.get(job.frame.room) if state is not None else None
        if offering is None or offering[0].layer != found.layer:
            return
        named = offering[1]
        fresh = [p for p in found.members if p != job.client and p not in named]
        if not fresh:
            return
        for peer in fresh:
            named[peer] = found.members[peer]
        members = tuple(_member(m) for m in named.values())
        total = self._estimate(found.room, now).total(self.config.layer_size)
        self._push(job.client, MemberList(found.room, found.layer, members, total))

    def _unknown_peer(self, client: bytes, ref: str | int | None) -> None:
        self.counters["signal.refused"] += 1
        self._push(client, error(ErrorCode.UNKNOWN_PEER, "no such peer in your layer", ref))

    # --- joining --------------------------------------------------------------------

    def _choose(self, job: JoinState, now: float) -> None:
        """Offer the newcomer a few random layers, the last and the next; read them at once."""
        room = job.frame.room
        estimate = self._estimate(room, now)
        job.estimate_at = replace(estimate)
        last = estimate.layers - 1
        # Layers a read ahead drew below the last are this round's random picks (2.5.4).
        drawn = sorted(i for i in job.ahead if i < last and i not in job.excluded)
        picks: set[int] = set(drawn[: min(self.config.choices, last)] if not job.probes else ())
        for _ in range(4 * self.config.choices):  # distinct draws below the last, at O(1)
            if last <= 0 or len(picks) >= min(self.config.choices, last) or job.probes:
                break
            pick = self.rng.randrange(last)
            if pick not in job.excluded:
                picks.add(pick)
        # Past the last layer: the next one; after a round that found everything full,
        # galloping (last+1, +2, +4, ...) so a stale estimate costs O(log gap) rounds.
        if job.probes:
            ahead = {last + 2**i for i in range(2 * job.probes + 1)}
        else:  # hints lag a growing room: a hinted size reads `hinted_ahead` layers past it
            ahead = {last + 1 + i for i in range(self.config.hinted_ahead if job.hinted else 1)}
        candidates = sorted((picks | {last} | ahead) - job.excluded)
        candidates = [c for c in candidates if c <= MAX_LAYER]
        found: dict[int, Layer] = {}

        early: dict[int, Provisional] = {}
        decided = [False]

        hoped: list[Seat] = []

        def provisional(layer: Provisional, t: float) -> None:
            early[layer.layer.layer] = layer
            if len(early) == len(candidates) and not decided[0]:
                decided[0] = self._place_early(job, early, t, cold=False)
                if not decided[0] and self.config.hopeful_placement:
                    hope = self._hopeful_layer(job, early)
                    if hope is not None:  # (2.5.7)
                        decided[0], job.hoping = True, True
                        self.counters["join.hopeful"] += 1
                        job.found, before = early[hope].layer, job.seat
                        self._sit(job, hope, t)
                        if job.seat is not before and job.seat is not None:
                            hoped.append(job.seat)
                        else:
                            job.hoping = False  # refused, or placed again meanwhile
                named: list[Layer] = list(found.values()) if decided[0] else []
                for proven in named:
                    self._name_proven(job, proven, t)  # as in `_first_round`

        def got(layer: Layer, t: float) -> None:
            found[layer.layer] = layer
            if decided[0]:
                self._name_proven(job, layer, t)
                if hoped and len(found) == len(candidates) and job.seat is hoped[0]:
                    self._hope_proven(job, found, hoped[0], t)
            elif len(found) == len(candidates):
                decided[0] = True
                self._place(job, found, t)

        # Read afresh: a lookup begun before the last join's store (a refresh's, say)
        # would offer a seat that is gone. A read this join started ahead is as fresh.
        started, job.ahead = job.ahead, {}
        for layer in candidates:
            read = started.get(layer)
            if read is not None:
                self._follow(read, got, provisional, now)
                continue
            job.reads += 1
            self._read_layer(room, layer, now, got, fresh=True, quorum=QUICK, early=provisional)

    def _read_ahead(self, job: JoinState, early: dict[int, Provisional], now: float) -> None:
        """Start the placement round's reads from the first round's hints, proven or not,
        while their homes are proven (2.5.4). Only which layers are read rests on those
        hints (their upper quartile, as the estimate takes proven lists' hints); what
        placement decides rests on proven lists, as always, and a layer it wants that was
        not read ahead is read then. Layers 0 and 1 both full if their lists prove themselves
        mean a placement round at least three layers up (a hint lagging behind)."""
        hints = sorted(h for read in early.values() for h in read.hints if 0 < h <= MAX_LAYER + 1)
        if not hints or job.ahead:
            return
        layers = hints[(3 * len(hints)) // 4] if len(hints) > 2 else hints[0]
        size = self.config.layer_size
        if len(early) == 2 and all(read.high >= size for read in early.values()):
            layers = max(layers, 3)
        if layers < 3:
            return  # the first round's layers are the ones placement reads
        last = layers - 1
        wanted = {last, *(last + 1 + i for i in range(self.config.hinted_ahead))}
        for _ in range(4 * self.config.choices):
            if len(wanted) >= self.config.choices + 1 + self.config.hinted_ahead:
                break
            wanted.add(self.rng.randrange(last))
        room = job.frame.room
        for layer in sorted(wanted - job.excluded):
            if layer > MAX_LAYER:
                continue
            read = job.ahead[layer] = ReadAhead()
            job.reads += 1
            self.counters["join.read_ahead"] += 1
            self._read_layer(
                room,
                layer,
                now,
                self._ahead_found(read),
                fresh=True,
                quorum=QUICK,
                early=self._ahead_early(read),
            )

    @staticmethod
    def _ahead_found(read: ReadAhead) -> Callable[[Layer, float], None]:
        def found(layer: Layer, t: float) -> None:
            read.found = layer
            for got, _ in list(read.waiters):
                got(layer, t)

        return found

    @staticmethod
    def _ahead_early(read: ReadAhead) -> Callable[[Provisional, float], None]:
        def early(layer: Provisional, t: float) -> None:
            read.early = layer
            for _, provisional in list(read.waiters):
                provisional(layer, t)

        return early

    def _follow(
        self,
        read: ReadAhead,
        got: Callable[[Layer, float], None],
        provisional: Callable[[Provisional, float], None],
        now: float,
    ) -> None:
        """Hand a placement round what a read ahead found, now or when it does."""
        read.waiters.append((got, provisional))
        if read.early is not None and self.config.early_decisions:
            provisional(read.early, now)
        if read.found is not None:
            got(read.found, now)

    def _place_early(
        self, job: JoinState, early: dict[int, Provisional], now: float, cold: bool
    ) -> bool:
        """Place before the home checks end when they cannot change the choice; True if
        placed. The seat lists of homes not yet proven count for nothing, as always;
        what is decided here is only what `_place` would decide whatever they prove."""
        layer = self._early_layer(job, early, cold)
        if layer is None:
            return False
        self.counters["join.early"] += 1
        job.found = early[layer].layer
        self._sit(job, layer, now)
        return True

    def _early_layer(self, job: JoinState, early: dict[int, Provisional], cold: bool) -> int | None:
        """The layer `_place` would choose from these reads for any outcome of the checks
        still pending, or None when they could change it (or the choice is a draw)."""
        current = self.estimates.get(job.frame.room)
        bounds = []
        for high in (False, True):  # the estimate these reads give, at either bound
            reads = {i: (r.high if high else r.low, r.layer.lists) for i, r in early.items()}
            estimate = self._estimate_after(current, reads)
            bounds.append(estimate.layers)
        if bounds[0] != bounds[1]:
            return None  # the checks decide how many layers the room has
        if any(read.unproven_hint > estimate.layers for read in early.values()):
            return None  # an unproven list's hint could still raise the estimate
        size = self.config.layer_size
        # `_first_round` places from layers 0 and 1 only when one of them has a seat.
        seat_sure = any(read.high < size for read in early.values())
        if cold and estimate.layers != 1 and (estimate.layers != 2 or not seat_sure):
            return None
        last = estimate.layers - 1
        candidates = [i for i in early if i not in job.excluded]
        below = [i for i in candidates if i <= last]
        maybe = [i for i in below if early[i].low < size]
        sure = [i for i in below if early[i].high < size]
        if sure:
            chosen = min(sure, key=lambda i: early[i].high)
            bound = early[chosen].high
            return chosen if all(early[i].low > bound for i in maybe if i != chosen) else None
        if maybe or job.attempt:
            return None
        for index in sorted(i for i in candidates if i > last):
            if early[index].high < size:
                return index
            if early[index].low < size:
                return None
        return None

    def _hopeful_layer(self, job: JoinState, early: dict[int, Provisional]) -> int | None:
        """Where `_place` would place if every home still being proven proves itself (the
        reads' upper bound, 2.5.7); None when even then it would probe further, or an
        unproven list's hint could raise the estimate."""
        reads = {i: (read.high, read.layer.lists) for i, read in early.items()}
        estimate = self._estimate_after(self.estimates.get(job.frame.room), reads)
        if any(read.unproven_hint > estimate.layers for read in early.values()):
            return None
        counts = {i: read.high for i, read in early.items()}
        return self._placement(job, counts, estimate.layers - 1)

    def _estimate_after(
        self, base: Estimate | None, reads: dict[int, tuple[int, list[SeatList]]]
    ) -> Estimate:
        """A copy of `base` (None: no estimate yet) as reads of these layers, each with the
        members counted and its seat lists, would leave it; `base` is not touched."""
        estimate = replace(base) if base is not None else Estimate()
        fresh = base is None
        for index in sorted(reads):
            count, lists = reads[index]
            self._observe_into(estimate, fresh, index, count, lists)
            fresh = False
        return estimate

    def _choices(self, job: JoinState, counts: dict[int, int], last: int) -> tuple[list[int], bool]:
        """The layers `_place` chooses among from the members counted in each layer read
        (none: every one is full, probe further), and whether it draws one at random."""
        size = self.config.layer_size
        open_ = [(c, i) for i, c in counts.items() if c < size and i <= last]
        open_ = [(count, i) for count, i in open_ if i not in job.excluded]
        if open_:
            least = min(count for count, _ in open_)  # ties broken at random: joins at
            return [i for count, i in open_ if count == least], True  # once spread
        beyond = [i for i in sorted(counts) if i > last and counts[i] < size]
        beyond = [i for i in beyond if i not in job.excluded]
        # The first new layer, unless this join was crowded out already: then one of the
        # first two, so joins that collided do not all collide again.
        return (beyond[:2], True) if job.attempt else (beyond[:1], False)

    def _placement(self, job: JoinState, counts: dict[int, int], last: int) -> int | None:
        """`_place`'s choice from the members counted in each layer read (None: every one
        is full, probe further)."""
        choices, drawn = self._choices(job, counts, last)
        if not choices:
            return None
        return self.rng.choice(choices) if drawn else choices[0]

    def _hope_proven(self, job: JoinState, found: dict[int, Layer], seat: Seat, now: float) -> None:
        """The homes of a hopeful placement's reads are proven (or not): it stands when the
        proven lists would have allowed the same choice (least full of the open layers
        read, or the first new one), and the seat waiting for this is made; otherwise the
        seat is taken back and placement decides again from the proven lists (2.5.7)."""
        job.hoping = False
        after, job.after_hope = job.after_hope, None
        hoped = seat.layer
        counts = {i: len(f.members) - (job.client in f.members) for i, f in found.items()}
        # What these reads say of the room's size without the newcomer's own seat, which
        # the read of its layer counts (`_place` reads the estimate before any seat).
        reads = {i: (counts[i], f.lists) for i, f in found.items()}
        estimate = self._estimate_after(job.estimate_at, reads)
        last = estimate.layers - 1
        if hoped in self._choices(job, counts, last)[0]:
            if after is not None:
                after(now)
            return
        self.counters["join.hopeful.moved"] += 1
        state = self.clients.get(job.client)
        if state is None:
            return
        room = job.frame.room
        state.offering.pop(room, None)
        if state.seats.get(room) is seat:
            self._unseat(state, room, now, announce=True)  # signed, not yet announced
        elif (room, hoped) in state.listed:
            self._unlist(state, room, hoped, now)
        job.majority, job.seat = None, None
        # The room as those reads showed it, without the seat taken back.
        current = self._estimate(room, now)
        current.layers, current.fill, current.fill_samples, current.last = (
            estimate.layers,
            estimate.fill,
            estimate.fill_samples,
            estimate.last,
        )
        layer = self._placement(job, counts, last)
        if layer is None:
            self._place(job, found, now)  # every layer read is full: probe on
            return
        job.found = found.get(layer)
        self._sit(job, layer, now)

    def _place(self, job: JoinState, found: dict[int, Layer], now: float) -> None:
        last = self._estimate(job.frame.room, now).layers - 1
        chosen = self._placement(job, {i: len(f.members) for i, f in found.items()}, last)
        if chosen is not None:
            layer = chosen
        elif job.probes < MAX_PROBES:
            job.probes += 1  # all full: the room has grown past what this node knew
            self.counters["join.probe"] += 1
            self._choose(job, now)
            return
        else:
            layer = max(max(found, default=0) + 1, last + 1)
            while layer in job.excluded:
                layer += 1
        if layer > MAX_LAYER:
            self._refuse(job, ErrorCode.UNAVAILABLE, "no layer with a seat", now)
            return
        job.found = found.get(layer)
        self._sit(job, layer, now)

    def _try_layer(self, job: JoinState, layer: int, now: float) -> None:
        """A layer asked for: honoured when it has a seat."""
        job.reads += 1

        def got(found: Layer, t: float) -> None:
            if len(found.members) - (job.client in found.members) >= self.config.layer_size:
                self._refuse(job, ErrorCode.LAYER_FULL, f"layer {layer} has no seat", t)
                return
            job.found = found
            self._sit(job, layer, t)

        # The whole lookup: no check follows a layer asked for (`_verify_seat`).
        self._read_layer(job.frame.room, layer, now, got, fresh=True, quorum=FULL)

    def _find_friend(self, job: JoinState, now: float) -> None:
        """The layer a member sits in, from the records its home node keeps for friends;
        believed only when a read of that layer shows the member there."""
        room, friend = job.frame.room, job.frame.friend
        assert friend is not None
        job.reads += 1

        def located(records: list[Record], t: float) -> None:
            layers: set[int] = set()
            for record in records:
                try:
                    layers.add(parse_seat_of(record, room, friend))
                except RoomError:
                    self.counters["read.junk"] += 1
            if not layers:
                self._refuse(job, ErrorCode.UNKNOWN_PEER, "that member is not in this room", t)
                return
            checked: dict[int, Layer] = {}
            wanted = sorted(layers)[:3]

            def got(found: Layer, t2: float) -> None:
                checked[found.layer] = found
                if len(checked) < len(wanted):
                    return
                for layer in wanted:
                    if friend in checked[layer].members:
                        job.requested = True
                        self._try_layer(job, layer, t2)
                        return
                self._refuse(job, ErrorCode.UNKNOWN_PEER, "that member is not in this room", t2)

            job.reads += len(wanted)
            for layer in wanted:
                self._read_layer(room, layer, t, got)

        self._read(seat_of_key(room, friend), now, located)

    def _sit(self, job: JoinState, layer: int, now: float) -> None:
        state = self.clients.get(job.client)
        if state is None:
            return
        room = job.frame.room
        current = state.seats.get(room)
        if current is not None and current.layer == layer:
            self._answer(job, layer, now)  # a friend in the client's own layer
            return
        # A move keeps the old seat until the new one is signed: a refused move leaves the
        # client where it was.
        view = self.views.get((room, layer))
        if view is not None and len(view.local) >= self.seats_per_record():
            # This node's seat list for the layer is as long as one record allows.
            if job.requested:
                self._refuse(job, ErrorCode.LAYER_FULL, f"layer {layer} has no seat here", now)
            else:
                job.excluded.add(layer)
                self._choose(job, now)
            return
        held = self._seats_by_source[(state.source, room)] - (current is not None)
        if room not in state.reserved and held >= self.config.seats_per_source:
            self.counters["join.refused.seats"] += 1
            message = "too many seats from your address in this room"
            self._refuse(job, ErrorCode.RATE_LIMITED, message, now)
            return
        in_all = self._seats_of_source[state.source] - (current is not None)
        limit = SOURCE_SEATS_FACTOR * self.config.seats_per_source
        if room not in state.reserved and in_all >= limit:
            self.counters["join.refused.source_seats"] += 1
            message = "too many seats from your address at this node"
            self._refuse(job, ErrorCode.RATE_LIMITED, message, now)
            return
        if room not in state.reserved:
            state.reserved.add(room)
            self._count(state.source, room)
        seat = job.seat = Seat(room, layer, int(now * 1000))
        if self.config.parallel_sign:
            self._sit_while_signing(job, state, seat, now)
            return
        self._ask_signature(state, seat, now, lambda ok, t: self._signed_seat(job, seat, ok, t))

    def _sit_while_signing(
        self, job: JoinState, state: ClientState, seat: Seat, now: float
    ) -> None:
        """Store the seat list naming the newcomer while it signs (a seat list is the node's
        own word; the client's signature is what node links carry); go on once both are
        done, or take the seat back if the signature does not come."""
        view = self._view(seat.room, seat.layer)
        where = (seat.room, seat.layer)
        state.listed.add(where)
        view.local.add(job.client)
        view.departed.pop(job.client, None)
        view.unstored[job.client] = seat
        done: dict[str, bool] = {}
        majority: list[list[Record]] = []

        def step(t: float) -> None:
            if job.seat is not seat:
                return  # placed again meanwhile (2.5.7): a later seat may have this `where`
            if "seated" in done:
                if "stored" in done:  # seated already: the rest of the holders' replies
                    held = view.held if done["stored"] else None
                    seated = job.after_hope
                    if job.hoping and seated is not None:
                        # Not seated before its homes are proven (2.5.7): nobody is told
                        # of it before then; if the choice is moved, this seat is gone.
                        def late(t2: float, seated: Callable[[float], None] = seated) -> None:
                            seated(t2)
                            self._late_check(job, seat, held, t2)

                        job.after_hope = late
                        return
                    self._late_check(job, seat, held, t)
                return
            if "signed" not in done or where not in state.listed:
                return  # or the client went away meanwhile (`disconnect` took it back)
            if "stored" not in done:
                if done["signed"] and majority and "majority" not in done:
                    done["majority"] = True
                    self._majority_check(job, seat, majority[0], t, done)
                return
            state.listed.discard(where)
            if done["signed"]:
                self._signed_seat(job, seat, True, t, stored=True)
                return
            self._unlist(state, seat.room, seat.layer, t)
            self._signed_seat(job, seat, False, t)

        def stored(t: float) -> None:
            done["stored"] = view.held is not None
            job.held = view.held
            step(t)

        def signed(ok: bool, t: float) -> None:
            done["signed"] = ok
            step(t)

        def held(records: list[Record], t: float) -> None:
            majority.append(records)
            step(t)

        paused = self._majority_paused.get(seat.room, float("-inf")) > now
        early = held if self.config.seat_at_majority and not (job.requested or paused) else None
        self._publish_seats(view, now, stored, early)
        # Where friends find it, stored now too (not awaited): by the time `joined` is
        # sent, a friend's join can find the layer (2.4, seat-of records).
        self._publish_seat_of(seat, now, job.client)
        members = None
        if self.config.early_offers and job.found is not None and job.found.layer == seat.layer:
            # Whom the client may offer to while its seat is stored and checked (2.5.3):
            # the members the placement read proved there, as `joined` would list them.
            named = {p: m for p, m in job.found.members.items() if p != job.client}
            state.offering[seat.room] = (seat, named)
            members = tuple(_member(m) for m in named.values())
        self._ask_signature(state, seat, now, signed, members)

    def _unlist(self, state: ClientState, room: bytes, layer: int, now: float) -> None:
        """Take back a seat listed while its signature was awaited."""
        state.listed.discard((room, layer))
        view = self.views.get((room, layer))
        held = state.seats.get(room)
        if view is None or (held is not None and held.layer == layer):
            return  # seated there already by an earlier join: nothing was lent
        view.local.discard(state.key)
        view.unstored.pop(state.key, None)
        view.since.pop(state.key, None)
        view.members.pop(state.key, None)
        self._publish_seats(view, now, None)
        if not view.local:
            del self.views[(room, layer)]

    def _signed_seat(
        self, job: JoinState, seat: Seat, ok: bool, now: float, stored: bool = False
    ) -> None:
        """The client signed (or did not); with `stored`, the seat list naming it is stored
        already (`parallel_sign`)."""
        state = self.clients.get(job.client)
        if state is None:
            return
        if not ok:
            self._refuse(
                job,
                ErrorCode.BAD_SIGNATURE,
                "presence was not signed in time, or not by your key",
                now,
            )
            return
        view = self._view(seat.room, seat.layer)
        if job.found is not None and job.found.layer == seat.layer:
            for peer, presence in job.found.members.items():  # as the choice read them
                if peer != job.client and self._learn(view, presence):
                    view.since[peer] = job.found.since.get(peer, 0)
        if state.seats.get(seat.room) is not seat:
            self._unseat(state, seat.room, now, announce=True)
            state.seats[seat.room] = seat
            if seat.room in state.reserved:
                state.reserved.discard(seat.room)  # the place held becomes the seat
            else:
                self._count(state.source, seat.room)
        view.local.add(job.client)
        view.departed.pop(job.client, None)
        assert seat.record is not None
        view.members[job.client] = parse_presence(seat.record)
        if stored:
            self._verify_seat(job, seat, now)
            return
        view.unstored[job.client] = seat  # "seated since" is stamped when its store starts

        def check(t: float) -> None:
            job.held = view.held
            self._verify_seat(job, seat, t)

        self._publish_seats(view, now, check)

    def _verify_seat(self, job: JoinState, seat: Seat, now: float) -> None:
        """Read the layer again: concurrent joins may have overfilled it; those seated
        last move on (a layer asked for is exempt, it was checked to have a seat)."""
        if job.requested or job.unchecked or job.majority is not None:
            self._seated(job, seat, now)  # (or checked at a majority: `_majority_check`)
            return

        def got(found: Layer, t: float) -> None:
            if job.seat is not seat:
                return  # placed again meanwhile (2.5.7)
            state = self.clients.get(job.client)
            if state is None or state.seats.get(seat.room) is not seat:
                self._refuse(job, ErrorCode.UNAVAILABLE, "left the room during the join", t)
                return
            size = self.config.layer_size
            rank = found.ranked()
            overfull = len(rank) > size and self._yields(job.client, rank, found)
            if overfull:
                self.counters["join.overfull"] += 1
                job.hoping, job.after_hope = False, None  # moving on decides anew
                state.offering.pop(seat.room, None)
                self._unseat(state, seat.room, t, announce=True)
                job.attempt += 1
                job.excluded.add(seat.layer)
                if job.attempt + 1 >= self.config.max_attempts:
                    # The last attempt goes past the last layer (read, with a seat) and
                    # stays there unchecked: a join always ends.
                    job.probes, job.unchecked = max(job.probes, 1), True
                self._choose(job, t)
                return
            self._seated(job, seat, t)

        held, job.held = job.held, None
        if held is not None and self.config.store_reads:
            # Every holder answered the store with all it then held (2.5.5): at each, what
            # a read right after the store would find there. The same path as a read's
            # records, home checks and freshness included.
            self.counters["join.check.store_read"] += 1
            self._layer_records(seat.room, seat.layer, held, now, got)
            return
        if self.config.store_reads:
            self.counters["join.check.fallback"] += 1
        job.reads += 1
        # The whole lookup, as before: a seat list whose store ended before this read began
        # is at every holder, and every holder's answer counts (a quorum of the first to
        # answer could all be outside the set it was stored at, and pages of a big layer
        # come from only one or two of them).
        # It waits for its home checks too: `joined` lists every member proven there.
        self._read_layer(seat.room, seat.layer, now, got, fresh=True, quorum=FULL)

    def _majority_check(
        self,
        job: JoinState,
        seat: Seat,
        records: list[Record],
        now: float,
        done: dict[str, bool],
    ) -> None:
        """Seated at a majority (2.5.6): the check made from what more than half of the
        holders held once the newcomer's seat list reached them. If it shows no overfill
        the newcomer yields to, seat it now; else (or once the whole store ended first)
        the check waits for every holder as before. With `early_decisions`, as soon as
        the home checks still pending cannot make it an overfill: the members of homes
        proven later are told as the rest of the holders' replies are. `done`:
        the seat's steps (`_sit_while_signing`); "seated" is added here, and once "stored"
        is there the whole store decides."""
        state = self.clients.get(job.client)
        where = (seat.room, seat.layer)

        def stale() -> bool:
            """The whole store ended first (it decides), or the seat is gone or replaced."""
            return (
                "stored" in done
                or state is None
                or where not in state.listed
                or job.seat is not seat
            )

        def seat_from(found: Layer, t: float) -> None:
            assert state is not None
            self.counters["join.majority"] += 1
            done["seated"] = True
            state.listed.discard(where)
            job.majority, job.held = found, None
            view = self._view(seat.room, seat.layer)
            for peer, presence in found.members.items():  # as the majority showed them
                if peer != job.client and self._learn(view, presence):
                    view.since[peer] = found.since.get(peer, 0)
            self._signed_seat(job, seat, True, t, stored=True)

        def early(provisional: Provisional, t: float) -> None:
            if stale():
                return
            members = provisional.layer.members
            most = len(members) + provisional.unproven + (job.client not in members)
            if most <= self.config.layer_size:  # no outcome of those checks overfills it
                self.counters["join.majority.early"] += 1
                seat_from(provisional.layer, t)

        def got(found: Layer, t: float) -> None:
            if stale():
                return
            rank = found.ranked()
            if len(rank) > self.config.layer_size and self._yields(job.client, rank, found):
                self.counters["join.majority.overfull"] += 1
                return
            seat_from(found, t)

        # The newcomer counts there, by its own seat: its own list is known first-hand, and
        # the view takes it in only once seated.
        assert seat.record is not None
        joining = (parse_presence(seat.record), seat.since)
        self._layer_records(seat.room, seat.layer, records, now, got, early, joining)

    def _late_check(
        self, job: JoinState, seat: Seat, held: list[Record] | None, now: float
    ) -> None:
        """A join seated at a majority (2.5.6): every holder's reply, as the check would
        have read them (or the whole read when some holder did not say all it holds).
        Members they show that the majority did not are learned and told, as a periodic
        read tells them, and their homes hear of the newcomer; an overfill is counted,
        the newcomer stays (the majorities of two racing joins share a holder, so one of
        them saw the other and did not sit at a majority)."""
        job.majority = None
        told = job.announced

        def got(found: Layer, t: float) -> None:
            state = self.clients.get(job.client)
            view = self.views.get((seat.room, seat.layer))
            if state is None or state.seats.get(seat.room) is not seat or view is None:
                return
            rank = found.ranked()
            if len(rank) > self.config.layer_size and self._yields(job.client, rank, found):
                self.counters["join.late_overfull"] += 1
            homes = {p.home for p in view.members.values() if p.home.node_id not in told}
            assert seat.record is not None
            for home in sorted(homes, key=lambda h: h.node_id):
                self.counters["join.late_told"] += 1
                self._commands.append(TellNode(home, LinkPresence(seat.record)))

        if held is not None:
            self._layer_records(seat.room, seat.layer, held, now, got)
            return
        self.counters["join.check.fallback"] += 1
        self._read_layer(seat.room, seat.layer, now, got, fresh=True, quorum=FULL)

    def _refreshed(self, view: LayerView) -> Callable[[Layer, float], None]:
        """A periodic read of a layer of this node's clients: over `layer_size` twice in a
        row, majorities have missed a member there (`majority_pause`)."""

        def got(found: Layer, t: float) -> None:
            if len(found.members) <= self.config.layer_size:
                view.overfull_reads = 0
                return
            view.overfull_reads += 1
            if view.overfull_reads >= 2 and self.config.seat_at_majority:
                self.counters["join.majority.paused"] += 1
                self._pause_majority(view.room, t)

        return got

    def _pause_majority(self, room: bytes, now: float) -> None:
        """This room's joins wait for every holder for a while (`majority_pause`)."""
        self._majority_paused[room] = now + self.config.majority_pause
        self._majority_paused.move_to_end(room)
        while self._majority_paused:
            oldest, until = next(iter(self._majority_paused.items()))
            if until > now and len(self._majority_paused) <= self.config.max_estimates:
                break
            del self._majority_paused[oldest]

    def _yields(self, client: bytes, rank: list[bytes], found: Layer) -> bool:
        """In an overfilled layer, whether the newcomer moves on: when it ranks past the
        layer's size, or when someone ranked after it is homed elsewhere (that one may
        have checked before this store was visible, and stayed)."""
        mine = rank.index(client) if client in rank else len(rank)
        if mine >= self.config.layer_size:
            return True
        later = rank[mine + 1 :]
        return any(found.members[peer].home.node_id != self.node_id for peer in later)

    def _seated(self, job: JoinState, seat: Seat, now: float) -> None:
        if job.hoping:  # placed on homes still being proven: seated once they are (2.5.7)
            job.after_hope = lambda t: self._seated(job, seat, t)
            return
        state = self.clients.get(job.client)
        view = self.views.get((seat.room, seat.layer))
        if state is None or view is None or job.client not in view.members:
            self._refuse(job, ErrorCode.UNAVAILABLE, "left the room during the join", now)
            return
        state.joining = False
        state.offering.pop(seat.room, None)
        assert seat.record is not None
        self._announce(
            view,
            LinkPresence(seat.record),
            self._joined_frame(view.members[job.client]),
            job.client,
        )
        if job.majority is not None:  # the rest of the holders may show more homes (2.5.6)
            job.announced = {p.home.node_id for p in view.members.values()} | {self.node_id}
        if not self.config.parallel_sign:  # else stored while it signed
            self._publish_seat_of(seat, now)
        estimate = self._estimate(seat.room, now)
        if seat.layer >= estimate.layers and job.majority is not None:
            # The seat opens the last layer, before a read of it was observed (2.5.6).
            estimate.layers, estimate.last = seat.layer + 1, len(view.members)
        estimate.layers = max(estimate.layers, seat.layer + 1)
        if seat.layer == estimate.layers - 1:
            estimate.last = max(estimate.last, len(view.members))
        self._push_joined(job, view, estimate, now)
        self._commands.append(
            JoinFinished(job.client, seat.room, seat.layer, now - job.started, job.reads)
        )

    def _answer(self, job: JoinState, layer: int, now: float) -> None:
        """A join while already seated in that layer: the layer as it is now."""
        state = self.clients.get(job.client)
        view = self.views.get((job.frame.room, layer))
        if state is None or view is None:
            return
        state.joining = False
        self._push_joined(job, view, self._estimate(job.frame.room, now), now)

    def _push_joined(self, job: JoinState, view: LayerView, estimate: Estimate, now: float) -> None:
        """Answer a join with the layer `view` as this node sees it, and the estimates."""
        peers = tuple(_member(p) for p in view.members.values() if p.peer != job.client)
        total = max(estimate.total(self.config.layer_size), len(view.members))
        ice = self.ice_servers(job.client, now)
        frame = Joined(view.room, view.layer, peers, total, ice, job.frame.id, estimate.layers)
        self._push(job.client, frame)

    def _refuse(self, job: JoinState, code: ErrorCode, message: str, now: float) -> None:
        state = self.clients.get(job.client)
        if state is None:
            return
        state.joining = False
        state.offering.pop(job.frame.room, None)
        self._release(state, job.frame.room)
        self.counters[f"join.refused.{code.value}"] += 1
        self._push(job.client, error(code, message, job.frame.id))
        self._commands.append(
            JoinFinished(job.client, job.frame.room, None, now - job.started, job.reads)
        )

    def _release(self, state: ClientState, room: bytes) -> None:
        """Give back the place a join held against its source."""
        if room in state.reserved:
            state.reserved.discard(room)
            self._uncount(state.source, room)

    def _count(self, source: str, room: bytes) -> None:
        self._seats_by_source[(source, room)] += 1
        self._seats_of_source[source] += 1

    def _uncount(self, source: str, room: bytes) -> None:
        left = self._seats_by_source[(source, room)] - 1
        if left > 0:
            self._seats_by_source[(source, room)] = left
        else:
            del self._seats_by_source[(source, room)]
        total = self._seats_of_source[source] - 1
        if total > 0:
            self._seats_of_source[source] = total
        else:
            del self._seats_of_source[source]

    # --- a client's signature ----------------------------------------------------------

    def _ask_signature(
        self,
        state: ClientState,
        seat: Seat,
        now: float,
        then: Callable[[bool, float], None],
        members: tuple[Member, ...] | None = None,
    ) -> None:
        """Ask the client to sign its presence for `seat` (it proves its consent and travels
        on node links); `then(ok)` once it answered, or failed to in time. `members`: whom
        a join under way may offer to once signed (2.5.3)."""
        seq = max(seat.seq + 1, int(now * 1000))
        expires_at = int(now + self.config.presence_ttl)
        key = layer_key(seat.room, seat.layer)
        value = presence_value(seat.room, seat.layer, self.home)
        state.sign_counter += 1
        request = f"sign-{state.sign_counter}"
        frame = SignRequest(
            request,
            seat.room,
            seat.layer,
            key,
            seq,
            expires_at,
            value.decode(),
            self.node_id,
            self.home.url,
            members,
        )

        def answered(sig: bytes | None, t: float) -> None:
            if sig is None:
                then(False, t)
                return
            record = Record(key, state.key, seq, expires_at, value, sig)
            if check_record(record, t, self.record_limits, self.verify) is not Refusal.STORED:
                self.counters["sign.refused"] += 1
                then(False, t)
                return
            seat.seq, seat.record = seq, record
            then(True, t)

        self._signs[(state.key, request)] = (now + self.config.sign_timeout, answered)
        self._at(now + self.config.sign_timeout, (state.key, request))
        self._push(state.key, frame)

    # --- seats ---------------------------------------------------------------------------

    def _unseat(self, state: ClientState, room: bytes, now: float, announce: bool) -> None:
        seat = state.seats.pop(room, None)
        if seat is None:
            return
        self._uncount(state.source, room)
        view = self.views.get((room, seat.layer))
        if view is None:
            return
        view.local.discard(state.key)
        view.members.pop(state.key, None)
        view.since.pop(state.key, None)
        departed = max(seat.seq, int(now * 1000))
        expires = int(now + self.config.presence_ttl)
        view.departed[state.key] = (departed, expires)
        if announce:
            absence = LinkAbsence(room, seat.layer, state.key, departed, expires)
            self._announce(view, absence, PeerLeft(room, seat.layer, state.key), state.key)
        self._publish_seats(view, now, None)
        if not view.local:
            del self.views[(room, seat.layer)]

    def _publish_seats(
        self,
        view: LayerView,
        now: float,
        then: Callable[[float], None] | None,
        early: Callable[[list[Record], float], None] | None = None,
    ) -> None:
        """Store this node's seat list for `view` (one record per node and layer); one
        store at a time per layer, the latest state always ends up stored. `early` hears
        what a majority of the holders held once it reached them (`seat_at_majority`)."""
        if then is not None:
            view.waiting.append(then)
        if early is not None:
            view.early.append(early)
        if view.publishing:
            view.dirty = True
            return
        view.publishing, view.dirty = True, False
        waiting, view.waiting = view.waiting, []
        earlies, view.early = view.early, []
        estimate = self._estimate(view.room, now)
        stamp = int(now * 1000)
        # Seated since the store that makes a seat visible: of two joiners that overfill
        # a layer, the one whose store started later ranks later and moves on.
        for peer, seat in view.unstored.items():
            if peer in view.local:
                seat.since = view.since[peer] = stamp
        view.unstored.clear()
        seats = sorted(((p, view.since.get(p, stamp)) for p in view.local), key=_by_since)
        limit = self.seats_per_record()
        value = seat_list_value(
            view.room,
            view.layer,
            self.home,
            self.dht_addr,
            seats[:limit],
            estimate.layers,
            estimate.total(self.config.layer_size),
        )
        view.seats_seq = max(view.seats_seq + 1, int(now * 1000))
        # An empty list replaces the last one at once and lapses soon after.
        ttl = (
            self.config.presence_ttl
            if seats
            else min(self.config.presence_ttl, self.config.refresh)
        )
        key = layer_key(view.room, view.layer)
        record = Record.create(self.identity, key, value, view.seats_seq, int(now + ttl) + 1)

        def read_back(held: list[Record] | None) -> None:
            view.held = held

        def stored(ok: bool, t: float) -> None:
            view.publishing = False
            if not ok:
                self.counters["publish.failed"] += 1
                view.held = None
            for then_ in waiting:
                then_(t)
            view.held = None
            if view.dirty or (view.waiting and (view.room, view.layer) in self.views):
                self._publish_seats(view, t, None)

        # A join waits on this store, then reads the whole lookup (`_verify_seat`): a
        # majority of the holders is enough for two racing joins to meet (2.5).
        majority = self.config.majority_seats and bool(waiting)
        if self.config.store_reads and waiting:
            # Or every holder reads back what it holds, and the check needs no read (2.5.5),
            # made first from a majority of them (2.5.6).
            def held(records: list[Record], t: float) -> None:
                for early_ in earlies:
                    early_(records, t)

            self._publish(record, now, stored, read_back=read_back, early=held if earlies else None)
            return
        self._publish(record, now, stored, majority=majority)

    def _publish_seat_of(self, seat: Seat, now: float, client: bytes | None = None) -> None:
        seat_of_at = now
        seat.seat_of_at = seat_of_at
        client = client if client is not None else self._client_of(seat)
        record = Record.create(
            self.identity,
            seat_of_key(seat.room, client),
            seat_of_value(seat.room, client, seat.layer),
            int(now * 1000),
            int(now + self.config.seat_of_ttl),
        )
        self._publish(record, now, lambda _ok, _t: None)

    def _client_of(self, seat: Seat) -> bytes:
        assert seat.record is not None
        return seat.record.publisher

    # --- reading layers -------------------------------------------------------------------

    def _read(
        self,
        key: bytes,
        now: float,
        then: Callable[[list[Record], float], None],
        fresh: bool = False,
        quorum: int | None = None,
        cached: bool = False,
    ) -> None:
        """Read the records under `key`; concurrent reads of one key share one lookup,
        unless `fresh` (a check after a store must not join a lookup begun before it).
        `quorum` says how complete it must be (`quorum_reads`): reads share a lookup only
        with reads as complete. A read that may be `cached` (what a client asks to see,
        not what a decision rests on) is answered from one that ended within
        `read_cache_ttl`."""
        if not self.config.quorum_reads:
            quorum = None
        if cached and quorum is None and self.config.read_cache_ttl > 0:
            recent = self._cached.get(key)
            if recent is not None and now - recent[0] < self.config.read_cache_ttl:
                self.counters["read.cached"] += 1
                then(list(recent[1]), now)
                return
        shared = (key, quorum)
        op = None if fresh else self._reading.get(shared)
        if op is not None:
            self._reads[op].append(then)
            return
        self._op += 1
        self._reading[shared] = self._op
        self._read_keys[self._op] = shared
        self._reads[self._op] = [then]
        self._commands.append(ReadKey(self._op, key, quorum))

    def read_done(self, op: int, records: list[Record] | None, now: float) -> None:
        """The records found under a key read (None: the read failed; taken as empty)."""
        waiters = self._reads.pop(op, None)
        if waiters is None:
            return
        shared = self._read_keys.pop(op)
        if self._reading.get(shared) == op:
            del self._reading[shared]
        if records is None:
            self.counters["read.failed"] += 1
        elif self.config.read_cache_ttl > 0:
            self._cached[shared[0]] = (now, list(records))
            self._cached.move_to_end(shared[0])
            while len(self._cached) > self.config.max_cached_reads:
                self._cached.popitem(last=False)
        for then in waiters:
            then(records or [], now)

    def _publish(
        self,
        record: Record,
        now: float,
        then: Callable[[bool, float], None],
        majority: bool = False,
        read_back: Callable[[list[Record] | None], None] | None = None,
        early: Callable[[list[Record], float], None] | None = None,
    ) -> None:
        self._op += 1
        self._publishes[self._op] = then
        if read_back is not None:
            self._read_backs[self._op] = read_back
            if early is not None:
                self._helds[self._op] = early
        majority = majority and (self.config.quorum_reads or self.config.majority_seats)
        reading = read_back is not None
        command = PublishRecord(self._op, record, majority, reading, reading and early is not None)
        self._commands.append(command)

    def publish_held(self, op: int, held: list[Record], now: float) -> None:
        """What a majority of the holders of a store that reads back held (`RecordsHeld`),
        before it ended."""
        early = self._helds.pop(op, None)
        if early is not None:
            early(held, now)

    def publish_done(self, op: int, ok: bool, now: float, held: list[Record] | None = None) -> None:
        """A store ended (`ok`: some node took it); `held`: what a store that read back
        found at every holder (None: not asked, or some holder did not say)."""
        self._helds.pop(op, None)
        read_back = self._read_backs.pop(op, None)
        if read_back is not None:
            read_back(held if ok else None)
        then = self._publishes.pop(op, None)
        if then is not None:
            then(ok, now)

    def _read_layer(
        self,
        room: bytes,
        layer: int,
        now: float,
        then: Callable[[Layer, float], None],
        fresh: bool = False,
        quorum: int | None = None,
        early: Callable[[Provisional, float], None] | None = None,
        cached: bool = False,
    ) -> None:
        """Read a layer: its seat lists whose home nodes proved themselves, this node's own
        seats, the view and the estimate brought up to date; then `then(layer)`. With
        `early` (and `early_decisions`), `early(provisional)` first, while homes are
        still being checked."""

        def got(records: list[Record], t: float) -> None:
            self._layer_records(room, layer, records, t, then, early)

        self._read(layer_key(room, layer), now, got, fresh, quorum, cached)

    def _layer_records(
        self,
        room: bytes,
        layer: int,
        records: list[Record],
        now: float,
        then: Callable[[Layer, float], None],
        early: Callable[[Provisional, float], None] | None = None,
        joining: tuple[Presence, int] | None = None,
    ) -> None:
        """A layer from the records found under its key (by a read, or read back by a
        store): its seat lists, their homes proven (2.4), then `then(layer)`; `joining`,
        a newcomer of this node not yet in the view, counted there as seated since then."""
        lists = []
        for record in records:
            if record.publisher == self.identity.public_key:
                continue  # this node's own seats are known first-hand
            try:
                seat_list = parse_seat_list(record)
            except RoomError:
                self.counters["read.junk"] += 1
                continue
            if seat_list.room == room and seat_list.layer == layer:
                lists.append(seat_list)
        if early is not None and self.config.early_decisions:
            early(self._provisional(room, layer, lists, now), now)
        self._check_homes(
            lists, now, lambda t2: self._layer_read(room, layer, lists, t2, then, joining)
        )

    def _layer_read(
        self,
        room: bytes,
        layer: int,
        lists: list[SeatList],
        now: float,
        then: Callable[[Layer, float], None],
        joining: tuple[Presence, int] | None = None,
    ) -> None:
        verified = [s for s in lists if self._home_ok(s.home.node_id, now) and s.expires_at > now]
        members: dict[bytes, Presence] = {}
        since: dict[bytes, int] = {}
        for seat_list in verified:
            for presence, (peer, seated) in zip(
                seat_list.presences(), seat_list.seats, strict=True
            ):
                if len(members) >= self.config.view_cap:
                    self.counters["read.view_full"] += 1
                    break
                members[peer] = presence
                since[peer] = seated
        view = self.views.get((room, layer))
        if view is not None:
            self._refresh_view(view, verified, members, now)
            members = dict(view.members)
            since = {p: view.since.get(p, since.get(p, 0)) for p in members}
        else:
            for state in self.clients.values():
                seat = state.seats.get(room)
                if seat is not None and seat.layer == layer and seat.record is not None:
                    members[state.key] = parse_presence(seat.record)
                    since[state.key] = seat.since
        if joining is not None:
            presence, seated = joining
            members[presence.peer], since[presence.peer] = presence, seated
        self._observe(room, layer, len(members), verified, now)
        then(Layer(room, layer, members, since, verified), now)

    def _provisional(
        self, room: bytes, layer: int, lists: list[SeatList], now: float
    ) -> Provisional:
        """What a read says before its home checks end (no side effects): the members of
        lists whose homes are proven and this node's own, and what the others may add."""
        members: dict[bytes, Presence] = {}
        since: dict[bytes, int] = {}
        unproven: set[bytes] = set()
        hint = 0
        hints: list[int] = []
        proven: list[SeatList] = []
        for seat_list in lists:
            if seat_list.expires_at <= now:
                continue
            node_id = seat_list.home.node_id
            ok = self._home_ok(node_id, now)
            home = self.homes.get(node_id)
            refused = home is not None and home.ok is False and home.until > now
            if ok:
                proven.append(seat_list)
            elif refused:
                continue
            else:
                hint = max(hint, seat_list.layers_hint)
            hints.append(seat_list.layers_hint)
            for presence, (peer, seated) in zip(
                seat_list.presences(), seat_list.seats, strict=True
            ):
                if ok:
                    members[peer] = presence
                    since[peer] = seated
                else:
                    unproven.add(peer)
        view = self.views.get((room, layer))
        for state in self.clients.values():
            seat = state.seats.get(room)
            if seat is not None and seat.layer == layer and seat.record is not None:
                members[state.key] = parse_presence(seat.record)
                since[state.key] = seat.since
        if view is not None:
            for peer in view.local:
                known = view.members.get(peer)
                if known is not None:
                    members[peer] = known
                    since[peer] = view.since.get(peer, since.get(peer, 0))
        unproven.difference_update(members)
        layer_read = Layer(room, layer, members, since, proven)
        return Provisional(layer_read, len(unproven), hint, tuple(hints))

    def _refresh_view(
        self, view: LayerView, lists: list[SeatList], seen: dict[bytes, Presence], now: float
    ) -> None:
        """Bring a view up to date with a read: newcomers are told, members a newer seat
        list of their own home no longer lists have left."""
        for seat_list in lists:
            for presence, (peer, seated) in zip(
                seat_list.presences(), seat_list.seats, strict=True
            ):
                if peer in seen and self._learn(view, presence):
                    view.since[peer] = seated
                    self._tell_layer(view, self._joined_frame(presence), peer)
        latest = {s.home.node_id: s.seq for s in lists}
        for peer, presence in list(view.members.items()):
            if peer in view.local or peer in seen:
                continue
            newer = latest.get(presence.home.node_id, -1) >= presence.seq
            if newer or presence.expires_at <= now + 1:
                self._member_left(view, peer)
        for peer, (_, expires) in list(view.departed.items()):
            if expires <= now:
                del view.departed[peer]

    # --- estimates --------------------------------------------------------------------

    def _estimate(self, room: bytes, now: float) -> Estimate:
        estimate = self.estimates.get(room)
        if estimate is None:
            estimate = self.estimates[room] = Estimate(used_at=now)
            while len(self.estimates) > self.config.max_estimates:
                self.estimates.popitem(last=False)
        self.estimates.move_to_end(room)
        estimate.used_at = now
        return estimate

    def _observe(
        self, room: bytes, layer: int, count: int, lists: list[SeatList], now: float
    ) -> None:
        """What a read of layer `layer` says about the room's size (module docstring)."""
        fresh = room not in self.estimates
        self._observe_into(self._estimate(room, now), fresh, layer, count, lists)

    def _observe_into(
        self, estimate: Estimate, fresh: bool, layer: int, count: int, lists: list[SeatList]
    ) -> None:
        hints = [s.layers_hint for s in lists if 0 < s.layers_hint <= MAX_LAYER + 1]
        if hints:
            # Hints lag (a node learns growth only as it reads past its last layer), so
            # the upper quartile: fresher than the median, still not any one node's word.
            hints.sort()
            hinted = hints[(3 * len(hints)) // 4] if len(hints) > 2 else hints[0]
            if fresh or estimate.fill_samples == 0:
                estimate.layers = max(estimate.layers, hinted)
            else:
                estimate.layers = max(estimate.layers, min(hinted, 2 * estimate.layers + 1))
        if count and layer >= estimate.layers:
            estimate.layers = layer + 1
        elif not count and layer == estimate.layers - 1 and layer > 0:
            estimate.layers = layer
        if layer < estimate.layers - 1:
            weight = max(self.config.fill_weight, 1 / (estimate.fill_samples + 1))
            estimate.fill += weight * (count - estimate.fill)
            estimate.fill_samples += 1
        elif layer == estimate.layers - 1:
            estimate.last = count

    # --- home nodes -------------------------------------------------------------------

    def _home_ok(self, node_id: bytes, now: float) -> bool:
        if node_id == self.node_id:
            return True
        home = self.homes.get(node_id)
        return home is not None and home.ok is True and home.until > now

    def _check_homes(
        self, lists: list[SeatList], now: float, then: Callable[[float], None]
    ) -> None:
        """Have every home node named in `lists` proved itself (cached); then `then()`."""
        pending: set[bytes] = set()
        forgotten: list[Callable[[float], None]] = []

        def one_done(node_id: bytes) -> Callable[[float], None]:
            def done(t: float) -> None:
                pending.discard(node_id)
                if not pending:
                    then(t)

            return done

        for seat_list in lists:
            node_id = seat_list.home.node_id
            if node_id == self.node_id or node_id in pending:
                continue
            home = self.homes.get(node_id)
            known = home is not None and home.addr == seat_list.dht
            if known and home is not None and home.ok is not None and home.until > now:
                continue  # proved (or failed) lately
            # A check under way is waited for whatever address this list names: one key's
            # lists naming other addresses would otherwise replace it, and what waited on
            # it (a read, a join) would wait for ever.
            if home is None or home.ok is not None:
                home = HomeState(seat_list.dht)
                self.homes[node_id] = home
                while len(self.homes) > self.config.max_homes:
                    _, gone = self.homes.popitem(last=False)
                    forgotten.extend(gone.waiting)  # unproven, as a failed check
                self._commands.append(CheckHome(node_id, seat_list.dht))
            pending.add(node_id)
            home.waiting.append(one_done(node_id))
        if not pending:
            then(now)
        for done in forgotten:
            done(now)

    def home_checked(self, node_id: bytes, addr: Address, ok: bool, now: float) -> None:
        """Whether `node_id` proved its key at `addr` (the DHT's identify)."""
        home = self.homes.get(node_id)
        if home is None or home.addr != addr:
            return
        home.ok = ok
        home.until = now + (self.config.home_ttl if ok else self.config.home_ttl / 10)
        if not ok:
            self.counters["home.unproven"] += 1
        waiting, home.waiting = home.waiting, []
        for then in waiting:
            then(now)

    # --- views and what the layer hears ----------------------------------------------------

    def _view(self, room: bytes, layer: int) -> LayerView:
        view = self.views.get((room, layer))
        if view is None:
            view = self.views[(room, layer)] = LayerView(room, layer)
        return view

    def _learn(self, view: LayerView, presence: Presence) -> bool:
        """Take a presence into a view; True when it is news (a member we did not know)."""
        gone = view.departed.get(presence.peer)
        if gone is not None and presence.seq <= gone[0]:
            return False
        view.departed.pop(presence.peer, None)
        known = view.members.get(presence.peer)
        if known is not None and known.seq >= presence.seq:
            return False
        if (
            known is not None
            and known.home.node_id != presence.home.node_id
            and presence.peer in view.local
        ):
            return False  # our own client: nobody else's word moves it
        if known is None and len(view.members) >= self.config.view_cap:
            self.counters["view.full"] += 1
            return False
        view.members[presence.peer] = presence
        if presence.peer not in view.local:
            self._at(presence.expires_at, (view.room, view.layer, presence.peer))
        return known is None

    def _learn_and_tell(self, view: LayerView, presence: Presence) -> None:
        if self._learn(view, presence):
            self._tell_layer(view, self._joined_frame(presence), presence.peer)

    def _member_left(self, view: LayerView, peer: bytes) -> None:
        del view.members[peer]
        view.since.pop(peer, None)
        self._tell_layer(view, PeerLeft(view.room, view.layer, peer))

    def _tell_layer(self, view: LayerView, frame: ServerFrame, *skip: bytes) -> None:
        """Push `frame` to this node's clients in the layer; one whose join is still
        running hears the layer as a whole in its `joined` instead."""
        for key in sorted(view.local):
            state = self.clients.get(key)
            if key not in skip and state is not None and not state.joining:
                self._push(key, frame)

    def _announce(self, view: LayerView, link: LinkFrame, frame: ServerFrame, peer: bytes) -> None:
        """Tell this node's clients in the layer, and the layer's other home nodes."""
        self._tell_layer(view, frame, peer)
        homes = {p.home for p in view.members.values() if p.home.node_id != self.node_id}
        for home in sorted(homes, key=lambda h: h.node_id):
            self._commands.append(TellNode(home, link))

    def _joined_frame(self, presence: Presence) -> PeerJoined:
        home = presence.home
        return PeerJoined(presence.room, presence.layer, presence.peer, home.node_id, home.url)

    def _seat_of_client(self, client: bytes, room: bytes) -> Seat | None:
        state = self.clients.get(client)
        return state.seats.get(room) if state is not None else None

    def _join_bucket(self, source: str, room: bytes, now: float) -> TokenBucket:
        where = f"{source}|{room.hex()}"
        bucket = self._joins.get(where)
        if bucket is None:
            if len(self._joins) >= 50_000:
                self._prune_buckets(now)
            rate = self.config.joins_per_minute / 60
            bucket = self._joins[where] = TokenBucket(rate, self.config.joins_per_minute, now)
        return bucket

    def _source_join_bucket(self, source: str, now: float) -> TokenBucket:
        bucket = self._source_joins.get(source)
        if bucket is None:
            if len(self._source_joins) >= 50_000:
                self._prune_buckets(now)
            per_minute = self.config.joins_per_minute * SOURCE_JOINS_FACTOR
            bucket = self._source_joins[source] = TokenBucket(per_minute / 60, per_minute, now)
        return bucket

    def _prune_buckets(self, now: float) -> None:
        for buckets in (self._joins, self._source_joins):
            for where, bucket in list(buckets.items()):
                if bucket.full(now):
                    del buckets[where]

    # --- the clock -----------------------------------------------------------------------

    def _period(self) -> float:
        return self.config.refresh * self.rng.uniform(0.9, 1.1)

    def _refresh(self, now: float) -> None:
        """Renew what this node keeps alive, re-read its layers, forget what lapsed."""
        self._next_refresh = now + self._period() if self.clients or self.views else None
        for view in list(self.views.values()):
            for peer, presence in list(view.members.items()):
                if peer not in view.local and presence.expires_at <= now:
                    self._member_left(view, peer)
        for state in list(self.clients.values()):
            for seat in list(state.seats.values()):
                self._renew(state, seat, now)
        # The whole lookup: holders that answer first cannot hide a member past this read.
        for view in list(self.views.values()):
            self._publish_seats(view, now, None)
            self._read_layer(view.room, view.layer, now, self._refreshed(view), quorum=FULL)
        # One read past each room's last layer keeps the estimate, and the hints this
        # node's seat lists carry, from going stale while others' joins grow the room.
        for room in sorted({view.room for view in self.views.values()}):
            estimate = self._estimate(room, now)
            for ahead in (estimate.layers, estimate.layers + 1):
                if ahead <= MAX_LAYER:
                    self._read_layer(room, ahead, now, lambda _found, _t: None, quorum=FULL)
        self._prune_buckets(now)
        for node_id, home in list(self.homes.items()):
            if home.until <= now and not home.waiting:
                del self.homes[node_id]
        for room, estimate in list(self.estimates.items()):
            if estimate.used_at + self.config.estimate_ttl <= now:
                del self.estimates[room]

    def _renew(self, state: ClientState, seat: Seat, now: float) -> None:
        """A fresh client signature (it proves the seat on node links), and the record
        friends find it by when that is half way to its expiry."""

        def renewed(ok: bool, t: float) -> None:
            if not ok:
                self.counters["sign.renew_failed"] += 1
                return
            view = self.views.get((seat.room, seat.layer))
            if view is not None and seat.record is not None and state.key in view.members:
                view.members[state.key] = parse_presence(seat.record)

        self._ask_signature(state, seat, now, renewed)
        if now - seat.seat_of_at >= self.config.seat_of_ttl / 2:
            self._publish_seat_of(seat, now)

    # --- node links ---------------------------------------------------------------------------

    def link_frame(self, remote: bytes, frame: LinkFrame, now: float) -> None:
        """A frame from node `remote` (the link proved its id)."""
        if isinstance(frame, LinkSignal):
            self._link_signal(remote, frame, now)
        elif isinstance(frame, LinkSignalError):
            self._link_signal_error(remote, frame)
        elif isinstance(frame, LinkPresence):
            presence = self._presence_from(remote, frame.record, now)
            view = self.views.get((presence.room, presence.layer)) if presence else None
            if presence is not None and view is not None:
                self._learn_and_tell(view, presence)
        elif isinstance(frame, LinkAbsence):
            self._link_absence(remote, frame)

    def _link_drop(self, reason: str) -> None:
        self.counters[f"link.drop.{reason}"] += 1

    def _presence_from(self, remote: bytes, record: Record, now: float) -> Presence | None:
        """A presence record a node sent: valid, and of a client homed at that node."""
        if check_record(record, now, self.record_limits, self.verify) is not Refusal.STORED:
            self._link_drop("bad_record")
            return None
        try:
            presence = parse_presence(record)
        except RoomError:
            self._link_drop("not_presence")
            return None
        if presence.home.node_id != remote:
            self._link_drop("foreign_client")  # a node speaks only for its own clients
            return None
        return presence

    def _link_signal(self, remote: bytes, frame: LinkSignal, now: float) -> None:
        """A signal from a client of `remote`: delivered only within its layer."""
        presence = self._presence_from(remote, frame.presence, now)
        if presence is None or presence.peer != frame.sender:
            if presence is not None:
                self._link_drop("foreign_client")
            return
        view = self.views.get((presence.room, presence.layer))
        if view is None or frame.to not in self.clients or frame.to not in view.local:
            message = "the peer is not in that layer here"
            self._commands.append(
                ReplyNode(remote, LinkSignalError(frame.sender, frame.to, message, frame.id))
            )
            self.counters["signal.refused"] += 1
            return
        self._learn_and_tell(view, presence)  # a member we may not have heard of yet
        seat = view.members.get(frame.sender)
        if seat is None or seat.home.node_id != remote:
            self._link_drop("departed")  # the seat of a member that has left, or moved
            return
        if not self._may_receive(frame.to, frame.payload, now):
            return  # counted; the sender's node is not asked to tell it
        self.counters["signal.delivered"] += 1
        self._push(frame.to, SignalFrom(frame.sender, frame.payload, presence.room))

    def _may_receive(self, client: bytes, payload: object, now: float) -> bool:
        """Take a signal's bytes from `client`'s inbound budget; False (counted) if over."""
        state = self.clients.get(client)
        if state is None:
            return False
        if state.inbound is None:
            rate, burst = self.config.signal_bytes_per_second, self.config.signal_bytes_burst
            state.inbound = TokenBucket(rate, burst, now)
        size = len(payload) if isinstance(payload, str) else len(json.dumps(payload))
        if state.inbound.take(now, max(MIN_SIGNAL_COST, size)):
            return True
        self.counters["signal.refused.inbound"] += 1
        return False

    def _link_signal_error(self, remote: bytes, frame: LinkSignalError) -> None:
        """The peer a client signalled is not at `remote`: tell the client, if `remote` is
        where that peer was homed (a node answers only for its own clients)."""
        state = self.clients.get(frame.sender)
        if state is None:
            return
        for seat in state.seats.values():
            view = self.views.get((seat.room, seat.layer))
            known = view.members.get(frame.to) if view is not None else None
            if known is not None and known.home.node_id == remote:
                self._push(frame.sender, error(ErrorCode.UNKNOWN_PEER, frame.message, frame.id))
                return
        self._link_drop("foreign_client")

    def _link_absence(self, remote: bytes, frame: LinkAbsence) -> None:
        view = self.views.get((frame.room, frame.layer))
        if view is None:
            return
        known = view.members.get(frame.peer)
        if known is None or known.home.node_id != remote or known.seq > frame.seq:
            if known is not None and known.home.node_id != remote:
                self._link_drop("foreign_client")
            return
        view.departed[frame.peer] = (frame.seq, frame.expires)
        self._member_left(view, frame.peer)


def _by_since(seat: tuple[bytes, int]) -> tuple[int, bytes]:
    return seat[1], seat[0]


def _member(presence: Presence) -> Member:
    return Member(presence.peer, presence.home.node_id, presence.home.url)
