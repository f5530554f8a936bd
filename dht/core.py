"""The DHT protocol core: a Kademlia node with no I/O.

Three things drive it, as in aioquic's QuicConnection:

* the application, through `bootstrap`, `find_node`, `get_records` and
  `put_record`, each returning an operation id that a later event names;
* received datagrams, through `receive(data, addr, now)`;
* time, through `get_timer()` and `handle_timer(now)`.

What it wants sent comes out of `datagrams_to_send(now)`; what the
application should learn comes out of `next_event()`.

The same contract exists one level up, for the simulator: `receive_message`
and `messages_to_send` exchange typed `Message`s (a request or reply and its
message id) instead of bytes. The byte path is exactly "decode, then the
message path" and "message path, then encode", so the protocol logic lives
once; only the codec is skipped. A `ContactCodec` lets the simulator share one
`Contact` per node instead of building new ones from every reply. `now` is seconds on
the Unix clock (records carry absolute expiry times, so every node must
agree on the epoch); randomness comes only from the injected
`random.Random`. Nothing here imports asyncio, socket or time: the same
object runs under asyncio (dht/node.py), under a test's hand-moved clock,
and in the simulator.

Rules kept here:

* A node enters the routing table only after proving its id: it signs our
  nonce with the Ed25519 key its id is the hash of (`pm_identify`). Stock
  `kademlia` nodes cannot, so they are served but never routed to.
* A response is accepted only from the address the request went to.
* One source (an IPv4 address or an IPv6 /64) may bring a key only
  `max_new_publishers_per_source_key` publishers it does not hold yet per
  `new_publisher_window`; more is refused (`Refusal.SOURCE_KEY_LIMIT`).
* Every peer-supplied input is bounded; a defect is dropped and counted in
  `counters` under `drop.<reason>`, never raised.
* Reachability (dht/reach.py, docs/protocol.md 1.9): a node dials others back
  only at their own source address and within `DialBackLimiter`'s limits; a
  node found unreachable becomes a DHT client (`client`): its requests carry
  `CLIENT_ID` so nobody adds it, it answers no requests and holds no records.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from operator import attrgetter, itemgetter
from typing import TypeAlias, TypeVar

from .compiled import mypyc_attr
from .identity import Identity, verify_signature
from .ids import ID_BITS, ID_BYTES, node_id_for, random_id_in_bucket, to_int
from .lookup import Lookup
from .ratelimit import SourceRateLimiter, source_of
from .reach import (
    DialBackLimiter,
    DialTarget,
    HelperState,
    ReachConfig,
    ReachRound,
    ReachStatus,
    ReachVerdict,
    TlsFailure,
    UrlOutcome,
    UrlProbeResult,
    canonical_ip,
    choose_helpers,
    client_after,
    dial_target,
    next_check_at,
)
from .reads import FULL, QUICK, RecordRead
from .records import Record, RecordLimits, RecordStore, Refusal, Verifier, check_record
from .routing import Admission, Contact, RoutingTable
from .rtt import RoundTrips
from .wire import (
    CLIENT_ID,
    MAX_RECORDS_PER_MESSAGE,
    MSG_ID_BYTES,
    NONCE_BYTES,
    RESPONSE_BUDGET,
    Address,
    FindNode,
    FindRecords,
    FindRecordsReply,
    FindValue,
    Identify,
    IdentifyReply,
    NodesReply,
    Ping,
    PingReply,
    PlainValue,
    Reach,
    ReachProbe,
    ReachReply,
    ReachResult,
    Reply,
    Request,
    Store,
    StoreRead,
    StoreReadReply,
    StoreRecords,
    StoreRecordsReply,
    StoreReply,
    Stun,
    StunReply,
    ValueReply,
    WireContact,
    WireError,
    identify_payload,
    parse_frame,
    parse_reply,
    parse_request,
    reach_reply_payload,
    reach_request_payload,
    reach_result_payload,
    serialize_request,
    serialize_response,
)

NodeContact: TypeAlias = Contact[Address]
_addr = attrgetter("addr")
_host = itemgetter(0)
MAX_SEEDS = 64
_REQUEST_TYPES = (
    Ping,
    Stun,
    Store,
    FindNode,
    FindValue,
    Identify,
    StoreRecords,
    StoreRead,
    FindRecords,
    Reach,
    ReachProbe,
    ReachResult,
)
_COUNT_IN = {kind: f"rpc.in.{kind.__name__}" for kind in _REQUEST_TYPES}
_COUNT_OUT = {kind: f"rpc.out.{kind.__name__}" for kind in _REQUEST_TYPES}
_REACH_STATUSES = frozenset(int(status) for status in ReachStatus)
_URL_OUTCOMES = frozenset(int(outcome) for outcome in UrlOutcome)
K = TypeVar("K")
V = TypeVar("V")


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class Message:
    """A datagram before encoding (or after decoding): `body` is a request or a reply."""

    request: bool
    msg_id: bytes
    body: Request | Reply

    def encode(self) -> bytes:
        if self.request:
            return serialize_request(self.msg_id, self.body)  # type: ignore[arg-type]
        return serialize_response(self.msg_id, self.body)  # type: ignore[arg-type]


@mypyc_attr(allow_interpreted_subclasses=True)  # the simulator's SharedContacts
class ContactCodec:
    """Turns wire contacts into routing contacts and back; this one builds fresh objects.

    The simulator substitutes one that returns the same shared objects for a
    node every time (bounded memory per simulated node, no parsing)."""

    def make(self, node_id: bytes, addr: Address) -> NodeContact:
        return Contact.make(node_id, addr)

    def from_wire(self, contact: WireContact) -> NodeContact:
        return self.make(contact.node_id, (contact.host, contact.port))

    def to_wire(self, contact: NodeContact) -> WireContact:
        return WireContact(contact.node_id, contact.addr[0], contact.addr[1])

    def to_wire_all(self, contacts: list[NodeContact]) -> tuple[WireContact, ...]:
        """A reply's contacts (one call per reply: the simulator's codec needs no work)."""
        return tuple(map(self.to_wire, contacts))


class LocalProtocolError(Exception):
    """The application misused the core (a record too large, an id of the wrong size...)."""


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class DHTConfig:
    """Protocol parameters. Intervals are seconds; tests shrink them, simulations sweep them."""

    k: int = 20
    alpha: int = 3
    rpc_timeout: float = 2.0
    """Hard deadline: an RPC unanswered by then counts as a failure of its contact."""
    slow_min: float = 0.05
    slow_max: float = 1.0
    """Bounds of the adaptive 'slow' deadline that resends a request and frees its slot."""
    slow_quantile: float = 0.95
    """The slow deadline is this quantile of recent round trips (dht/rtt.py)."""
    max_pending_rpcs: int = 4096
    max_operations: int = 512
    max_identify_in_flight: int = 64
    bucket_refresh_interval: float = 900.0
    republish_interval: float = 600.0
    maintenance_interval: float = 30.0
    max_failures: int = 2
    replacements: int = 8
    unverifiable_ttl: float = 600.0
    max_unverifiable: int = 4096
    max_verified: int = 4096
    """Proven (id, address) pairs remembered, so a node waiting for a bucket slot is
    identified once, not every time it answers."""
    records: RecordLimits = field(default_factory=RecordLimits)
    plain_ttl: float = 7200.0
    max_plain_values: int = 10_000
    request_rate: float = 200.0
    request_burst: float = 400.0
    max_rate_sources: int = 10_000
    reply_extra: int = 8
    """find_node replies carry up to k + this many contacts, budget permitting."""
    welcome_max_keys: int = 1000
    """Above this many held keys, newcomers get their records from the next republish."""
    page_sources: int = 2
    """How many of the closest nodes a record lookup pages through when a key overflows a reply."""
    max_pages: int = 64
    read_only: bool = False
    """A read-only node (a CLI client) is a DHT client for good: it asks but never joins
    other nodes' routing tables, whatever its reachability."""
    reach: ReachConfig = field(default_factory=ReachConfig)
    """Reachability checks and dial-backs (`[dht.reach]`, dht/reach.py)."""
    # Fast paths (docs/protocol.md 1.10). `with_fast_paths()` turns them all on,
    # `without_fast_paths()` all off (the behaviour before them, the benchmarks' baseline).
    sweep_after: int = 0
    """A lookup whose last this many answers brought nothing nearer asks all of its k
    closest not yet asked at once (paper section 2.3's final round); 0: alpha at a time."""
    read_alpha: int = 3
    """Requests a record read keeps waiting before its final sweep (a find uses `alpha`)."""
    read_quorum: int = 0
    """A record read answers once this many nodes, from distinct hosts, returned the newest
    records known and nothing older (dht/reads.py); 0: only once its k closest answered."""
    contact_timeouts: bool = False
    """The slow deadline of a request to a contact with round trips measured is that
    contact's srtt + 4 rttvar (RFC 6298 on its one path), within slow_min..slow_max."""
    pns: bool = False
    """Proximity neighbour selection: a full bucket takes a much nearer (in round trip)
    proven node in place of its slowest resident, within the bounds of `pns_share`."""
    pns_share: float = 0.5
    """At most this share of a bucket's places is held by nodes taken in for proximity."""
    closest_ttl: float = 0.0
    """A put within this many seconds of a lookup of the same key that found its k
    closest stores there directly, and a lookup starts from them; 0: never."""
    store_quorum: bool = False
    """A put that asks for it (`put_record(majority=True)`) ends once a majority of the
    nodes it stores at accepted (the others are still sent the record); False: every put
    waits for every answer."""
    parallel_pages: int = 1
    """A key too large for one answer is paged from up to this many points of the
    publisher key space at once (dht/reads.py); 1: one page after the other."""

    def __post_init__(self) -> None:
        if not 0.0 < self.slow_quantile <= 1.0:
            raise ValueError(f"slow_quantile is in (0, 1], got {self.slow_quantile!r}")
        if not 0.0 < self.slow_min <= self.slow_max:
            raise ValueError("slow_min must be > 0 and at most slow_max")
        if not 0.0 <= self.pns_share <= 1.0:
            raise ValueError(f"pns_share is in [0, 1], got {self.pns_share!r}")
        if self.parallel_pages < 1 or self.read_alpha < 1:
            raise ValueError("parallel_pages and read_alpha are at least 1")

    def with_fast_paths(self) -> DHTConfig:
        """This config with every fast path of docs/protocol.md 1.10 on."""
        return replace(
            self,
            sweep_after=2,
            read_alpha=max(self.alpha, 4),
            read_quorum=3,
            contact_timeouts=True,
            pns=True,
            closest_ttl=30.0,
            store_quorum=True,
            parallel_pages=8,
        )

    def without_fast_paths(self) -> DHTConfig:
        """This config with every fast path off: the behaviour before docs/protocol.md 1.10
        (the baseline the benchmarks compare against, in the same run)."""
        return replace(
            self,
            sweep_after=0,
            read_alpha=self.alpha,
            read_quorum=0,
            contact_timeouts=False,
            pns=False,
            closest_ttl=0.0,
            store_quorum=False,
            parallel_pages=1,
        )


# --- events ---------------------------------------------------------------


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class Bootstrapped:
    op: int
    contacts: int


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class LookupCompleted:
    op: int
    target: bytes
    contacts: tuple[NodeContact, ...]
    queries: int


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class RecordsFound:
    op: int
    key: bytes
    records: tuple[Record, ...]
    queries: int


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class RecordsStored:
    op: int
    key: bytes
    stored: int
    """How many nodes (this one included, when it is among the closest) accepted the record."""
    refusals: tuple[Refusal, ...]
    held: tuple[Record, ...] | None = None
    """A put that asked to read back (`put_record(read_back=True)`, docs/protocol.md 2.5.5):
    the records under the key, verified as a read verifies them, from the replies of every
    node it was stored at (this one too when among them); None when any of them did not
    answer with all it holds (no answer, an old node, a refusal, a record that fails its
    checks). A key larger than a page is paged from `page_sources` holders to its end, as
    a full read pages it."""


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class RecordsHeld:
    """A put that reads back with `early` (docs/protocol.md 2.5.6): more than half of the
    holders it was stored at answered with all they hold (a paged key read to its end), and
    `held` is what they and any other holder that answered so far showed, verified as a
    read verifies them. It comes at most once, before the put's `RecordsStored`, which
    still waits for every holder; not at all when the put ends first."""

    op: int
    key: bytes
    held: tuple[Record, ...]


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class NodeVerified:
    """Whether `node_id` proved its key at `addr` (a pm_identify answered and checked)."""

    op: int
    node_id: bytes
    addr: Address
    ok: bool


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class ReachChecked:
    """A reachability check ended (started by `check_reach`, or by the core's schedule)."""

    op: int
    verdict: ReachVerdict
    client: bool
    """Whether the node is a DHT client after it."""


Event = (
    Bootstrapped
    | LookupCompleted
    | RecordsFound
    | RecordsStored
    | RecordsHeld
    | NodeVerified
    | ReachChecked
)


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class DialBack:
    """Probes a helper owes a requester, for the glue to send from a socket other than the
    DHT's (the requester's NAT would let in anything from the address it sent its request
    to): `datagram` (a `pm_reach_probe`) to `to`, and the HTTP GET of `http` if any, whose
    result the glue hands back with `DHTCore.url_dialed(nonce, ...)`."""

    datagram: bytes
    to: Address
    http: DialTarget | None
    nonce: bytes = b""


# --- internal bookkeeping ---------------------------------------------------


class Purpose(Enum):
    LOOKUP = "lookup"
    PAGE = "page"
    STORE = "store"
    IDENTIFY = "identify"
    REACH = "reach"
    ADDRESS = "address"


class OpKind(Enum):
    BOOTSTRAP = "bootstrap"
    FIND = "find"
    GET = "get"
    PUT = "put"
    REPUBLISH = "republish"
    REFRESH = "refresh"
    VERIFY = "verify"
    REACH = "reach"


class Phase(Enum):
    IDENTIFY = "identify"
    LOOKUP = "lookup"
    STORE = "store"
    PROBE = "probe"
    WAIT = "wait"
    """A put waiting for a lookup of its key already under way (`closest_ttl`)."""
    DONE = "done"


@mypyc_attr(native_class=False)
@dataclass(slots=True, eq=False)
class PendingRpc:
    msg_id: bytes
    addr: Address
    request: Request
    purpose: Purpose
    sent_at: float
    node_id: bytes | None
    op: int | None
    slow: bool = False
    first: Request | None = None
    """A `StoreRead` retransmitted as the plain store an older node answers (`_on_slow`):
    a late reply to the first is read as that."""


@mypyc_attr(native_class=False)
@dataclass(slots=True, eq=False)
class Operation:
    op: int
    kind: OpKind
    target: bytes
    phase: Phase
    lookup: Lookup[Address] | None = None
    records: list[Record] = field(default_factory=list)
    found: dict[bytes, Record] = field(default_factory=dict)
    outstanding: int = 0
    pages: int = 0
    paged_from: int = 0
    stored: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    addr: Address | None = None
    """Where a VERIFY operation asks."""
    reach: ReachRound | None = None
    """A REACH operation's helpers, answers and probes."""
    read: RecordRead | None = None
    """A GET operation's answers, pages and quorum (dht/reads.py)."""
    read_back: bool = False
    """A put whose stores ask for the records held under the key (`StoreRead`)."""
    read_back_asked: set[bytes] = field(default_factory=set)
    read_back_from: set[bytes] = field(default_factory=set)
    read_back_short: bool = False
    """Some holder answered without all it holds (or not at all): no `held`."""
    read_back_more: bool = False
    """Some holder's records took more than a page: `held` needs them paged to the end."""
    store_need: int = 0
    """Acceptances that end a PUT before every holder answered (0: wait for all)."""
    held_need: int = 0
    """Whole read-back answers that make a PUT tell `RecordsHeld` (0: never, -1: a
    majority of the holders, counted when the stores go out)."""
    held_own: bool = False
    """This node is among the holders of a read-back PUT and stored the record itself."""
    followers: list[Operation] = field(default_factory=list)
    """Puts of the same key that go where this lookup finds the k closest."""
    sent_to: set[bytes] = field(default_factory=set)
    """A PUT's holders so far (a follower's store is topped up when its lookup ends)."""
    walk_open: bool = False
    """A follower stored before its lookup ended: not done until that lookup is (unless it
    needs only a majority, counted in the set it was stored at)."""


class TimerKind(Enum):
    RPC_SLOW = 0
    RPC_TIMEOUT = 1
    RPC_ABANDON = 4
    MAINTENANCE = 2
    REPUBLISH = 3
    REACH_DEADLINE = 5
    REACH_DUE = 6
    ADDRESS_DUE = 7
    REACH_START = 8


@mypyc_attr(allow_interpreted_subclasses=True)  # the simulator's SybilCore
class DHTCore:
    """A Kademlia node as a state machine; see the module docstring for the contract."""

    def __init__(
        self,
        identity: Identity,
        rng: random.Random,
        now: float,
        config: DHTConfig | None = None,
        verify: Verifier = verify_signature,
        contacts: ContactCodec | None = None,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.config = config or DHTConfig()
        self._rng = rng
        self._verify = verify
        self._contacts = contacts or ContactCodec()
        self.table: RoutingTable[Address] = RoutingTable(
            self.node_id, self.config.k, self.config.replacements, self.config.max_failures
        )
        self.records = RecordStore(self.config.records, verify)
        self.plain: dict[bytes, tuple[PlainValue, float]] = {}
        self.counters: Counter[str] = Counter()
        self._limiter = SourceRateLimiter(
            self.config.request_rate, self.config.request_burst, self.config.max_rate_sources
        )
        self._pending: dict[bytes, PendingRpc] = {}
        self._operations: dict[int, Operation] = {}
        self._next_op = 1
        self._identifying: dict[Address, bytes] = {}  # addr -> msg id of the identify
        self._verify_waiting: dict[Address, list[int]] = {}  # addr -> VERIFY ops waiting
        self._unverifiable: dict[Address, float] = {}  # addr -> until when we stop asking
        self._verified: dict[bytes, Address] = {}  # proven ids, most recent last (bounded)
        self._seeds: list[Address] = []
        self._republish_at: dict[bytes, float] = {}
        self._last_store_seen: dict[bytes, float] = {}
        self._timers: list[tuple[float, int, TimerKind, object]] = []
        self._timer_seq = 0
        self._outbox: list[tuple[Message, Address]] = []
        # A list, not a deque: rarely more than one event waits, and an empty deque
        # costs 700 bytes more (the simulator holds 10^6 cores).
        self._events: list[Event] = []
        self.round_trips = RoundTrips()
        # Made on first use, like the reachability state (10^6 cores in a simulation).
        self._proximity: dict[bytes, float] | None = None  # id -> round trip, being proven
        self._closest: dict[bytes, tuple[float, tuple[NodeContact, ...]]] | None = None
        self.client = self.config.read_only
        """A DHT client asks but answers nothing and enters no routing table (see set_client)."""
        # Made on first use: the simulator holds 10^6 cores that never check or help, and
        # past 30 attributes an instance's dict stops sharing its keys (1.3 KB more each).
        self._checks: _Checks | None = None
        self._helping: _Helping | None = None
        self._schedule(now + self.config.maintenance_interval, TimerKind.MAINTENANCE, None)

    # --- the I/O contract ---------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram. Bad input is dropped and counted, never raised."""
        try:
            frame = parse_frame(data)
        except WireError as exc:
            self.counters[f"drop.{exc.reason}"] += 1
            return
        if frame.is_request:
            if not self._limiter.allow(addr, now):
                self.counters["drop.rate_limited"] += 1
                return
            try:
                request = parse_request(frame.body)
            except WireError as exc:
                self.counters[f"drop.{exc.reason}"] += 1
                return
            self._answer(frame.msg_id, request, addr, now)
            return
        # A response body is typed by the request it answers, so find that first.
        pending = self._pending_for(frame.msg_id, addr)
        if pending is None:
            return
        try:
            reply = parse_reply(pending.request, frame.body)
        except WireError as exc:
            if pending.first is not None:  # the first request's answer, come late
                try:
                    reply = parse_reply(pending.first, frame.body)
                except WireError:
                    pass
                else:
                    self._on_reply(pending, reply, now)
                    return
            self._settle(pending, now)
            self.counters[f"drop.reply_{exc.reason}"] += 1
            self._rpc_failed(pending, now)
            return
        self._on_reply(pending, reply, now)

    def receive_message(self, message: Message, addr: Address, now: float) -> None:
        """Feed one decoded message: `receive` without the codec (the simulator's entry)."""
        if message.request:
            if not self._limiter.allow(addr, now):
                self.counters["drop.rate_limited"] += 1
                return
            self._answer(message.msg_id, message.body, addr, now)  # type: ignore[arg-type]
            return
        pending = self._pending_for(message.msg_id, addr)
        if pending is not None:
            self._on_reply(pending, message.body, now)  # type: ignore[arg-type]

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return [(message.encode(), addr) for message, addr in self.messages_to_send(now)]

    def messages_to_send(self, now: float) -> list[tuple[Message, Address]]:
        """What `datagrams_to_send` would send, before encoding."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    @property
    def reach_verdict(self) -> ReachVerdict | None:
        """What the last check of this node's reachability found."""
        return self._checks.verdict if self._checks is not None else None

    @property
    def dials_urls(self) -> bool:
        """Whether the glue makes the HTTP probes `pm_reach` URLs ask for."""
        return self._helping is not None and self._helping.dials_urls

    @dials_urls.setter
    def dials_urls(self, dials: bool) -> None:
        self._help().dials_urls = dials

    def _help(self) -> _Helping:
        if self._helping is None:
            config = self.config.reach
            limiter = DialBackLimiter(config.dial_backs_per_minute, config.source_interval)
            self._helping = _Helping(limiter)
        return self._helping

    def dial_backs(self) -> list[DialBack]:
        """Probes to send for others' reachability checks, from another socket (DialBack)."""
        helping = self._helping
        if helping is None or not helping.dial_backs:
            return []
        out, helping.dial_backs = helping.dial_backs, []
        return out

    def get_timer(self) -> float | None:
        # Timers of settled RPCs stay in the heap (lazy cancellation); drop them here.
        # Called after every input, so the liveness test is written out, not a call.
        timers = self._timers
        pending = self._pending
        while timers:
            when, _, kind, arg = timers[0]
            if kind is TimerKind.RPC_SLOW:
                rpc = pending.get(arg)  # type: ignore[call-overload]
                if rpc is not None and not rpc.slow:
                    return when
            elif kind is TimerKind.RPC_TIMEOUT or kind is TimerKind.RPC_ABANDON:
                if arg in pending:
                    return when
            else:
                return when
            heapq.heappop(timers)
        return None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, arg = heapq.heappop(timers)
            if kind is TimerKind.RPC_SLOW:
                self._on_slow(arg, now)
            elif kind is TimerKind.RPC_TIMEOUT:
                self._on_timeout(arg, now)
            elif kind is TimerKind.RPC_ABANDON:
                self._on_abandon(arg, now)
            elif kind is TimerKind.MAINTENANCE:
                self._maintain(now)
            elif kind is TimerKind.REPUBLISH:
                self._republish_due(arg, now)
            elif kind is TimerKind.REACH_DEADLINE:
                self._reach_deadline(arg, now)
            elif kind is TimerKind.REACH_DUE:
                self._reach_due(arg, now)
            elif kind is TimerKind.ADDRESS_DUE:
                self._address_due(now)
            elif kind is TimerKind.REACH_START:
                self._reach_may_start(arg, now)

    # --- the application's API ----------------------------------------------

    def bootstrap(self, addrs: Iterable[Address], now: float) -> int:
        """Prove the ids of `addrs`, then look up our own id (paper section 2.3)."""
        op = self._new_operation(OpKind.BOOTSTRAP, self.node_id, Phase.IDENTIFY)
        addrs = list(addrs)
        if addrs and self.config.reach.check and self.reach_verdict is None:
            # Until a check says others can reach it, a node with somewhere to join is a
            # client: joining first and leaving when found unreachable would leave its
            # id in the tables of the nodes it talked to, dead for everyone else.
            self.set_client(True, now)
        self._seeds = list(dict.fromkeys([*addrs, *self._seeds]))[:MAX_SEEDS]
        for addr in addrs:
            if self._send_identify(addr, None, now, op.op, force=True):
                op.outstanding += 1
        if not op.outstanding:
            self._start_lookup(op, now)
        return op.op

    def verify_node(self, node_id: bytes, addr: Address, now: float) -> int:
        """Check that `node_id` answers at `addr`; ends in a NodeVerified event.

        A node proven at that address before (in the table, or remembered) passes
        at once; one whose address is being asked already waits for that answer;
        otherwise it is asked to prove its id (section 1.6), even if the address
        failed to prove another id lately (that says nothing of this one). The
        caller bounds how often it asks for whom: links ask only the address a
        link comes from, at the rate `link_admission` allows.
        """
        self._check_id(node_id)
        op = self._new_operation(OpKind.VERIFY, node_id, Phase.IDENTIFY)
        op.addr = addr
        known = self.table.get(node_id)
        if (known is not None and known.addr == addr) or self._verified.get(node_id) == addr:
            self._finish(op, now)
        elif addr in self._identifying:
            self._verify_waiting.setdefault(addr, []).append(op.op)
            op.outstanding += 1
        elif self._send_identify(addr, node_id, now, op.op, force=True):
            op.outstanding += 1
        else:
            self._finish(op, now)
        return op.op

    def _identified(self, addr: Address, now: float) -> None:
        """The identify at `addr` ended: verifications that waited for it can finish, and
        a reachability check that waited for every identify, once none is left."""
        for waiting in self._verify_waiting.pop(addr, ()):
            op = self._operations.get(waiting)
            if op is not None:
                op.outstanding -= 1
                self._advance(op, now)
        checks = self._checks
        if checks is not None and checks.running is not None and not self._identifying:
            self._reach_may_start(checks.running, now)

    def find_node(self, target: bytes, now: float) -> int:
        """Find the k nodes closest to `target`; ends in a LookupCompleted event."""
        self._check_id(target)
        return self._start_lookup(self._new_operation(OpKind.FIND, target), now)

    def get_records(self, key: bytes, now: float, quorum: int | None = None) -> int:
        """Collect the live records under `key`; ends in a RecordsFound event.

        It may end once `quorum` answers agree (dht/reads.py: a count, `reads.MAJORITY`,
        `reads.QUICK` (the config's count, and an empty result may end early too), or
        `reads.FULL` for the full lookup; None: the config's `read_quorum`). A config
        with `read_quorum = 0` never ends a read early, whatever is asked.
        """
        self._check_id(key)
        op = self._new_operation(OpKind.GET, key)
        config = self.config
        wanted = config.read_quorum if quorum is None or not config.read_quorum else quorum
        empty_early = wanted == QUICK
        if empty_early:
            wanted = config.read_quorum
        if wanted or config.parallel_pages > 1:
            op.read = RecordRead(wanted, config.parallel_pages, empty_early=empty_early)
        return self._start_lookup(op, now)

    def put_record(
        self,
        record: Record,
        now: float,
        majority: bool = False,
        read_back: bool = False,
        early: bool = False,
    ) -> int:
        """Store a signed record at the k nodes closest to its key; ends in RecordsStored.

        With `majority` (and `store_quorum`), it ends once more than half of them
        accepted, the rest still on their way (a `reads.MAJORITY` read then sees it).
        Within `closest_ttl` of a lookup of the same key that found its k closest, the
        record goes straight to those (docs/protocol.md 1.10).

        With `read_back`, each store asks for the records the holder then has under the
        key (`StoreRead`, docs/protocol.md 2.5.5) and the put waits for every holder (no
        majority): `RecordsStored.held` is then what a full read right after would give.
        With `early` too, `RecordsHeld` tells what a majority of them held before that.
        """
        verdict = check_record(record, now, self.config.records, self._verify)
        if verdict is not Refusal.STORED:
            raise LocalProtocolError(f"record refused locally: {verdict.name.lower()}")
        op = self._new_operation(OpKind.PUT, record.key)
        op.records = [record]
        op.read_back = read_back
        if read_back:  # a key larger than a page is paged as a full read pages it
            op.read = RecordRead(FULL, self.config.parallel_pages)
        op.store_need = -1 if majority and self.config.store_quorum and not read_back else 0
        op.held_need = -1 if read_back and early else 0
        cached = self._cached_closest(record.key, now)
        if cached:
            self.counters["put.direct"] += 1
            self._store_at(op, list(cached), now)
            return op.op
        walking = self._walking(op)
        if walking is not None:
            # A lookup of this key is under way (a read that answered and walks on): the
            # record goes to its k nearest once it has converged, and to any nearer node
            # it finds after that when it ends, without a walk of its own.
            self.counters["put.follows"] += 1
            op.phase = Phase.WAIT
            walking.followers.append(op)
            self._lead(walking, now)
            return op.op
        return self._start_lookup(op, now)

    def _lead(self, walking: Operation, now: float) -> None:
        """Start the stores of the puts following `walking` once its lookup converged."""
        lookup = walking.lookup
        if lookup is None or not lookup.converged:
            return
        if not any(f.phase is Phase.WAIT for f in walking.followers):
            return
        if lookup.width < lookup.k:
            # A read walks alpha by alpha; a put sweeps, and this walk is now a put's.
            lookup.width = lookup.k
            self._query(walking, now)
        holders = lookup.holders()
        for follower in walking.followers:
            if follower.phase is Phase.WAIT and follower.op in self._operations:
                # A majority put is counted in the converged set, as a direct put is in
                # the cached one, and may end before the walk does; the walk's end still
                # sends it to any nearer node (`_top_up`). Any other put waits for that.
                follower.walk_open = follower.store_need >= 0
                self._store_at(follower, list(holders), now)

    def _top_up(self, walking: Operation, holders: list[NodeContact], now: float) -> None:
        """The lookup ended: followers store where it found the k closest, if not yet."""
        for follower in walking.followers:
            if follower.phase is Phase.WAIT and follower.op in self._operations:
                self._store_at(follower, list(holders), now)
                continue
            live = follower.op in self._operations and follower.phase is Phase.STORE
            follower.walk_open = False
            for contact in holders:
                if contact.node_id in follower.sent_to:
                    continue
                follower.sent_to.add(contact.node_id)
                for batch in _batches(follower.records):
                    request = self._store_request(follower, batch, contact.node_id)
                    op_id = follower.op if live else None
                    sent = self._send(
                        contact.addr, request, Purpose.STORE, now, contact.node_id, op_id
                    )
                    if sent and live:
                        follower.outstanding += 1
            if live:
                self._advance(follower, now)

    def _walking(self, put: Operation) -> Operation | None:
        """A lookup of the key of `put` under way (not `put` itself, not yet begun)."""
        if self.config.closest_ttl <= 0:
            return None
        for op in self._operations.values():
            if (
                op is not put
                and op.target == put.target
                and op.phase is Phase.LOOKUP
                and op.lookup is not None
                and op.kind in (OpKind.GET, OpKind.FIND, OpKind.PUT)
            ):
                return op
        return None

    def create_record(self, key: bytes, value: bytes, ttl: float, seq: int, now: float) -> Record:
        """Sign a record published by this node's own identity."""
        self._check_id(key)
        limits = self.config.records
        if len(value) > limits.max_value_bytes:
            raise LocalProtocolError(f"a record value is at most {limits.max_value_bytes} bytes")
        if not 0 < ttl <= limits.max_ttl:
            raise LocalProtocolError(f"a record ttl is in (0, {limits.max_ttl}] seconds")
        return Record.create(self.identity, key, value, seq, int(now + ttl))

    def local_records(self, key: bytes, now: float) -> list[Record]:
        return self.records.get(key, now)

    # --- reachability (dht/reach.py, docs/protocol.md 1.9) ---------------------

    def check_reach(
        self, now: float, url: str | None = None, url_hosts: tuple[str, ...] | None = None
    ) -> int:
        """Ask helpers to dial this node back; ends in a ReachChecked event.

        `url` (kept for the checks that follow) is what they GET besides sending the UDP
        probe: "" for none, a URL without host (`ws://:8000`) for "at the address my
        request comes from". `url_hosts` are the addresses its name resolves to, if it
        has one. With `reach.check`, the core acts on the verdict (a DHT client or a full
        node, `client_after`) and schedules the next checks itself; without, it reports.
        """
        checks = self._own_checks()
        if url is not None:
            checks.url, checks.url_hosts = url, url_hosts
        op = self._new_operation(OpKind.REACH, self.node_id, Phase.IDENTIFY)
        checks.running = op.op
        if len(self.table) < self.config.reach.helpers and self._identifying:
            # Just joined: the contacts its join found are proving their ids. Ask once
            # they have (a check with one helper can find a node reachable, never not).
            self._schedule(now + self.config.rpc_timeout, TimerKind.REACH_START, op.op)
        else:
            self._start_round(op, now)
        return op.op

    def _start_round(self, op: Operation, now: float) -> None:
        op.phase = Phase.PROBE
        checks = self._own_checks()
        url = checks.url
        config = self.config.reach
        helpers: list[HelperState] = []
        for contact in choose_helpers(self.table.contacts(), config.helpers, self._rng):
            nonce = self._rng.getrandbits(8 * NONCE_BYTES).to_bytes(NONCE_BYTES, "big")
            payload = reach_request_payload(nonce, contact.node_id, url)
            request = Reach(
                self.node_id, nonce, url, self.identity.public_key, self.identity.sign(payload)
            )
            if self._send(contact.addr, request, Purpose.REACH, now, contact.node_id, op.op):
                helpers.append(HelperState(contact.node_id, contact.addr, nonce))
                checks.nonces[nonce] = op.op
        deadline = now + self.config.rpc_timeout + config.probe_wait
        op.reach = ReachRound(helpers, url, now, deadline, checks.url_hosts)
        if helpers:
            self._schedule(deadline, TimerKind.REACH_DEADLINE, op.op)
        else:
            self._finish(op, now)

    def _reach_may_start(self, op_id: object, now: float) -> None:
        """A check waiting for its contacts' ids starts: they are proven, or it is time."""
        op = self._operations.get(op_id)  # type: ignore[call-overload]
        if op is not None and op.kind is OpKind.REACH and op.phase is Phase.IDENTIFY:
            self._start_round(op, now)

    def set_reach_url(self, url: str, url_hosts: tuple[str, ...] | None = None) -> None:
        """The URL the next checks ask helpers to GET (see `check_reach`)."""
        checks = self._own_checks()
        checks.url, checks.url_hosts = url, url_hosts

    def _own_checks(self) -> _Checks:
        if self._checks is None:
            self._checks = _Checks()
        return self._checks

    def url_probe_received(self, nonce: bytes, now: float) -> bool:
        """A helper's HTTP probe reached this node's URL (the glue saw `nonce` arrive).
        False when no running check sent that nonce."""
        return self._probe_arrived(nonce, None, now)

    def url_dialed(self, nonce: bytes, result: UrlProbeResult, now: float) -> None:
        """The HTTP probe of the dial-back for `nonce` is over (the glue made it): tell its
        requester what it met in a signed `pm_reach_result`, once, to the request's source.
        A nonce this node owes no result for (already told, or too old) changes nothing."""
        helping = self._helping
        owed = helping.url_dials.pop(nonce, None) if helping is not None else None
        if owed is None:
            self.counters["reach.result_unowed"] += 1
            return
        requester, addr = owed
        tls = result.tls if result.outcome is UrlOutcome.TLS_UNTRUSTED else TlsFailure.NONE
        payload = reach_result_payload(nonce, requester, result.outcome, tls)
        signature = self.identity.sign(payload)
        report = ReachResult(
            nonce, int(result.outcome), int(tls), self.identity.public_key, signature
        )
        msg_id = self._rng.getrandbits(8 * MSG_ID_BYTES).to_bytes(MSG_ID_BYTES, "big")
        self._outbox.append((Message(True, msg_id, report), addr))
        self.counters[f"reach.result_out.{result.outcome.name.lower()}"] += 1

    def set_client(self, client: bool, now: float) -> None:
        """Be a DHT client (ask, answer nothing, hold nothing) or a full node.

        A client's requests carry `CLIENT_ID` as sender, so nobody adds it, and it answers
        no requests, so a node that added it before sees it fail and drops it. It keeps
        no records (their other holders keep them). A node turning full looks up its own
        id, so that the nodes closest to it hear from it and add it (paper section 2.3).
        """
        client = client or self.config.read_only
        if client == self.client:
            return
        self.client = client
        self.counters["client.on" if client else "client.off"] += 1
        if client:
            self.records = RecordStore(self.config.records, self._verify)
            self.plain.clear()
            self._republish_at.clear()
            self._last_store_seen.clear()
        elif len(self._operations) < self.config.max_operations:
            self._start_lookup(self._new_operation(OpKind.REFRESH, self.node_id), now)

    @property
    def _sender_id(self) -> bytes:
        return CLIENT_ID if self.client else self.node_id

    @property
    def pending_rpcs(self) -> int:
        return len(self._pending)

    # --- answering requests -------------------------------------------------

    def _answer(self, msg_id: bytes, request: Request, addr: Address, now: float) -> None:
        kind = type(request)
        if isinstance(request, ReachProbe):
            self._probe_arrived(request.nonce, addr, now)
            return
        if isinstance(request, ReachResult):
            self._url_result(request, now)
            return
        if self.client:
            self.counters["drop.client"] += 1  # a client answers nothing (docs/protocol.md 1.9)
            return
        self.counters[_COUNT_IN.get(kind) or f"rpc.in.{kind.__name__}"] += 1
        reply: Reply
        match request:
            case Ping(sender):
                reply = PingReply(self.node_id)
            case Stun():
                reply = StunReply(addr[0], addr[1])
            case Store(sender, key, value):
                self._store_plain(key, value, now)
                reply = StoreReply(True)
            case FindNode(sender, target):
                extra = self.config.reply_extra
                reply = NodesReply(self._closest_wire(to_int(target), sender, addr, extra))
            case FindValue(sender, key):
                reply = self._find_value(key, sender, addr, now)
            case Identify(sender, nonce):
                reply = self._identify_reply(nonce, sender)
            case StoreRecords(sender, records):
                source = source_of(addr[0])  # the unit of the new-publisher quota
                statuses = tuple(self._store_record(r, now, source) for r in records)
                reply = StoreRecordsReply(statuses)
            case StoreRead(sender, record):
                reply = self._store_read(record, addr, now)
            case FindRecords(sender, key, after):
                reply = self._find_records(key, after, sender, addr, now)
            case Reach():
                # Never a reason to add the sender: it asks because it may be unreachable.
                answer = self._reach_answer(msg_id, request, addr, now)
                if answer is not None:
                    self._outbox.append((Message(False, msg_id, answer), addr))
                return
        self._outbox.append((Message(False, msg_id, reply), addr))
        sender_id = getattr(request, "sender_id", None)
        if sender_id is not None and sender_id != CLIENT_ID:
            self._consider(sender_id, addr, now)

    def _reach_answer(
        self, msg_id: bytes, request: Reach, addr: Address, now: float
    ) -> ReachReply | None:
        """Answer a `pm_reach` and queue its probes: to the request's own source only, and
        within the dial-back limits (else BUSY). None: a bad signature, dropped."""
        helping = self._help()
        limiter = helping.limiter
        status = limiter.answered(addr, msg_id, now)  # a retransmission: the same answer
        if status is None:
            payload = reach_request_payload(request.nonce, self.node_id, request.url)
            if node_id_for(request.public_key) != request.sender_id or not self._verify(
                request.public_key, payload, request.signature
            ):
                self.counters["drop.reach_signature"] += 1
                return None
            if not limiter.allow(addr, now):
                self.counters["reach.busy"] += 1
                status = ReachStatus.BUSY
            else:
                target = None
                if not request.url:
                    status = ReachStatus.ACCEPTED
                elif not helping.dials_urls:
                    status = ReachStatus.URL_UNSUPPORTED
                else:
                    target = dial_target(request.url, addr[0], request.nonce)
                    status = ReachStatus.ACCEPTED if target else ReachStatus.URL_REFUSED
                limiter.served(addr, msg_id, status, now)
                probe_id = self._rng.getrandbits(8 * MSG_ID_BYTES).to_bytes(MSG_ID_BYTES, "big")
                probe = serialize_request(probe_id, ReachProbe(request.nonce))
                helping.dial_backs.append(DialBack(probe, addr, target, request.nonce))
                if target is not None:  # a result is owed once the glue has dialled
                    owed = (request.sender_id, addr)
                    _remember(helping.url_dials, request.nonce, owed, limiter.per_minute)
                self.counters["reach.dial_back"] += 1
        ip = canonical_ip(addr[0])
        host = str(ip) if ip is not None else addr[0]
        payload = reach_reply_payload(request.nonce, request.sender_id, status, host, addr[1])
        signature = self.identity.sign(payload)
        return ReachReply(int(status), host, addr[1], self.identity.public_key, signature)

    def _closest_wire(
        self, target: int, requester: bytes, addr: Address, extra: int = 0
    ) -> tuple[WireContact, ...]:
        """The k closest contacts, plus up to `extra` more while they fit the budget.

        The extras are slack for contacts that died since we last heard from them:
        without them, a lookup near a key whose neighbourhood lost nodes runs out
        of candidates below k. Stock clients keep the closest k and ignore the rest.
        """
        k = self.config.k
        chosen = self.table.closest(target, k + extra + 1, exclude=requester)
        if addr in map(_addr, chosen):  # not the asker under another id (checked in C)
            chosen = [c for c in chosen if c.addr != addr]
        del chosen[k + extra :]
        if len(chosen) > k:
            hosts = sum(map(len, map(_host, map(_addr, chosen))))
            spare = RESPONSE_BUDGET - 16 - hosts - 30 * len(chosen)
            while spare < 0 and len(chosen) > k:
                spare += len(chosen.pop().addr[0]) + 30
        return self._contacts.to_wire_all(chosen)

    def _store_plain(self, key: bytes, value: PlainValue, now: float) -> None:
        """The stock `store` RPC: unsigned values, kept for interop, bounded and expiring."""
        if key not in self.plain and len(self.plain) >= self.config.max_plain_values:
            self._expire_plain(now)
            if len(self.plain) >= self.config.max_plain_values:
                self.counters["drop.plain_full"] += 1
                return
        self.plain[key] = (value, now)

    def _find_value(self, key: bytes, sender: bytes, addr: Address, now: float) -> Reply:
        entry = self.plain.get(key)
        if entry is not None and now - entry[1] < self.config.plain_ttl:
            return ValueReply(entry[0])
        return NodesReply(self._closest_wire(to_int(key), sender, addr))

    def _identify_reply(self, nonce: bytes, requester: bytes) -> IdentifyReply:
        if self.client:
            return IdentifyReply(b"", b"")
        signature = self.identity.sign(identify_payload(nonce, requester))
        return IdentifyReply(self.identity.public_key, signature)

    def _store_record(self, record: Record, now: float, source: str | None = None) -> int:
        """Store one record; `source` (an IPv4 address or IPv6 /64) is who sent it,
        None for our own, which no per-source quota limits."""
        verdict = self.records.put(record, now, source)
        if verdict is Refusal.STORED:
            self._last_store_seen[record.key] = now
            if record.key not in self._republish_at:
                self._arm_republish(record.key, now)
        else:
            self.counters[f"record.refused.{verdict.name.lower()}"] += 1
        return int(verdict)

    def _find_records(
        self, key: bytes, after: bytes, sender: bytes, addr: Address, now: float
    ) -> FindRecordsReply:
        """Closest nodes (first page only) and the records after `after`, within the budget."""
        contacts = () if after else self._closest_wire(to_int(key), sender, addr)
        budget = RESPONSE_BUDGET - 16 - sum(len(c.host) + 30 for c in contacts)
        page, more = self._page(key, after, budget, now)
        return FindRecordsReply(contacts, page, more)

    def _page(
        self, key: bytes, after: bytes, budget: int, now: float
    ) -> tuple[tuple[Record, ...], bool]:
        """The records under `key` from publisher `after` on that fit `budget` bytes."""
        page: list[Record] = []
        more = False
        for record in self.records.get(key, now):
            if record.publisher <= after:
                continue
            size = record.wire_size()
            # At least one record per page, so paging always makes progress even
            # when the contacts alone fill the budget (20 IPv6 contacts do).
            if page and (size > budget or len(page) >= MAX_RECORDS_PER_MESSAGE):
                more = True
                break
            budget -= size
            page.append(record)
        return tuple(page), more

    # --- sending requests ---------------------------------------------------

    def _send(
        self,
        addr: Address,
        request: Request,
        purpose: Purpose,
        now: float,
        node_id: bytes | None = None,
        op: int | None = None,
    ) -> bytes | None:
        """Queue a request; None when the pending table is full (counted, nobody blamed)."""
        if len(self._pending) >= self.config.max_pending_rpcs:
            self.counters["rpc.pending_full"] += 1
            return None
        msg_id = self._rng.getrandbits(8 * MSG_ID_BYTES).to_bytes(MSG_ID_BYTES, "big")
        while msg_id in self._pending:
            msg_id = self._rng.getrandbits(8 * MSG_ID_BYTES).to_bytes(MSG_ID_BYTES, "big")
        self._pending[msg_id] = PendingRpc(msg_id, addr, request, purpose, now, node_id, op)
        self._outbox.append((Message(True, msg_id, request), addr))
        kind = type(request)
        self.counters[_COUNT_OUT.get(kind) or f"rpc.out.{kind.__name__}"] += 1
        self._schedule(now + self._slow_after(node_id), TimerKind.RPC_SLOW, msg_id)
        self._schedule(now + self.config.rpc_timeout, TimerKind.RPC_TIMEOUT, msg_id)
        return msg_id

    def _slow_after(self, node_id: bytes | None = None) -> float:
        """When a request is late: its contact's own srtt + 4 rttvar when measured
        (`contact_timeouts`), else a quantile of all recent round trips (dht/rtt.py)."""
        config = self.config
        trips = self.round_trips
        if config.contact_timeouts:
            own = self.table.deadline(node_id) if node_id is not None else None
            if own is not None:
                return min(config.slow_max, max(config.slow_min, own))
            # A stranger may sit anywhere, and proximity fills the samples with near
            # contacts: twice the quantile (a far host is rarely more than twice the
            # 0.95 quantile of a node's round trips, a near one always answers in it).
            estimate = trips.quantile(config.slow_quantile)
            estimate = 2 * estimate if estimate is not None else None
        else:
            estimate = trips.quantile(config.slow_quantile)
        if estimate is None:
            return config.slow_max / 2
        return min(config.slow_max, max(config.slow_min, estimate))

    def _send_identify(
        self,
        addr: Address,
        node_id: bytes | None,
        now: float,
        op: int | None = None,
        force: bool = False,
    ) -> bool:
        if addr in self._identifying:
            return False
        if not force:
            if len(self._identifying) >= self.config.max_identify_in_flight:
                self.counters["identify.throttled"] += 1
                return False
            until = self._unverifiable.get(addr)
            if until is not None and until > now:
                return False
        nonce = self._rng.getrandbits(8 * NONCE_BYTES).to_bytes(NONCE_BYTES, "big")
        request = Identify(self._sender_id, nonce)
        msg_id = self._send(addr, request, Purpose.IDENTIFY, now, node_id, op)
        if msg_id is None:
            return False
        self._identifying[addr] = msg_id
        return True

    # --- responses ----------------------------------------------------------

    def _pending_for(self, msg_id: bytes, addr: Address) -> PendingRpc | None:
        """The request a response answers, if it came from where the request went."""
        pending = self._pending.get(msg_id)
        if pending is None:
            self.counters["drop.unexpected_response"] += 1
            return None
        if pending.addr != addr:
            self.counters["drop.wrong_source"] += 1
            return None
        return pending

    def _settle(self, pending: PendingRpc, now: float) -> None:
        del self._pending[pending.msg_id]
        if not pending.slow:
            # Karn's rule: a reply to a retransmitted request is an ambiguous sample.
            rtt = now - pending.sent_at
            self.round_trips.add(rtt)
            config = self.config
            node_id = pending.node_id
            if node_id is not None and (config.pns or config.contact_timeouts):
                self.table.observe_rtt(node_id, rtt)

    def _on_reply(self, pending: PendingRpc, reply: Reply, now: float) -> None:
        self._settle(pending, now)
        if pending.node_id is not None:
            self.table.seen(pending.node_id)
        purpose = pending.purpose
        if purpose is Purpose.LOOKUP:
            self._on_lookup_reply(pending, reply, now)
        elif purpose is Purpose.IDENTIFY:
            self._on_identify_reply(pending, reply, now)
        elif purpose is Purpose.STORE:
            self._on_store_reply(pending, reply, now)
        elif purpose is Purpose.REACH:
            self._on_reach_reply(pending, reply, now)
        elif purpose is Purpose.ADDRESS:
            self._on_address_reply(reply, now)
        else:
            self._on_page_reply(pending, reply, now)

    def _on_slow(self, msg_id: object, now: float) -> None:
        """No answer within the smoothed round trip: send the request once more (a lost
        datagram costs one RTT, not an RPC failure) and, in a lookup, free its slot."""
        pending = self._pending.get(msg_id)  # type: ignore[call-overload]
        if pending is None or pending.slow:
            return
        pending.slow = True
        self.counters["rpc.retransmit"] += 1
        request = pending.request
        if isinstance(request, StoreRead):
            # An older node drops the rpc it does not know: the retransmission is the plain
            # store it answers, and the put reads its holders' records no more (2.5.5).
            pending.first = request
            pending.request = StoreRecords(request.sender_id, (request.record,))
            self.counters["put.store_read_plain"] += 1
        self._outbox.append((Message(True, pending.msg_id, pending.request), pending.addr))
        if pending.purpose is not Purpose.LOOKUP:
            return
        op = self._operations.get(pending.op) if pending.op is not None else None
        if op is not None and op.lookup is not None and pending.node_id is not None:
            op.lookup.slow(pending.node_id)
            self._schedule(now + self._slow_after(pending.node_id), TimerKind.RPC_ABANDON, msg_id)
            self._advance(op, now)

    def _on_abandon(self, msg_id: object, now: float) -> None:
        """The retransmission had its round trip too: the lookup stops waiting for this
        contact (it is almost surely gone). The RPC itself stays pending until the hard
        timeout, which is what counts against the contact in the routing table."""
        pending = self._pending.get(msg_id)  # type: ignore[call-overload]
        op = self._operations.get(pending.op) if pending and pending.op is not None else None
        if op is not None and op.lookup is not None and pending and pending.node_id:
            self.counters["lookup.abandoned"] += 1
            op.lookup.abandoned(pending.node_id)
            self._advance(op, now)

    def _on_timeout(self, msg_id: object, now: float) -> None:
        pending = self._pending.pop(msg_id, None)  # type: ignore[call-overload]
        if pending is not None:
            self.counters["rpc.timeout"] += 1
            self._rpc_failed(pending, now)

    def _rpc_failed(self, pending: PendingRpc, now: float) -> None:
        node_id = pending.node_id
        if node_id is not None and self.table.failed(node_id):
            self._fill_slot(to_int(node_id), now)
        if pending.purpose is Purpose.IDENTIFY:
            self._identifying.pop(pending.addr, None)
            self._mark_unverifiable(pending.addr, now)
            if node_id is not None:
                self._fill_slot(to_int(node_id), now)  # the claim proven was not the one
            self._identified(pending.addr, now)
        op = self._operations.get(pending.op) if pending.op is not None else None
        if op is None:
            return
        if op.reach is not None and isinstance(pending.request, Reach):
            op.reach.failed(pending.request.nonce)
            self._reach_advance(op, now)
            return
        if pending.purpose is Purpose.LOOKUP and op.lookup is not None and pending.node_id:
            op.lookup.failed(pending.node_id)
        elif pending.purpose is not Purpose.LOOKUP:
            op.outstanding -= 1
            if pending.purpose is Purpose.PAGE and op.read is not None and pending.node_id:
                op.read.abandon(pending.node_id)
        self._advance(op, now)

    def _on_identify_reply(self, pending: PendingRpc, reply: Reply, now: float) -> None:
        assert isinstance(reply, IdentifyReply) and isinstance(pending.request, Identify)
        self._identifying.pop(pending.addr, None)
        op = self._operations.get(pending.op) if pending.op is not None else None
        if op is not None:
            op.outstanding -= 1
        node_id = node_id_for(reply.public_key) if reply.public_key else None
        payload = identify_payload(pending.request.nonce, pending.request.sender_id)
        proven = node_id is not None and self._verify(reply.public_key, payload, reply.signature)
        if proven and node_id is not None:  # whoever was expected, this id answers here
            _remember(self._verified, node_id, pending.addr, self.config.max_verified)
        if not proven or (pending.node_id is not None and node_id != pending.node_id):
            self.counters["identify.refused" if node_id is None else "identify.bad"] += 1
            self._mark_unverifiable(pending.addr, now)
            if pending.node_id is not None:
                self._fill_slot(to_int(pending.node_id), now)
        else:
            assert node_id is not None
            self._admit(self._contacts.make(node_id, pending.addr), now)
        if op is not None:
            self._advance(op, now)
        self._identified(pending.addr, now)

    def _mark_unverifiable(self, addr: Address, now: float) -> None:
        until = now + self.config.unverifiable_ttl
        _remember(self._unverifiable, addr, until, self.config.max_unverifiable)

    # --- routing table admission --------------------------------------------

    def _consider(
        self, node_id: bytes, addr: Address, now: float, rtt: float | None = None
    ) -> None:
        """We heard from `node_id` at `addr`; ask it to prove its id if we would keep it.

        A node we do not hold, for a bucket that is full, is only parked as a
        claim in the bucket's replacement cache (paper section 4.1): it is
        identified when a resident fails and a slot opens (`_fill_slot`), not
        now. Identifying every passer-by, and then pinging the bucket's oldest
        contact as section 2.2 does, cost more than the lookups themselves
        (docs/simulation.md, "Lazy admission"). The exception is a node that just
        answered us (`rtt` measured) much faster than the bucket's slowest resident:
        it is proven now and takes that place (`pns`, dht/routing.py).
        """
        if node_id == self.node_id or len(node_id) != ID_BYTES:
            return
        table = self.table
        known = table.get(node_id)
        if known is not None:
            if known.addr == addr:
                table.seen(node_id)
                return
        elif table.is_full_for(to_int(node_id)):
            contact = self._contacts.make(node_id, addr)
            config = self.config
            if (
                rtt is not None
                and config.pns
                and table.proximity_victim(contact, rtt, config.pns_share) is not None
            ):
                if self._verified.get(node_id) == addr:
                    self._swap_for_proximity(contact, rtt)
                    return
                if self._send_identify(addr, node_id, now):
                    if self._proximity is None:
                        self._proximity = {}
                    _remember(self._proximity, node_id, rtt, self.config.max_identify_in_flight)
                    return
            table.park(contact)
            self.counters["table.parked"] += 1
            return
        if self._verified.get(node_id) == addr:
            self._admit(self._contacts.make(node_id, addr), now)  # proven before: no new identify
            return
        self._send_identify(addr, node_id, now)

    def _admit(self, contact: NodeContact, now: float) -> None:
        admission = self.table.add(contact)
        if admission is Admission.ADDED:
            self._welcome(contact, now)
        elif admission is Admission.BUCKET_FULL and self._proximity:
            rtt = self._proximity.pop(contact.node_id, None)
            if rtt is not None:
                self._swap_for_proximity(contact, rtt)

    def _swap_for_proximity(self, contact: NodeContact, rtt: float) -> None:
        if self.table.proximity_swap(contact, rtt, self.config.pns_share) is not None:
            self.counters["table.proximity"] += 1

    def _fill_slot(self, num: int, now: float) -> None:
        """A bucket lost a contact: prove its newest parked claim, which then takes the slot.

        Claims that cannot be asked now (an identify already in flight to that
        address, or one that failed lately) are passed over.
        """
        while (claim := self.table.take_replacement(num)) is not None:
            if self._verified.get(claim.node_id) == claim.addr:
                self._admit(claim, now)
                return
            if self._send_identify(claim.addr, claim.node_id, now):
                self.counters["table.promoting"] += 1
                return

    def _welcome(self, contact: NodeContact, now: float) -> None:
        """Hand a newcomer the records it is now among the k closest for (paper 2.5).

        Only the holder closest to a key among those it knows does this, so a
        join costs each key one transfer, not k. Beyond `welcome_max_keys` held
        keys, the periodic republish does the work instead.
        """
        keys = self.records.keys()
        if self.client or not keys or len(keys) > self.config.welcome_max_keys:
            return
        k = self.config.k
        handed: list[Record] = []
        for key in keys:
            target = to_int(key)
            known = self.table.closest(target, k, exclude=contact.node_id)
            own = self.table.own_num ^ target
            if known and own > known[0].num ^ target:
                continue  # someone we know is closer to the key: theirs to hand over
            if len(known) >= k and contact.num ^ target > known[-1].num ^ target:
                continue  # the newcomer is not among the k closest
            handed.extend(self.records.get(key, now))
        for batch in _batches(handed):
            request = StoreRecords(self._sender_id, tuple(batch))
            self._send(contact.addr, request, Purpose.STORE, now, contact.node_id)
            self.counters["welcome"] += 1

    # --- operations ---------------------------------------------------------

    def _new_operation(self, kind: OpKind, target: bytes, phase: Phase = Phase.LOOKUP) -> Operation:
        if len(self._operations) >= self.config.max_operations:
            raise LocalProtocolError(f"at most {self.config.max_operations} operations at once")
        op = Operation(self._next_op, kind, target, phase)
        self._next_op += 1
        self._operations[op.op] = op
        return op

    def _start_lookup(self, op: Operation, now: float) -> int:
        target = to_int(op.target)
        op.phase = Phase.LOOKUP
        config = self.config
        alpha = config.read_alpha if op.kind is OpKind.GET else config.alpha
        lookup = op.lookup = Lookup(
            target,
            config.k,
            alpha,
            self.node_id,
            sweep_after=config.sweep_after,
            sweep=op.kind is not OpKind.GET,
        )
        lookup.add(self.table.closest(target, config.k))
        cached = self._cached_closest(op.target, now) or self._converged_walk(op)
        if cached:
            # The k closest found moments ago, or by a walk of this key that converged and
            # goes on: ask them all at once (the final sweep). No answer is reused.
            lookup.add(cached)
            lookup.width = config.k
            lookup.converged = True
        self.table.touch(target, now)
        if op.kind is OpKind.GET:
            for record in self.records.get(op.target, now):
                op.found[record.publisher] = record
        self._advance(op, now)
        return op.op

    def _converged_walk(self, op: Operation) -> list[NodeContact] | None:
        """The k nearest of another lookup of `op`'s key that has converged and still
        walks (a read that answered at its quorum), if any (`closest_ttl`)."""
        walking = self._walking(op)
        if walking is None or walking.lookup is None or not walking.lookup.converged:
            return None
        return walking.lookup.holders() or None

    def _cached_closest(self, key: bytes, now: float) -> tuple[NodeContact, ...] | None:
        """The k closest a lookup of `key` found within `closest_ttl` seconds, if any."""
        entry = self._closest.get(key) if self._closest is not None else None
        if entry is None or now - entry[0] >= self.config.closest_ttl:
            return None
        return entry[1]

    def _remember_closest(self, op: Operation, closest: list[NodeContact], now: float) -> None:
        if self.config.closest_ttl <= 0 or not closest:
            return
        if op.kind not in (OpKind.FIND, OpKind.GET, OpKind.PUT, OpKind.REPUBLISH):
            return
        if self._closest is None:
            self._closest = {}
        # Bounded like the operations that fill it; an expired entry is dropped as it ages.
        _remember(self._closest, op.target, (now, tuple(closest)), self.config.max_operations)

    def _advance(self, op: Operation, now: float) -> None:
        if op.phase is Phase.IDENTIFY:
            if op.outstanding <= 0 and op.kind is OpKind.VERIFY:
                self._finish(op, now)
            elif op.outstanding <= 0:
                self._start_lookup(op, now)
            return
        if op.phase is Phase.LOOKUP:
            lookup = op.lookup
            assert lookup is not None
            self._query(op, now)
            if op.followers:
                self._lead(op, now)
            if lookup.finished and op.outstanding <= 0:
                self._lookup_finished(op, now)
            elif op.read is not None and op.read.answered_at is None and op.read.quorum != FULL:
                nearest = lookup.nearest_ids()
                if op.read.agreed(op.found, nearest, lookup.converged):
                    self._answer_read(op, now)
            return
        if op.phase is not Phase.STORE:
            return
        if not op.walk_open and (
            op.outstanding <= 0 or (op.store_need > 0 and op.stored >= op.store_need)
        ):
            self._finish(op, now)
        elif op.held_need > 0:
            # Counted in the set it was stored at, as a majority put is: the converged set
            # of the walk it follows, which may still end at a nearer node (`_lead`).
            self._tell_held(op, now)

    def _tell_held(self, op: Operation, now: float) -> None:
        """`RecordsHeld` once a majority of a read-back put's holders answered whole."""
        whole = len(op.read_back_from) + op.held_own
        if whole < op.held_need:
            return
        if op.read_back_more and (op.read is None or not op.read.complete):
            return  # a paged key: every segment read to its end first
        op.held_need = 0
        self.counters["put.held_early"] += 1
        if op.held_own:  # seeded with this node's own, as a read is
            self._merge_records(op, self.records.get(op.target, now), now)
        held = tuple(sorted(op.found.values(), key=lambda r: r.publisher))
        self._events.append(RecordsHeld(op.op, op.target, held))

    def _answer_read(self, op: Operation, now: float) -> None:
        """A quorum agreed (dht/reads.py): the reader has its records now. With
        `closest_ttl` the lookup walks on quietly to learn the key's k closest, for the
        store that often follows a read; otherwise it ends here."""
        assert op.read is not None and op.lookup is not None
        op.read.answered_at = now
        self.counters["read.quorum"] += 1
        records = tuple(sorted(op.found.values(), key=lambda r: r.publisher))
        self._events.append(RecordsFound(op.op, op.target, records, op.lookup.queries))
        if self.config.closest_ttl <= 0:
            op.phase = Phase.DONE
            del self._operations[op.op]

    def _query(self, op: Operation, now: float) -> None:
        assert op.lookup is not None
        for contact in op.lookup.next_queries():
            request: Request
            if op.kind is OpKind.GET:
                request = FindRecords(self._sender_id, op.target, b"")
            else:
                request = FindNode(self._sender_id, op.target)
            if not self._send(contact.addr, request, Purpose.LOOKUP, now, contact.node_id, op.op):
                op.lookup.failed(contact.node_id)

    def _on_lookup_reply(self, pending: PendingRpc, reply: Reply, now: float) -> None:
        op = self._operations.get(pending.op) if pending.op is not None else None
        node_id = pending.node_id
        if node_id is not None:
            rtt = None if pending.slow else now - pending.sent_at  # Karn's rule, as in _settle
            self._consider(node_id, pending.addr, now, rtt)
        if op is None or op.lookup is None or node_id is None or op.phase is not Phase.LOOKUP:
            return
        if isinstance(reply, FindRecordsReply):
            contacts = reply.contacts
            shown, lied = self._merge_records(op, reply.records, now)
            read = op.read
            if read is not None:
                source = source_of(pending.addr[0])
                read.first_page(node_id, source, shown, lied, reply.more)
            if reply.more and op.paged_from < self.config.page_sources:
                op.paged_from += 1
                if read is not None and self.config.parallel_pages > 1:
                    self._plan_pages(op, read, pending.addr, node_id, reply.records, now)
                else:
                    self._request_page(op, pending.addr, node_id, reply.records, now)
        elif isinstance(reply, NodesReply):
            contacts = reply.contacts
        else:
            contacts = ()
        op.lookup.answered(node_id, map(self._contacts.from_wire, contacts))
        self._advance(op, now)

    def _request_page(
        self, op: Operation, addr: Address, node_id: bytes, page: Iterable[Record], now: float
    ) -> None:
        last = max((r.publisher for r in page), default=b"")
        if not last or op.pages >= self.config.max_pages:
            return
        op.pages += 1
        request = FindRecords(self._sender_id, op.target, last)
        if self._send(addr, request, Purpose.PAGE, now, node_id, op.op):
            op.outstanding += 1

    def _plan_pages(
        self,
        op: Operation,
        read: RecordRead,
        addr: Address,
        node_id: bytes,
        page: Iterable[Record],
        now: float,
    ) -> None:
        """Read the rest of a key too large for one answer in segments at once (reads.py)."""
        last = max((r.publisher for r in page), default=b"")
        if not last:
            return
        for after in read.plan(node_id, last):
            if not self._send_page(op, addr, node_id, after, now):
                read.abandon(node_id)
                return

    def _send_page(
        self, op: Operation, addr: Address, node_id: bytes, after: bytes, now: float
    ) -> bool:
        if op.pages >= self.config.max_pages:
            return False
        op.pages += 1
        request = FindRecords(self._sender_id, op.target, after)
        if self._send(addr, request, Purpose.PAGE, now, node_id, op.op):
            op.outstanding += 1
            return True
        return False

    def _on_page_reply(self, pending: PendingRpc, reply: Reply, now: float) -> None:
        op = self._operations.get(pending.op) if pending.op is not None else None
        if op is None:
            return
        op.outstanding -= 1
        node_id = pending.node_id
        read = op.read
        if isinstance(reply, FindRecordsReply) and node_id is not None:
            self._merge_records(op, reply.records, now)
            if read is not None and self.config.parallel_pages > 1:
                request = pending.request
                assert isinstance(request, FindRecords)
                last = max((r.publisher for r in reply.records), default=None)
                wants_more = read.page_done(node_id, request.after, last, reply.more)
                if (
                    wants_more
                    and last
                    and not self._send_page(op, pending.addr, node_id, last, now)
                ):
                    read.abandon(node_id)
            elif reply.more:
                self._request_page(op, pending.addr, node_id, reply.records, now)
            elif read is not None:
                read.complete = True  # one page after the other, to the end
        self._advance(op, now)

    def _merge_records(
        self, op: Operation, records: Iterable[Record], now: float
    ) -> tuple[dict[bytes, int], bool]:
        """Keep the newest valid record per publisher; reads validate again (never trust a
        node). Returns publisher -> seq of the valid records, and whether any was not."""
        shown: dict[bytes, int] = {}
        lied = False
        for record in records:
            if record.key != op.target:
                self.counters["drop.record_wrong_key"] += 1
                lied = True
                continue
            held = op.found.get(record.publisher)
            if held is not None and (held.seq > record.seq or held == record):
                shown[record.publisher] = record.seq  # checked when it was first merged
                continue
            verdict = check_record(record, now, self.config.records, self._verify)
            if verdict is Refusal.STORED:
                op.found[record.publisher] = record
                shown[record.publisher] = record.seq
            else:
                self.counters[f"drop.record_{verdict.name.lower()}"] += 1
                lied = True
        return shown, lied

    def _lookup_finished(self, op: Operation, now: float) -> None:
        assert op.lookup is not None
        closest = op.lookup.closest()
        # With majority stores, the set a majority is counted in must be the one readers
        # count in: the k nearest, the slow far ones included (Lookup.holders).
        holders = op.lookup.holders() if self.config.store_quorum else closest
        self._remember_closest(op, holders, now)
        if op.followers:
            self._top_up(op, holders, now)
        if op.kind in (OpKind.PUT, OpKind.REPUBLISH):
            self._store_at(op, holders, now)
            return
        self._finish(op, now)

    def _store_at(self, op: Operation, closest: list[NodeContact], now: float) -> None:
        op.phase = Phase.STORE
        target = to_int(op.target)
        own_is_close = len(closest) < self.config.k or (self.table.own_num ^ target) < (
            closest[-1].num ^ target
        )
        # A publisher among the k closest keeps a copy too (a republish already holds one).
        if (
            op.kind is OpKind.PUT
            and own_is_close
            and not self.client
            and self._store_record(op.records[0], now) == Refusal.STORED
        ):
            op.stored += 1
            op.held_own = op.read_back
        for batch in _batches(op.records):
            for contact in closest:
                request = self._store_request(op, batch, contact.node_id)
                if self._send(contact.addr, request, Purpose.STORE, now, contact.node_id, op.op):
                    op.outstanding += 1
        if op.kind is OpKind.PUT and self.config.closest_ttl > 0:
            op.sent_to.update(c.node_id for c in closest)
        if op.store_need == -1:
            # A majority of the holders: any later majority read meets at least one of them.
            op.store_need = (op.outstanding + op.stored) // 2 + 1
        if op.held_need == -1:
            # A majority of the holders: two such puts of one key share at least one.
            op.held_need = (len(op.read_back_asked) + op.held_own) // 2 + 1
        self._advance(op, now)

    def _store_request(self, op: Operation, batch: list[Record], node_id: bytes) -> Request:
        """A put's store: one that reads back (`StoreRead`) when the put asked for it."""
        if op.read_back and op.kind is OpKind.PUT and len(batch) == 1:
            op.read_back_asked.add(node_id)
            return StoreRead(self._sender_id, batch[0])
        return StoreRecords(self._sender_id, tuple(batch))

    def _store_read(self, record: Record, addr: Address, now: float) -> StoreReadReply:
        """Store as `StoreRecords` does (the same per-source quota), then answer with the
        first page of the key's records, as `FindRecords` would: only when it was
        stored, so a refused store reads nothing (docs/protocol.md 2.5.5)."""
        verdict = self._store_record(record, now, source_of(addr[0]))
        if verdict != Refusal.STORED:
            return StoreReadReply(verdict, (), False)
        page, more = self._page(record.key, b"", RESPONSE_BUDGET - 16, now)
        return StoreReadReply(verdict, page, more)

    def _on_store_reply(self, pending: PendingRpc, reply: Reply, now: float) -> None:
        op = self._operations.get(pending.op) if pending.op is not None else None
        if op is None:
            return
        op.outstanding -= 1
        if isinstance(reply, StoreReadReply):
            node_id = pending.node_id
            self._count_store(op, reply.status)
            shown, lied = self._merge_records(op, reply.records, now)
            if reply.status != Refusal.STORED or lied or node_id is None:
                op.read_back_short = True
            else:
                op.read_back_from.add(node_id)
                read = op.read
                if reply.more and read is not None:
                    # A first page, as a read's lookup hears from every holder; the rest of
                    # the key is paged from `page_sources` of them, as a read pages it.
                    op.read_back_more = True
                    read.first_page(node_id, source_of(pending.addr[0]), shown, lied, True)
                    if op.paged_from < self.config.page_sources:
                        op.paged_from += 1
                        if self.config.parallel_pages > 1:
                            self._plan_pages(op, read, pending.addr, node_id, reply.records, now)
                        else:
                            self._request_page(op, pending.addr, node_id, reply.records, now)
        elif isinstance(reply, StoreRecordsReply) and reply.statuses:
            op.read_back_short = True  # an older node: stored, said nothing of the rest
            self._count_store(op, reply.statuses[0])
        self._advance(op, now)

    @staticmethod
    def _count_store(op: Operation, status: int) -> None:
        """A holder's answer to a put's store: stored, or why not (unknown codes malformed)."""
        if status == Refusal.STORED:
            op.stored += 1
            return
        try:
            op.refusals.append(Refusal(status))
        except ValueError:
            op.refusals.append(Refusal.MALFORMED)

    def _finish(self, op: Operation, now: float) -> None:
        op.phase = Phase.DONE
        del self._operations[op.op]
        lookup = op.lookup
        queries = lookup.queries if lookup is not None else 0
        match op.kind:
            case OpKind.BOOTSTRAP:
                self._events.append(Bootstrapped(op.op, len(self.table)))
                self._refresh_buckets(now)
            case OpKind.FIND:
                closest = tuple(lookup.closest()) if lookup is not None else ()
                self._events.append(LookupCompleted(op.op, op.target, closest, queries))
            case OpKind.GET:
                if op.read is not None and op.read.answered_at is not None:
                    return  # answered already, at its quorum (`_answer_read`)
                records = tuple(sorted(op.found.values(), key=lambda r: r.publisher))
                self._events.append(RecordsFound(op.op, op.target, records, queries))
            case OpKind.PUT:
                held = None
                whole = op.read_back and not op.read_back_short and bool(op.read_back_asked)
                if op.read_back_more:  # every segment of the key read to its end
                    whole = whole and op.read is not None and op.read.complete
                if whole and op.read_back_from >= op.read_back_asked:
                    # Seeded with this node's own, as a read is (`_start_lookup`).
                    self._merge_records(op, self.records.get(op.target, now), now)
                    held = tuple(sorted(op.found.values(), key=lambda r: r.publisher))
                refusals = tuple(op.refusals)
                self._events.append(RecordsStored(op.op, op.target, op.stored, refusals, held))
            case OpKind.REACH:
                self._reach_finished(op, now)
            case OpKind.VERIFY:
                assert op.addr is not None
                known = self.table.get(op.target)
                ok = (known is not None and known.addr == op.addr) or (
                    self._verified.get(op.target) == op.addr
                )
                self._events.append(NodeVerified(op.op, op.target, op.addr, ok))

    # --- reachability checks -----------------------------------------------

    def _on_reach_reply(self, pending: PendingRpc, reply: Reply, now: float) -> None:
        op = self._operations.get(pending.op) if pending.op is not None else None
        request = pending.request
        if op is None or op.reach is None or not isinstance(request, Reach):
            return
        if isinstance(reply, ReachReply) and self._reach_reply_valid(pending, request, reply):
            observed = (reply.host, reply.port)
            op.reach.answered(request.nonce, ReachStatus(reply.status), observed)
        else:
            self.counters["reach.bad_reply"] += 1
            op.reach.failed(request.nonce)
        self._reach_advance(op, now)

    def _reach_reply_valid(self, pending: PendingRpc, request: Reach, reply: ReachReply) -> bool:
        """Signed by the key of the node asked, over our nonce and what it says."""
        if reply.status not in _REACH_STATUSES or node_id_for(reply.public_key) != pending.node_id:
            return False
        payload = reach_reply_payload(
            request.nonce, request.sender_id, reply.status, reply.host, reply.port
        )
        return self._verify(reply.public_key, payload, reply.signature)

    def _probe_arrived(self, nonce: bytes, addr: Address | None, now: float) -> bool:
        """A probe (`addr`: a UDP one from there; None: an HTTP one) for a running check."""
        checks = self._checks
        op = self._operations.get(checks.nonces.get(nonce, 0)) if checks is not None else None
        if op is None or op.reach is None:
            self.counters["reach.probe_unknown"] += 1
            return False
        if addr is not None and addr == op.reach.by_nonce[nonce].addr:
            # From the very address our request went to: our NAT lets that in, so it
            # proves nothing about anyone else reaching us.
            self.counters["reach.probe_same_socket"] += 1
            return False
        op.reach.probe_arrived(nonce, via_url=addr is None)
        self.counters["reach.probe_in.url" if addr is None else "reach.probe_in.udp"] += 1
        self._reach_advance(op, now)
        return True

    def _url_result(self, result: ReachResult, now: float) -> None:
        """A helper says what its HTTP probe met: counted if it is the helper asked with
        that nonce, in a running check, signed by its key; else dropped and counted."""
        checks = self._checks
        op = (
            self._operations.get(checks.nonces.get(result.nonce, 0)) if checks is not None else None
        )
        if op is None or op.reach is None:
            self.counters["reach.result_unknown"] += 1
            return
        helper = op.reach.by_nonce[result.nonce]
        payload = reach_result_payload(result.nonce, self.node_id, result.outcome, result.tls)
        if (
            result.outcome not in _URL_OUTCOMES
            or node_id_for(result.public_key) != helper.node_id
            or not self._verify(result.public_key, payload, result.signature)
        ):
            self.counters["reach.bad_result"] += 1
            return
        outcome = UrlOutcome(result.outcome)
        op.reach.url_reported(result.nonce, outcome, TlsFailure.read(result.tls))
        self.counters[f"reach.result_in.{outcome.name.lower()}"] += 1
        self._reach_advance(op, now)

    def _reach_advance(self, op: Operation, now: float) -> None:
        if op.reach is not None and op.phase is Phase.PROBE and op.reach.complete():
            self._finish(op, now)

    def _reach_deadline(self, op_id: object, now: float) -> None:
        op = self._operations.get(op_id)  # type: ignore[call-overload]
        if op is not None and op.phase is Phase.PROBE:
            self._finish(op, now)

    def _reach_finished(self, op: Operation, now: float) -> None:
        """Judge the round, become a client or a full node, and plan the next check."""
        assert op.reach is not None
        checks = self._own_checks()
        for nonce in op.reach.by_nonce:
            checks.nonces.pop(nonce, None)
        if checks.running == op.op:
            checks.running = None
        config = self.config.reach
        verdict = op.reach.verdict(config.confirmations, now, checks.verdict)
        checks.verdict = verdict
        self.counters[f"reach.verdict.{verdict.dht.value}"] += 1
        if config.check:
            self.set_client(client_after(verdict, self.client), now)
            self._plan_reach(next_check_at(verdict, config))
            if not checks.address_watch and config.address_interval > 0:
                checks.address_watch = True
                self._schedule(now + config.address_interval, TimerKind.ADDRESS_DUE, None)
        self._events.append(ReachChecked(op.op, verdict, self.client))

    def _plan_reach(self, when: float) -> None:
        """The next scheduled check at `when`, unless one is planned sooner."""
        checks = self._own_checks()
        if checks.next is not None and checks.next <= when:
            return
        checks.next = when
        self._schedule(when, TimerKind.REACH_DUE, when)

    def _reach_due(self, when: object, now: float) -> None:
        checks = self._own_checks()
        if when != checks.next:
            return  # superseded by a sooner plan
        checks.next = None
        if checks.running is not None:
            return  # the running check plans the next one when it ends
        if len(self._operations) >= self.config.max_operations:
            self._plan_reach(now + self.config.reach.retry_interval)
            return
        self.check_reach(now)

    def _address_due(self, now: float) -> None:
        """Ask one contact which address we come from; a change brings the check forward."""
        self._schedule(now + self.config.reach.address_interval, TimerKind.ADDRESS_DUE, None)
        contacts = self.table.contacts()
        if contacts and self.reach_verdict is not None and self.reach_verdict.observed:
            contact = self._rng.choice(contacts)
            self._send(contact.addr, Stun(), Purpose.ADDRESS, now, contact.node_id)

    def _on_address_reply(self, reply: Reply, now: float) -> None:
        verdict = self.reach_verdict
        if not isinstance(reply, StunReply) or verdict is None or verdict.observed is None:
            return
        if canonical_ip(reply.host) != canonical_ip(verdict.observed[0]):
            self.counters["reach.address_changed"] += 1
            self._plan_reach(now)

    # --- maintenance --------------------------------------------------------

    def _schedule(self, when: float, kind: TimerKind, arg: object) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, arg))

    def _arm_republish(self, key: bytes, now: float) -> None:
        when = now + self.config.republish_interval
        self._republish_at[key] = when
        self._schedule(when, TimerKind.REPUBLISH, key)

    def _republish_due(self, key: object, now: float) -> None:
        """Push the records of `key` to the k closest nodes now known (paper section 2.5).

        If another node stored the key here within the interval, it has done this
        round's work for us: wait one interval from that store instead.
        """
        assert isinstance(key, bytes)
        when = self._republish_at.get(key)
        if when is None or when > now:
            return
        records = self.records.get(key, now)
        if not records:
            del self._republish_at[key]
            self._last_store_seen.pop(key, None)
            return
        last = self._last_store_seen.get(key, float("-inf"))
        interval = self.config.republish_interval
        if now - last < interval and last > when - interval:
            self._republish_at[key] = last + interval
            self._schedule(last + interval, TimerKind.REPUBLISH, key)
            return
        self._arm_republish(key, now)
        if len(self._operations) < self.config.max_operations:
            op = self._new_operation(OpKind.REPUBLISH, key)
            op.records = records
            self.counters["republish"] += 1
            self._start_lookup(op, now)

    def _maintain(self, now: float) -> None:
        self._schedule(now + self.config.maintenance_interval, TimerKind.MAINTENANCE, None)
        self.records.expire(now)
        self.records.new_publishers.prune(now)
        self._expire_plain(now)
        self._limiter.prune(now)
        for addr in [a for a, until in self._unverifiable.items() if until <= now]:
            del self._unverifiable[addr]
        if not len(self.table) and self._seeds:
            # Every contact is gone (a lost join, a partition): start over from the seeds.
            self.counters["rebootstrap"] += 1
            for addr in self._seeds:
                self._send_identify(addr, None, now, force=True)
            return
        self._refresh_buckets(now)

    def _refresh_buckets(self, now: float) -> None:
        """Look up a random id in every bucket idle for the refresh interval (paper 2.3)."""
        own = self.table.own_num
        for index in self.table.stale_buckets(now, self.config.bucket_refresh_interval):
            if len(self._operations) >= self.config.max_operations:
                return
            target = random_id_in_bucket(own, index, self._rng.getrandbits(ID_BITS))
            op = self._new_operation(OpKind.REFRESH, target.to_bytes(ID_BYTES, "big"))
            self.counters["refresh"] += 1
            self._start_lookup(op, now)

    def _expire_plain(self, now: float) -> None:
        ttl = self.config.plain_ttl
        for key in [k for k, (_, stored) in self.plain.items() if now - stored >= ttl]:
            del self.plain[key]

    def _check_id(self, ident: bytes) -> None:
        if len(ident) != ID_BYTES:
            raise LocalProtocolError(f"ids and keys are {ID_BYTES} bytes, got {len(ident)}")


class _Checks:
    """This node's own reachability checks (one runs at a time)."""

    __slots__ = ("address_watch", "next", "nonces", "running", "url", "url_hosts", "verdict")

    def __init__(self) -> None:
        self.url = ""
        self.url_hosts: tuple[str, ...] | None = None
        self.nonces: dict[bytes, int] = {}  # nonce -> the REACH op that sent it, while it runs
        self.running: int | None = None
        self.next: float | None = None  # when the next scheduled check is due
        self.address_watch = False
        self.verdict: ReachVerdict | None = None


class _Helping:
    """Dial-backs this node makes for others' checks."""

    __slots__ = ("dial_backs", "dials_urls", "limiter", "url_dials")

    def __init__(self, limiter: DialBackLimiter) -> None:
        self.limiter = limiter
        self.dial_backs: list[DialBack] = []
        self.dials_urls = False
        self.url_dials: dict[bytes, tuple[bytes, Address]] = {}
        """nonce -> (requester id, request source): HTTP probes whose result is owed. At
        most a minute's dial-backs: a probe takes seconds, the limiter a minute."""


def _remember(mapping: dict[K, V], key: K, value: V, limit: int) -> None:
    """Set `key` as the most recent entry of `mapping`, forgetting the oldest past `limit`."""
    mapping.pop(key, None)
    mapping[key] = value
    while len(mapping) > limit:
        del mapping[next(iter(mapping))]


def _batches(records: list[Record]) -> list[list[Record]]:
    """Split records into pm_store requests that stay within the response budget."""
    batches: list[list[Record]] = []
    current: list[Record] = []
    size = 0
    for record in records:
        cost = record.wire_size()
        if current and (size + cost > RESPONSE_BUDGET or len(current) >= MAX_RECORDS_PER_MESSAGE):
            batches.append(current)
            current, size = [], 0
        current.append(record)
        size += cost + (64 if size == 0 else 0)
    if current:
        batches.append(current)
    return batches


__all__ = [
    "Bootstrapped",
    "ContactCodec",
    "DHTConfig",
    "DHTCore",
    "DialBack",
    "Event",
    "LocalProtocolError",
    "LookupCompleted",
    "Message",
    "NodeVerified",
    "ReachChecked",
    "RecordsFound",
    "RecordsHeld",
    "RecordsStored",
]
