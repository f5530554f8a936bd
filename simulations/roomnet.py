"""Room cores on the simulator: one `signaling.layers.RoomCore` per node over the in-memory DHT.

`RoomNet` carries out the room core's commands the way `signaling/node.py`
(`_run_rooms`) does, with the simulator in place of aiohttp and the UDP DHT:

- `ReadKey` and `PublishRecord` run the node's own `DHTCore.get_records` /
  `put_record` through the overlay (`Overlay.call`), and their events come back as
  `read_done` / `publish_done` (a publish is ok when one node took the record, as
  in the glue);
- `CheckHome` runs the node's real `DHTCore.verify_node`: the overlay carries the
  DHT's identify RPC like any other message, so a seat list counts only when a
  node answering at the address it names proves the id it claims. Nothing is
  answered from the simulator's knowledge of which ids exist;
- node links (`TellNode`, `ReplyNode`, `Forward`) hand the frame to the other
  node's `link_frame` after the one-way latency between the two nodes' regions,
  without jitter: a link is one TCP connection, so frames between two nodes keep
  their order. A frame for a node that is down or unknown is dropped; for a
  `Forward` the sender is told `unavailable`, as the glue does when a link fails;
- `VirtualClient`s reach their home node at a fixed one-way delay (a WebSocket:
  ordered), and answer each `SignRequest` with a real signature over
  `signaling.protocol.presence_payload`, one round trip after the node asked, as
  `peer/signaling.py` does;
- each core's one timer is one engine entry, re-armed after every input;
- with a `WebRtcModel`, a newcomer told `joined` offers a connection to every
  member listed, through the room cores (`signal`: its node, the node link, the
  member's node), each member's client answers the same way, and the newcomer's
  connection to a member is up a fixed number of round trips between the two
  clients after the answer arrived (the model's docstring).

None of the room's rules live here. A command that the DHT core refuses to start
(`LocalProtocolError`: its bound on concurrent operations) is reported back to
the room core as a failed read, publish or check at once, and counted in
`stats.dht_refused`. (The aiohttp glue would leave such a read unanswered.)

Signatures follow the overlay's `identities`: `"sim"` identities sign with a
SHA-256 stand-in and every core verifies with `simulations.overlay.sim_verify`;
`"ed25519"` signs and verifies for real.

Measurement, beside the cores (the simulator sees what nodes do not):

- every join is a `JoinRecord`: when the client sent it and heard back, where it
  sat or why it was refused, the `total` the node announced and the true number
  of people seated in that room at that moment, the DHT operations (`reads`) and
  the DHT messages it cost;
- DHT messages are attributed to what caused them: each input to a room core has
  a cause (a join, the timer, a departure), each DHT operation a command starts
  inherits it, and each request and reply of that operation is counted against it
  (`messages_by_join`, `messages_by_cause`). A read shared by two waiters counts
  for the one that started it.

Randomness comes from the one `random.Random` handed in (each core gets its own
generator seeded from it); time is the engine's clock (Unix seconds, t = 0 at
`simulations.overlay.EPOCH`). The same seed gives the same run.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dht.core import (
    LocalProtocolError,
    Message,
    NodeVerified,
    RecordsFound,
    RecordsHeld,
    RecordsStored,
)
from dht.identity import verify_signature
from dht.ids import to_int
from dht.records import Record, Verifier
from dht.wire import FindRecordsReply, NodesReply, StoreReadReply
from signaling.layers import (
    CheckHome,
    Forward,
    JoinFinished,
    PublishRecord,
    Push,
    ReadKey,
    ReplyNode,
    RoomConfig,
    RoomCore,
    TellNode,
)
from signaling.protocol import (
    ErrorCode,
    ErrorFrame,
    HomeNode,
    Join,
    Joined,
    Layers,
    LinkFrame,
    MemberList,
    Members,
    PeerJoined,
    ServerFrame,
    Signal,
    SignalFrom,
    SignRequest,
    error,
    presence_payload,
)
from signaling.rooms import layer_key, seat_list_value

from .engine import Engine
from .network import NatMix, NatType, connects_directly
from .oracle import IdSpace, fill_routing_tables
from .overlay import EPOCH, MessageObserver, Overlay, SimNode, make_identity, sim_verify

Act = Callable[[RoomCore, float], None]

REFRESH = -1
"""Cause of what a core does on its timer (renewals, re-reads, expiry)."""
DEPARTURE = -2
"""Cause of what a leave or a disconnect makes a core do."""
OTHER = 0
"""Cause of the other client requests (members, layers, signals)."""

WS_PORT = 8443


@dataclass(eq=False, slots=True)
class RoomNode:
    """A simulated signaling node: its room core beside its DHT node."""

    sim: SimNode
    core: RoomCore
    alive: bool = True
    timer_at: float | None = None
    busy: bool = False
    queue: deque[tuple[int, Act]] = field(default_factory=deque)
    clients: set[bytes] = field(default_factory=set)

    @property
    def node_id(self) -> bytes:
        return self.sim.node_id


@dataclass(eq=False, slots=True)
class JoinRecord:
    """One join, as the simulator saw it end to end."""

    id: int
    client: bytes
    room: bytes
    request: str
    """The join frame's id."""
    sent_at: float
    """Simulated seconds (t = 0 at EPOCH) when the client sent the join."""
    asked_layer: int | None = None
    friend: bytes | None = None
    layer: int | None = None
    refused: str | None = None
    """The error code of a refusal."""
    total: int | None = None
    """The room size the node announced in `joined`."""
    truth: int | None = None
    """People seated in the room (joiner included) when the node answered."""
    answered_at: float | None = None
    """When the node answered (seated or refused), simulated seconds."""
    heard_at: float | None = None
    """When the client received the answer."""
    node_seconds: float | None = None
    reads: int | None = None
    offers: int = 0
    """Members the newcomer offered a connection to (`WebRtcModel`)."""
    first_peer_at: float | None = None
    """When the newcomer's first data channel to a member was open, simulated seconds."""
    first_peer_relayed: bool = False
    first_peer_early: bool = False
    """The first peer answered an offer made before `joined` (docs/protocol.md 2.5.3)."""
    named_at: dict[bytes, float] | None = None
    """Member -> when the node named it to the newcomer before `joined` (in its sign
    request, or in a `peer-joined` once its home was proven; 2.5.3), simulated seconds."""
    first_peer_named_at: float | None = None
    """When the node named the first peer, if it was named before `joined`."""
    arrived_at: float | None = None
    """When the join reached the node, simulated seconds."""
    spans: list[Span] | None = None
    """What the node waited on for this join (`RoomNet(spans=True)`): its DHT operations,
    the client's signature."""

    @property
    def latency(self) -> float | None:
        """Client-side: the join sent to its answer received."""
        return None if self.heard_at is None else self.heard_at - self.sent_at

    @property
    def to_first_peer(self) -> float | None:
        """The join sent to the first data channel open with a member."""
        return None if self.first_peer_at is None else self.first_peer_at - self.sent_at


@dataclass(eq=False, slots=True)
class Span:
    """One thing a join waited on: a DHT operation (`read`, `store`, `check`) or the
    client's signature (`sign`), from start to end (simulated seconds), and its floor:
    the round trips along the chain of queries that led to the contact it ended on (the
    nearest one to its key that answered; for a read that found records, the first
    node that returned some), each the one measured (`_OpFloors`)."""

    kind: str
    start: float
    end: float | None = None
    floor: float | None = None


@dataclass(frozen=True, slots=True)
class WebRtcModel:
    """How long a WebRTC data channel takes once the offer/answer exchange is done, in
    round trips between the two clients (RFC 8445 ICE, RFC 9147/6347 DTLS 1.2, RFC 8831
    data channels over SCTP, RFC 8832 DCEP):

    * ICE: one connectivity check (a STUN binding request and its answer) on the first
      candidate pair that works, `ice` = 1 round trip. Candidates trickle: host ones at
      once, server-reflexive ones one round trip to the home node's STUN, both inside the
      offer/answer exchange, which takes longer.
    * DTLS: `dtls` = 2 round trips (ClientHello/HelloVerify are skipped by WebRTC
      stacks; ClientHello, ServerHello..Finished, Finished).
    * SCTP association: `sctp` = 1 round trip (INIT/INIT-ACK; COOKIE-ECHO rides with data).
    * Data channel open (DCEP DATA_CHANNEL_OPEN, negotiated in band): `channel` = half a
      round trip (the opener may send at once; the channel counts as open when the other
      side has the OPEN).
    * A pair whose NATs do not let them connect directly (`network.DIRECT`) goes through
      the newcomer's home node's TURN relay: the newcomer allocates there when told
      `joined` (`turn` = 2 round trips to the relay: a 401 challenge, then the
      authenticated Allocate), in parallel with the signalling, and every round trip above
      is the one through the relay.

    The path between two clients: each sits in its home node's region, `client_access_ms`
    further out; one way is the region-to-region latency plus both access links.
    """

    ice: float = 1.0
    dtls: float = 2.0
    sctp: float = 1.0
    channel: float = 0.5
    turn: float = 2.0
    nat: NatMix | None = None
    """NAT types of clients (None: all open, every pair direct)."""

    @property
    def rounds(self) -> float:
        return self.ice + self.dtls + self.sctp + self.channel


@dataclass(eq=False, slots=True)
class VirtualClient:
    """A client with an Ed25519 (or stand-in) key, connected to one home node."""

    identity: Any
    node: RoomNode
    source: str
    delay: float
    """One-way seconds between the client and its node."""
    answers: bool = True
    """Whether it signs what the node asks it to (a client that stops answering lapses)."""
    connected: bool = False
    frames: list[ServerFrame] | None = None
    """Every frame received, when the net keeps them (tests); None at scale."""
    layers: dict[bytes, int] = field(default_factory=dict)
    """Room -> the layer of the last `joined` heard (the client's own view)."""
    last: JoinRecord | None = None
    requests: int = 0
    nat: NatType = NatType.OPEN
    turn_ready: float = 0.0
    """When its TURN allocation at its home node's relay is ready (simulated seconds)."""
    offered: set[bytes] = field(default_factory=set)
    """Members its last join offered a connection to."""
    offered_early: set[bytes] = field(default_factory=set)
    """Those offered before `joined`, from the members its sign request named (2.5.3)."""
    offering: tuple[bytes, int] | None = None
    """(room, layer) of the seat its join under way signed, whose members it may offer to
    before `joined` (2.5.3)."""

    @property
    def key(self) -> bytes:
        return bytes(self.identity.public_key)

    def received(self, kind: type[Any]) -> list[Any]:
        """The frames of one type received so far (needs `keep_frames`)."""
        return [f for f in self.frames or () if isinstance(f, kind)]


@dataclass(slots=True)
class RoomNetStats:
    link_frames: int = 0
    link_dropped: int = 0
    """Link frames for a node that is down or was never one."""
    pushes: int = 0
    sign_requests: int = 0
    dht_reads: int = 0
    dht_publishes: int = 0
    dht_checks: int = 0
    dht_refused: int = 0
    """DHT operations the DHT core would not start (at its bound of concurrent operations)."""
    messages_background: int = 0
    """DHT messages of no room command (routing upkeep, identifies of new contacts)."""


class _Attribution(MessageObserver):
    """Counts each DHT message against the cause of the operation it belongs to."""

    def __init__(self) -> None:
        self.ops: dict[tuple[int, int], int] = {}
        self.replies: dict[bytes, int] = {}
        self.by_cause: Counter[int] = Counter()
        self.background = 0

    def sent(self, node: SimNode, message: Message, dst: Any) -> None:
        if not message.request:
            cause = self.replies.pop(message.msg_id, None)
            if cause is None:
                self.background += 1
            else:
                self.by_cause[cause] += 1
            return
        # The DHT core names no operation on the wire; the simulator, like the
        # oracle, may look inside the core for the operation a request serves.
        pending = node.core._pending.get(message.msg_id)
        op = pending.op if pending is not None else None
        cause = self.ops.get((node.index, op)) if op is not None else None
        if cause is None:
            self.background += 1
            return
        self.by_cause[cause] += 1
        self.replies[message.msg_id] = cause


class _OpTrace:
    __slots__ = ("holders", "key", "paths", "reached", "sent")

    def __init__(self, key: int) -> None:
        self.key = key
        self.paths: dict[Any, float] = {}
        """Address -> round trips spent before the operation could first ask it."""
        self.reached: dict[Any, float] = {}
        """Address -> round trips along the chain up to and including its answer."""
        self.holders: set[Any] = set()
        """Addresses whose answer carried records."""
        self.sent: list[bytes] = []


class _OpFloors(MessageObserver):
    """The floor of DHT operations (`Span.floor`), from their messages: `simulations.
    observe.HopCounter`'s chain of round trips, per operation instead of per lookup key
    (two joins at one node may read one key at once)."""

    def __init__(self, overlay: Overlay) -> None:
        self.overlay = overlay
        self.ops: dict[tuple[int, int], _OpTrace] = {}
        self.asked: dict[bytes, tuple[_OpTrace, Any, float]] = {}

    def track(self, sim: SimNode, op: int, key: bytes) -> None:
        self.ops[(sim.index, op)] = _OpTrace(to_int(key))

    def sent(self, node: SimNode, message: Message, dst: Any) -> None:
        if not message.request or message.msg_id in self.asked:
            return  # a reply, or a retransmission: the round trip counts from the first send
        pending = node.core._pending.get(message.msg_id)
        if pending is None or pending.op is None:
            return
        trace = self.ops.get((node.index, pending.op))
        if trace is None:
            return
        trace.sent.append(message.msg_id)
        trace.paths.setdefault(dst, 0.0)
        self.asked[message.msg_id] = (trace, dst, self.overlay.engine.now)

    def delivered(self, node: SimNode, message: Message, src: Any) -> None:
        if message.request:
            return
        entry = self.asked.pop(message.msg_id, None)
        if entry is None:
            return
        trace, dst, sent_at = entry
        reached = trace.paths.get(dst, 0.0) + (self.overlay.engine.now - sent_at)
        trace.reached.setdefault(dst, reached)
        body = message.body
        if isinstance(body, FindRecordsReply | StoreReadReply) and body.records:
            trace.holders.add(dst)
        if isinstance(body, NodesReply | FindRecordsReply):
            for contact in body.contacts:  # a simulator contact carries its address tuple
                trace.paths.setdefault(getattr(contact, "addr", None), reached)

    def finish(self, sim: SimNode, op: int) -> float | None:
        """The floor of the operation that just ended (None: nobody answered it)."""
        trace = self.ops.pop((sim.index, op), None)
        if trace is None:
            return None
        for msg_id in trace.sent:
            self.asked.pop(msg_id, None)
        ends = trace.holders or set(trace.reached)
        if not ends:
            return 0.0 if not trace.sent else None  # answered locally: no round trip
        by_addr = self.overlay.by_addr

        def distance(addr: Any) -> int:
            node = by_addr.get(addr)
            return to_int(node.node_id) ^ trace.key if node is not None else 1 << 160

        return trace.reached[min(ends, key=lambda a: (distance(a), trace.reached[a]))]


class RoomNet:
    """Room cores, their virtual clients and node links on one overlay (module docstring)."""

    def __init__(
        self,
        overlay: Overlay,
        rng: random.Random,
        config: RoomConfig | None = None,
        client_access_ms: float = 15.0,
        keep_frames: bool = True,
        attribute: bool = True,
        webrtc: WebRtcModel | None = None,
        spans: bool = False,
    ) -> None:
        """`client_access_ms`: a client's last mile, one way, added to its region's
        latency (clients sit in their home node's region). `keep_frames`: keep every
        frame each client receives (tests; off at scale). `attribute`: count DHT
        messages per cause (needs the overlay's typed-message transport). `spans`: record
        what each join waited on and its floor (`JoinRecord.spans`; typed transport)."""
        self.overlay = overlay
        self.engine: Engine = overlay.engine
        self.rng = rng
        limits = overlay.config.records
        base = config or RoomConfig()
        self.config = dataclasses.replace(base, max_value_bytes=limits.max_value_bytes)
        self.verify: Verifier = sim_verify if overlay.identities == "sim" else verify_signature
        self.client_access = client_access_ms / 1000.0
        self.keep_frames = keep_frames
        self.webrtc = webrtc
        self.nodes: list[RoomNode] = []
        self.by_id: dict[bytes, RoomNode] = {}
        self.clients: dict[bytes, VirtualClient] = {}
        self.joins: list[JoinRecord] = []
        self.seated: dict[bytes, set[bytes]] = {}
        """Room -> keys seated there now (the truth the estimates are scored against)."""
        self.prefilled: dict[bytes, dict[int, int]] = {}
        """Room -> layer -> members seated by `prefill` (made up, never driven)."""
        self.stats = RoomNetStats()
        self.counters: Counter[str] = Counter()
        self._open: dict[bytes, tuple[JoinRecord, Join]] = {}
        self._attribution: _Attribution | None = None
        if attribute and overlay.transport == "message":
            self._attribution = _Attribution()
            overlay.observers.append(self._attribution)
        self._floors: _OpFloors | None = None
        if spans and overlay.transport == "message":
            self._floors = _OpFloors(overlay)
            overlay.observers.append(self._floors)

    @property
    def now(self) -> float:
        return self.engine.now

    @property
    def t(self) -> float:
        """Simulated seconds since the start."""
        return self.engine.now - EPOCH

    # --- population ----------------------------------------------------------------

    def add_node(self, sim: SimNode) -> RoomNode:
        """A room core for the DHT node `sim` (its URL names its address, port 8443)."""
        url = f"ws://{sim.addr[0]}:{WS_PORT}"
        core = RoomCore(
            self.config,
            sim.core.identity,
            url,
            sim.addr,
            random.Random(self.rng.getrandbits(64)),
            self.verify,
            self.overlay.config.records,
        )
        node = RoomNode(sim, core)
        self.nodes.append(node)
        self.by_id[sim.node_id] = node
        return node

    def add_client(
        self,
        node: RoomNode,
        source: str | None = None,
        identity: Any = None,
        answers: bool = True,
    ) -> VirtualClient:
        """A client homed at `node` (not connected yet); `source` is its address as the
        node sees it (one per client unless given)."""
        if identity is None:
            identity = make_identity(self.overlay.identities, self.rng.randbytes(32))
        index = len(self.clients)
        if source is None:
            source = f"198.{18 + (index >> 16) % 2}.{(index >> 8) & 255}.{index & 255}"
        network = self.overlay.network
        region = node.sim.region
        delay = network.base_delay(region, region) + self.client_access
        delay += self.rng.random() * network.jitter_ms / 1000.0
        frames: list[ServerFrame] | None = [] if self.keep_frames else None
        client = VirtualClient(identity, node, source, delay, answers, frames=frames)
        if self.webrtc is not None and self.webrtc.nat is not None:
            client.nat = self.webrtc.nat.pick(self.rng)
        self.clients[client.key] = client
        return client

    def kill(self, node: RoomNode) -> None:
        """The node crashes: its DHT node stops answering, its core is driven no more,
        its links and clients go silent. Nobody is told."""
        node.alive = False
        node.timer_at = None
        node.queue.clear()
        self.overlay.kill(node.sim)
        for key in node.clients:
            client = self.clients[key]
            client.connected = False
            for members in self.seated.values():
                members.discard(key)
        node.clients.clear()

    # --- what clients do (each request reaches the node one `delay` later) ------------

    def connect(self, client: VirtualClient) -> None:
        """The client proved its key (the hello exchange, not modelled)."""
        client.connected = True
        client.node.clients.add(client.key)
        source = client.source
        self._send(client, OTHER, lambda core, now: core.connect(client.key, source, now))

    def join(
        self,
        client: VirtualClient,
        room: bytes,
        layer: int | None = None,
        friend: bytes | None = None,
    ) -> JoinRecord:
        """Send a join; its `JoinRecord` fills in as the node answers."""
        client.requests += 1
        request = f"j{client.requests}"
        frame = Join(room, layer, request, friend)
        record = JoinRecord(len(self.joins) + 1, client.key, room, request, self.t, layer, friend)
        self.joins.append(record)
        client.last = record
        client.offered, client.offered_early, client.offering = set(), set(), None

        def arrive(core: RoomCore, now: float) -> None:
            record.arrived_at = self.t
            self._open[client.key] = (record, frame)
            if not core.join(client.key, frame, now):
                self._open.pop(client.key, None)
                message = "one join at a time; wait for the answer"
                self._deliver(client, error(ErrorCode.RATE_LIMITED, message, frame.id))
                record.refused = ErrorCode.RATE_LIMITED.value

        self._send(client, record.id, arrive)
        return record

    def leave(self, client: VirtualClient, room: bytes) -> None:
        def arrive(core: RoomCore, now: float) -> None:
            core.leave(client.key, room, None, now)
            self.seated.get(room, set()).discard(client.key)

        self._send(client, DEPARTURE, arrive)

    def disconnect(self, client: VirtualClient) -> None:
        client.connected = False

        def arrive(core: RoomCore, now: float) -> None:
            core.disconnect(client.key, now)
            client.node.clients.discard(client.key)
            for members in self.seated.values():
                members.discard(client.key)

        self._send(client, DEPARTURE, arrive)

    def members(self, client: VirtualClient, room: bytes) -> None:
        client.requests += 1
        frame = Members(room, f"m{client.requests}")
        self._send(client, OTHER, lambda core, now: core.members(client.key, frame, now))

    def layer_list(self, client: VirtualClient, room: bytes) -> None:
        client.requests += 1
        frame = Layers(room, f"l{client.requests}")
        self._send(client, OTHER, lambda core, now: core.layers(client.key, frame, now))

    def signal(self, client: VirtualClient, room: bytes, to: bytes, payload: Any) -> None:
        client.requests += 1
        frame = Signal(to, payload, room, f"s{client.requests}")
        self._send(client, OTHER, lambda core, now: core.signal(client.key, frame, now))

    def _send(self, client: VirtualClient, cause: int, act: Act) -> None:
        node = client.node
        self.engine.post(self.now + client.delay, self._run_input, (node, cause, act))

    def _deliver(self, client: VirtualClient, frame: ServerFrame) -> None:
        self.engine.post(self.now + client.delay, self._client_receives, (client, frame, OTHER))

    # --- inputs to a core: one at a time per node, then its commands, then its timer ------

    def _run_input(self, item: tuple[RoomNode, int, Act]) -> None:
        node, cause, act = item
        self._input(node, cause, act)

    def _input(self, node: RoomNode, cause: int, act: Act) -> None:
        """Feed `act` to the node's core and carry out what it asks. An input that arrives
        while the core's commands are being carried out (a DHT operation that ended at
        once) waits its turn, so the core is never entered twice."""
        if not node.alive:
            return
        node.queue.append((cause, act))
        if node.busy:
            return
        node.busy = True
        try:
            while node.queue and node.alive:
                cause, act = node.queue.popleft()
                act(node.core, self.now)
                self._execute(node, cause)
        finally:
            node.busy = False
        self._arm(node)

    def _arm(self, node: RoomNode) -> None:
        when = node.core.get_timer()
        if when != node.timer_at and node.alive:
            node.timer_at = when
            if when is not None:
                self.engine.post(when, self._fire, node)

    def _fire(self, node: RoomNode) -> None:
        when = node.timer_at
        if when is None or when > self.now or not node.alive:
            return  # superseded: the core re-armed, or the node is down
        node.timer_at = None
        self._input(node, REFRESH, lambda core, now: core.handle_timer(now))

    def _execute(self, node: RoomNode, cause: int) -> None:
        for command in node.core.commands():
            if isinstance(command, Push):
                self._push(node, command.client, command.frame, cause)
            elif isinstance(command, ReadKey):
                self._read(node, command, cause)
            elif isinstance(command, PublishRecord):
                self._publish(node, command, cause)
            elif isinstance(command, CheckHome):
                self._check_home(node, command, cause)
            elif isinstance(command, TellNode):
                self._link(node, command.home.node_id, command.frame, cause)
            elif isinstance(command, ReplyNode):
                self._link(node, command.remote, command.frame, cause)
            elif isinstance(command, Forward):
                if not self._link(node, command.home.node_id, command.frame, cause):
                    client = self.clients.get(command.client)
                    if client is not None and client.node is node:
                        message = "the peer's node is unreachable"
                        self._deliver(
                            client, error(ErrorCode.UNAVAILABLE, message, command.frame.id)
                        )
            else:
                self._join_finished(command)

    # --- the commands ------------------------------------------------------------------

    def _push(self, node: RoomNode, key: bytes, frame: ServerFrame, cause: int) -> None:
        client = self.clients.get(key)
        if client is None or client.node is not node or not client.connected:
            return
        self.stats.pushes += 1
        opened = self._open.get(key)
        if opened is not None:
            record, join = opened
            if isinstance(frame, Joined) and frame.id == join.id:
                self._seated_at(record, frame)
            elif isinstance(frame, ErrorFrame) and frame.id == join.id:
                del self._open[key]
                record.refused = str(frame.code)
                record.answered_at = self.t
                if record.room not in node.core.seated_rooms(key):
                    self.seated.get(record.room, set()).discard(key)
        if isinstance(frame, SignRequest):
            self.stats.sign_requests += 1
            joining = opened[0] if opened is not None else None
            if joining is not None and frame.members and frame.room == joining.room:
                joining.named_at = joining.named_at or {}
                for member in frame.members:
                    joining.named_at.setdefault(member.key, self.t)
        elif isinstance(frame, MemberList) and frame.id is None and opened is not None:
            joining = opened[0]  # members proven since the sign request (2.5.3)
            if frame.room == joining.room:
                joining.named_at = joining.named_at or {}
                for member in frame.members:
                    joining.named_at.setdefault(member.key, self.t)
        self.engine.post(self.now + client.delay, self._client_receives, (client, frame, cause))

    def _seated_at(self, record: JoinRecord, frame: Joined) -> None:
        del self._open[record.client]
        members = self.seated.setdefault(record.room, set())
        members.add(record.client)
        record.layer = frame.layer
        record.total = frame.total
        record.truth = len(members) + sum(self.prefilled.get(record.room, {}).values())
        record.answered_at = self.t

    def _join_finished(self, done: JoinFinished) -> None:
        client = self.clients.get(done.client)
        record = client.last if client is not None else None
        if record is None or record.room != done.room:
            return
        record.node_seconds = done.seconds
        record.reads = done.reads

    def _client_receives(self, item: tuple[VirtualClient, ServerFrame, int]) -> None:
        client, frame, cause = item
        if not client.connected:
            return
        if client.frames is not None:
            client.frames.append(frame)
        if isinstance(frame, SignRequest):
            self._sign(client, frame, cause)
            if frame.members is not None and self.webrtc is not None:
                self._offer_early(client, frame)
            return
        last = client.last
        if isinstance(frame, Joined):
            client.layers[frame.room] = frame.layer
        if (
            isinstance(frame, Joined | ErrorFrame)
            and last is not None
            and last.heard_at is None
            and frame.id == last.request
        ):
            last.heard_at = self.t
            if isinstance(frame, Joined) and self.webrtc is not None:
                self._offer_all(client, last, frame)
        if isinstance(frame, SignalFrom) and self.webrtc is not None:
            self._signalled(client, frame)
        elif (
            isinstance(frame, MemberList)
            and frame.id is None
            and self.webrtc is not None
            and last is not None
            and last.heard_at is None
            and client.offering == (frame.room, frame.layer)
        ):
            # Members proven after the sign request named the others (2.5.3).
            for named in frame.members:
                self._offer(client, last, frame.room, named.key)
                client.offered_early.add(named.key)
        elif (
            isinstance(frame, PeerJoined)
            and self.webrtc is not None
            and last is not None
            and last.heard_at is not None
            and last.layer == frame.layer
            and last.room == frame.room
        ):
            # A member its node learnt of after `joined` (its home was still being proven):
            # the newcomer offers to it too. A newer joiner offers to it instead (peer/).
            member = self.clients.get(frame.key)
            earlier = member.last if member is not None else None
            if earlier is not None and earlier.sent_at < last.sent_at:
                self._offer(client, last, frame.room, frame.key)

    # --- WebRTC setup (`WebRtcModel`) ---------------------------------------------------

    def _offer_all(self, client: VirtualClient, record: JoinRecord, frame: Joined) -> None:
        """The newcomer offers to every member it was told of (the newcomer offers, as
        peer/ does), and starts its TURN allocation if any pair may need the relay."""
        if client.offering is None:
            self._allocate(client)
        for member in frame.members:
            self._offer(client, record, frame.room, member.key)

    def _offer_early(self, client: VirtualClient, frame: SignRequest) -> None:
        """A join's sign request named the layer's members (docs/protocol.md 2.5.3): the
        newcomer offers to them at once, right after its signature (one WebSocket, so the
        node has the signature first), and allocates at its relay meanwhile."""
        record = client.last
        if record is None or record.heard_at is not None or record.room != frame.room:
            return
        if client.offering is None:
            self._allocate(client)
        client.offering = (frame.room, frame.layer)
        for member in frame.members or ():
            self._offer(client, record, frame.room, member.key)
            client.offered_early.add(member.key)

    def _allocate(self, client: VirtualClient) -> None:
        """Start the TURN allocation if any pair may need the relay."""
        model = self.webrtc
        assert model is not None
        if model.nat is not None and client.nat is not NatType.OPEN:
            relay = self.overlay.network.base_delay(client.node.sim.region, client.node.sim.region)
            client.turn_ready = self.t + model.turn * 2 * (relay + self.client_access)

    def _offer(self, client: VirtualClient, record: JoinRecord, room: bytes, to: bytes) -> None:
        if to in client.offered or to == client.key or record.first_peer_at is not None:
            return
        client.offered.add(to)
        record.offers += 1
        self.signal(client, room, to, {"offer": record.id})

    def _signalled(self, client: VirtualClient, frame: SignalFrom) -> None:
        payload = frame.payload
        if not isinstance(payload, dict):
            return
        if "offer" in payload:
            self.signal(client, frame.room, frame.sender, {"answer": payload["offer"]})
            return
        record = client.last
        if record is None or payload.get("answer") != record.id or record.first_peer_at:
            return
        other = self.clients.get(frame.sender)
        if other is None:
            return
        model = self.webrtc
        assert model is not None
        rtt, relayed = self._p2p_round_trip(client, other)
        start = max(self.t, client.turn_ready) if relayed else self.t
        record.first_peer_at = start + model.rounds * rtt
        record.first_peer_relayed = relayed
        record.first_peer_early = frame.sender in client.offered_early
        if record.first_peer_early and record.named_at is not None:
            record.first_peer_named_at = record.named_at.get(frame.sender)

    def _p2p_round_trip(self, a: VirtualClient, b: VirtualClient) -> tuple[float, bool]:
        """Round trip between two clients, direct or through `a`'s home node's relay."""
        network = self.overlay.network
        ra, rb = a.node.sim.region, b.node.sim.region
        access = self.client_access
        if connects_directly(a.nat, b.nat):
            return 2 * (network.base_delay(ra, rb) + 2 * access), False
        relay = a.node.sim.region
        one_way = network.base_delay(ra, relay) + network.base_delay(relay, rb) + 2 * access
        return 2 * one_way, True

    def _sign(self, client: VirtualClient, frame: SignRequest, cause: int) -> None:
        """Sign what the node asks, after the checks peer/signaling.py makes."""
        node = client.node
        if not client.answers or frame.node != node.node_id:
            return
        home = HomeNode(frame.node, frame.url)
        payload = presence_payload(
            client.key, frame.room, frame.layer, home, frame.seq, frame.expires
        )
        sig = client.identity.sign(payload)
        request = frame.id
        span = self._span(cause, "sign", self.t - client.delay)

        def answered(core: RoomCore, now: float) -> None:
            if span is not None:
                span.end = self.t
                span.floor = span.end - span.start  # one round trip to the client
            if not core.signed(client.key, request, sig, now):
                self.counters["sign.late"] += 1  # asked too long ago: the node gave up

        self._send(client, cause, answered)

    def _link(self, node: RoomNode, to: bytes, frame: LinkFrame, cause: int) -> bool:
        """A frame over the node link to `to`; False when no node answers there."""
        other = self.by_id.get(to)
        if other is None or not other.alive:
            self.stats.link_dropped += 1
            return False
        self.stats.link_frames += 1
        delay = self.overlay.network.base_delay(node.sim.region, other.sim.region)
        sender = node.node_id

        def arrive(core: RoomCore, now: float) -> None:
            core.link_frame(sender, frame, now)

        self.engine.post(self.now + delay, self._run_input, (other, cause, arrive))
        return True

    def _read(self, node: RoomNode, command: ReadKey, cause: int) -> None:
        self.stats.dht_reads += 1
        sim = node.sim
        try:
            op = sim.core.get_records(command.key, self.now, command.quorum)
        except LocalProtocolError:
            self._refused(node, cause, lambda core, now: core.read_done(command.op, None, now))
            return

        span = self._track(sim, op, cause, "read", command.key)

        def done(_sim: SimNode, event: Any) -> None:
            records = list(event.records) if isinstance(event, RecordsFound) else None
            self._close(span, sim, op)
            self._op_done(sim, op)
            self._input(node, cause, lambda core, now: core.read_done(command.op, records, now))

        self._start(sim, op, cause, done)

    def _publish(self, node: RoomNode, command: PublishRecord, cause: int) -> None:
        self.stats.dht_publishes += 1
        sim = node.sim
        try:
            op = sim.core.put_record(
                command.record,
                self.now,
                command.majority,
                read_back=command.read_back,
                early=command.early,
            )
        except LocalProtocolError:
            self._refused(node, cause, lambda core, now: core.publish_done(command.op, False, now))
            return

        span = self._track(sim, op, cause, "store", command.record.key)

        majority: list[bool] = []

        def done(_sim: SimNode, event: Any) -> None:
            if isinstance(event, RecordsHeld):  # 2.5.6: the join waited on the store so far
                held = list(event.held)
                majority.append(True)
                self._close(span, sim, op)
                self._input(node, cause, lambda core, now: core.publish_held(command.op, held, now))
                return
            ok = isinstance(event, RecordsStored) and event.stored > 0
            read_back = event.held if isinstance(event, RecordsStored) else None
            held = list(read_back) if read_back is not None else None
            if not majority:
                self._close(span, sim, op)
            self._op_done(sim, op)
            self._input(node, cause, lambda core, now: core.publish_done(command.op, ok, now, held))

        self._start(sim, op, cause, done)

    def _check_home(self, node: RoomNode, command: CheckHome, cause: int) -> None:
        self.stats.dht_checks += 1
        sim = node.sim
        node_id, addr = command.node_id, command.addr
        try:
            op = sim.core.verify_node(node_id, addr, self.now)
        except LocalProtocolError:
            failed: Act = lambda core, now: core.home_checked(node_id, addr, False, now)  # noqa: E731
            self._refused(node, cause, failed)
            return

        span = self._track(sim, op, cause, "check", node_id)

        def done(_sim: SimNode, event: Any) -> None:
            ok = isinstance(event, NodeVerified) and event.ok
            self._close(span, sim, op)
            self._op_done(sim, op)
            self._input(node, cause, lambda core, now: core.home_checked(node_id, addr, ok, now))

        self._start(sim, op, cause, done)

    def _start(
        self, sim: SimNode, op: int, cause: int, done: Callable[[SimNode, Any], None]
    ) -> None:
        if self._attribution is not None:
            self._attribution.ops[(sim.index, op)] = cause
        self.overlay.call(sim, op, done)

    def _span(self, cause: int, kind: str, start: float) -> Span | None:
        """A span of the join `cause` names (None: not a join, or spans are off)."""
        if self._floors is None or not 0 < cause <= len(self.joins):
            return None
        record = self.joins[cause - 1]
        span = Span(kind, start)
        if record.spans is None:
            record.spans = []
        record.spans.append(span)
        return span

    def _track(self, sim: SimNode, op: int, cause: int, kind: str, key: bytes) -> Span | None:
        span = self._span(cause, kind, self.t)
        if span is not None and self._floors is not None:
            self._floors.track(sim, op, key)
        return span

    def _close(self, span: Span | None, sim: SimNode, op: int) -> None:
        if span is None or self._floors is None:
            return
        span.end = self.t
        floor = self._floors.finish(sim, op)
        span.floor = span.end - span.start if floor is None else min(floor, span.end - span.start)

    def _op_done(self, sim: SimNode, op: int) -> None:
        if self._attribution is not None:
            self._attribution.ops.pop((sim.index, op), None)

    def _refused(self, node: RoomNode, cause: int, act: Act) -> None:
        self.stats.dht_refused += 1
        self.engine.post(self.now, self._run_input, (node, cause, act))

    # --- what the simulator knows and nodes do not ---------------------------------------

    def messages_by_cause(self) -> Counter[int]:
        """DHT messages (requests and replies) per cause; joins are their `JoinRecord.id`."""
        return Counter(self._attribution.by_cause) if self._attribution else Counter()

    def messages_of(self, record: JoinRecord) -> int:
        return self._attribution.by_cause.get(record.id, 0) if self._attribution else 0

    def background_messages(self) -> int:
        return self._attribution.background if self._attribution else 0

    def layer_counts(self, room: bytes) -> dict[int, int]:
        """Layer -> people seated there: clients told `joined` (a join still being placed
        is not counted) and still holding the seat at their node, as the node sees it."""
        return self.all_layer_counts([room]).get(room, {})

    def all_layer_counts(self, rooms: list[bytes] | None = None) -> dict[bytes, dict[int, int]]:
        """`layer_counts` of every room (or of `rooms`), in one pass; prefilled seats count."""
        counts: dict[bytes, Counter[int]] = {}
        wanted = rooms if rooms is not None else list({*self.seated, *self.prefilled})
        for room in wanted:
            layers: Counter[int] = Counter(self.prefilled.get(room, {}))
            for key in self.seated.get(room, ()):
                node = self.clients[key].node
                state = node.core.clients.get(key) if node.alive else None
                seat = state.seats.get(room) if state is not None else None
                if seat is not None:
                    layers[seat.layer] += 1
            if layers:
                counts[room] = layers
        return {room: dict(sorted(layers.items())) for room, layers in counts.items()}

    def prefill(
        self, room: bytes, people: int, homes: list[RoomNode], ttl: int = 3600
    ) -> dict[int, int]:
        """Seat `people` made-up members in `room` as if they had joined before the run (a
        warm start, like `warm_overlay` for routing tables): layers 0, 1, ... filled to
        `layer_size` in turn, each member homed at a node drawn from `homes`, one seat
        list per (home, layer) signed by that node, naming the room's true size in its
        hints, written straight into the record stores of the k nodes closest to the
        layer's key. The homes' cores are not told: they neither renew nor withdraw these
        seats, which last `ttl` seconds, and a home that seats a client of its own in
        such a layer replaces its made-up list, so give joiners other homes."""
        size = self.config.layer_size
        layers = -(-people // size)
        by_list: dict[tuple[int, int], list[tuple[bytes, int]]] = {}
        counts: Counter[int] = Counter()
        since = int(self.now * 1000) - 1000
        for person in range(people):
            layer = person // size
            home = self.rng.randrange(len(homes))
            by_list.setdefault((layer, home), []).append((self.rng.randbytes(32), since))
            counts[layer] += 1
        space = IdSpace(self.overlay.nodes)
        k = self.overlay.config.k
        expires = int(self.now + ttl)
        for (layer, index), seats in sorted(by_list.items()):
            node = homes[index]
            key = layer_key(room, layer)
            value = seat_list_value(
                room, layer, node.core.home, node.sim.addr, seats, layers, people
            )
            record = Record.create(node.sim.core.identity, key, value, since, expires)
            for holder in space.closest(to_int(key), k):
                self.overlay.nodes[holder].core.records.put(record, self.now)
        self.prefilled[room] = dict(sorted(counts.items()))
        return self.prefilled[room]

    def run(self, seconds: float, max_events: int | None = None) -> int:
        """Advance the clock by `seconds`; `max_events` bounds a runaway run."""
        end = self.now + seconds
        ran = self.engine.run(until=end, max_events=max_events)
        if max_events is not None and ran >= max_events:
            raise RuntimeError(f"more than {max_events} events in {seconds} s")
        return ran


def warm_overlay(overlay: Overlay, count: int, rng: random.Random) -> list[SimNode]:
    """`count` DHT nodes with routing tables filled as in a network that has been running
    (`simulations.oracle.fill_routing_tables`)."""
    nodes = [overlay.add_node() for _ in range(count)]
    fill_routing_tables(nodes, IdSpace(nodes), overlay.nodes, overlay.config.k, rng)
    return nodes


def layer_fill(counts: dict[int, int], layer_size: int) -> float | None:
    """Mean fill of every layer below the highest occupied one (holes count as empty)."""
    top = max((layer for layer, count in counts.items() if count), default=None)
    if not top:
        return None
    return sum(min(counts.get(i, 0), layer_size) for i in range(top)) / (top * layer_size)


__all__ = [
    "DEPARTURE",
    "OTHER",
    "REFRESH",
    "JoinRecord",
    "RoomNet",
    "RoomNetStats",
    "RoomNode",
    "VirtualClient",
    "WebRtcModel",
    "layer_fill",
    "warm_overlay",
]
