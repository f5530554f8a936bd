"""The project's own DHT cores on the engine, joined by the modelled transport.

Each simulated node is one `dht.core.DHTCore` and a small `SimNode` record
(its region, address and the one pending timer entry). There is no socket,
task or event loop per node: a datagram is one heap entry, a node's timers
are one heap entry (re-armed from `core.get_timer()` after every call), and
contacts are shared objects (`SharedContacts`), one per node for the whole
simulation, and the same object serves as the node's routing contact and as
its contact in replies (`SimContact`).

Two transports feed the cores:

* ``message`` (default): typed messages through `receive_message` /
  `messages_to_send`, no codec (the core's byte path is this plus encoding);
* ``bytes``: real datagrams through `receive` / `datagrams_to_send`, the path
  the UDP glue uses; slower, kept as the benchmark baseline and as a check
  that both paths give the same simulation.

Identities are Ed25519 (``ed25519``, as deployed) or a hash-based stand-in
(``sim``): a public key is 32 random bytes, a signature is a SHA-256 of key
and message. Ids still derive from public keys, so a Sybil must still grind
keys to land near a target; only the signature cost is gone.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from dht.compiled import mypyc_attr
from dht.core import (
    ContactCodec,
    DHTConfig,
    DHTCore,
    Event,
    Message,
    NodeContact,
    RecordsHeld,
)
from dht.identity import Identity
from dht.ids import node_id_for
from dht.routing import Contact
from dht.wire import Address, WireContact

from .engine import Engine
from .network import NetworkModel

EPOCH = 1_700_000_000.0
"""Virtual time 0 of every simulation, on the Unix clock the cores expect."""
PORT = 4000

EventCallback = Callable[["SimNode", Event], None]


class SimIdentity:
    """A node identity whose signatures cost one SHA-256 instead of an Ed25519 operation."""

    __slots__ = ("node_id", "public_key")

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key
        self.node_id = node_id_for(public_key)

    @classmethod
    def from_seed(cls, seed: bytes) -> SimIdentity:
        return cls(hashlib.sha256(b"pagemesh-sim-key\x00" + seed).digest())

    def sign(self, message: bytes) -> bytes:
        return sim_signature(self.public_key, message)


def sim_signature(public_key: bytes, message: bytes) -> bytes:
    digest = hashlib.sha256(public_key + message).digest()
    return digest + digest


def sim_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """The verifier matching `SimIdentity.sign` (injected into every simulated core)."""
    return signature == sim_signature(public_key, message)


def make_identity(kind: str, seed: bytes) -> Any:
    if kind == "ed25519":
        return Identity.from_seed(seed)
    if kind == "sim":
        return SimIdentity.from_seed(seed)
    raise ValueError(f"identities are 'ed25519' or 'sim', not {kind!r}")


class SeededOnDemand:
    """A core's random source, created at its first draw: the same draws as
    `random.Random(seed)`, but a node that never sends anything (most of a
    10^6-node network in a short run) holds 8 bytes of seed instead of the
    Mersenne Twister's 2.5 kB state. Cores only call `getrandbits`."""

    __slots__ = ("_rng", "_seed")

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng: random.Random | None = None

    def getrandbits(self, bits: int) -> int:
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(self._seed)
        return rng.getrandbits(bits)


@mypyc_attr(native_class=False)  # a subclass of the interpreted, slotted `Contact`
class SimContact(Contact[Address]):
    """A routing contact that also reads as a `WireContact` (node_id, host, port).

    Replies then carry the contacts the answering table holds, and the asker
    takes them back as they are: no conversion per contact each way, which was
    a fifth of a lookup's cost at 10^5 nodes.
    """

    __slots__ = ()

    @property
    def host(self) -> str:
        return self.addr[0]

    @property
    def port(self) -> int:
        return self.addr[1]


def host_address(index: int) -> Address:
    """Node `index`'s address: 10.x.y.z, so reply budgets see realistic host lengths."""
    return (f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", PORT)


class SimNode:
    """One simulated DHT node: the core plus what the transport model needs."""

    __slots__ = (
        "addr",
        "alive",
        "contact",
        "core",
        "created_at",
        "index",
        "joined_at",
        "region",
        "timer_at",
    )

    def __init__(
        self, index: int, core: DHTCore, addr: Address, region: int, created_at: float = 0.0
    ) -> None:
        self.index = index
        self.core = core
        self.addr = addr
        self.region = region
        self.alive = True
        self.timer_at: float | None = None
        self.joined_at: float | None = None
        self.created_at = created_at
        self.contact: NodeContact = SimContact.make(core.node_id, addr)

    @property
    def node_id(self) -> bytes:
        return self.core.node_id


_SIM_CONTACTS = frozenset({SimContact})


class SharedContacts(ContactCodec):
    """Hands out each node's one `SimContact` instead of new copies, and uses it on
    the wire as well. Contacts a scenario makes up (a Sybil's `WireContact`s) are
    mapped to the node's own contact when they match it, to a new one otherwise."""

    def __init__(self, by_id: dict[bytes, SimNode]) -> None:
        self._by_id = by_id

    def make(self, node_id: bytes, addr: Address) -> NodeContact:
        node = self._by_id.get(node_id)
        if node is not None and node.addr == addr:
            return node.contact
        return SimContact.make(node_id, addr)

    def from_wire(self, contact: WireContact) -> NodeContact:
        if type(contact) is SimContact:  # type: ignore[comparison-overlap]  # reads as one
            return contact
        return self.make(contact.node_id, (contact.host, contact.port))

    def to_wire(self, contact: NodeContact) -> WireContact:
        if type(contact) is SimContact:
            return cast(WireContact, contact)
        return WireContact(contact.node_id, contact.addr[0], contact.addr[1])

    def to_wire_all(self, contacts: list[NodeContact]) -> tuple[WireContact, ...]:
        # Every reply to a find_node comes here: the check runs in C, not a generator.
        if set(map(type, contacts)) <= _SIM_CONTACTS:
            return cast(tuple[WireContact, ...], tuple(contacts))
        return tuple(map(self.to_wire, contacts))


@mypyc_attr(allow_interpreted_subclasses=True)  # the tests' and scenarios' observers
class MessageObserver:
    """Sees every message the overlay moves (hop counting, per-key load)."""

    def sent(self, node: SimNode, message: Message, dst: Address) -> None:
        """`node` sent `message` to `dst`."""

    def delivered(self, node: SimNode, message: Message, src: Address) -> None:
        """`message` from `src` reached `node` (alive)."""


@dataclass
class OverlayStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    """Dropped by the loss model."""
    undeliverable: int = 0
    """Sent to a node that is down (or never existed)."""
    timers: int = 0


@mypyc_attr(allow_interpreted_subclasses=True)  # tests/simulations/test_golden.py's Watched
class Overlay:
    """A population of DHT cores on one engine and one transport model."""

    def __init__(
        self,
        engine: Engine,
        rng: random.Random,
        network: NetworkModel | None = None,
        config: DHTConfig | None = None,
        transport: str = "message",
        identities: str = "sim",
    ) -> None:
        if transport not in ("message", "bytes"):
            raise ValueError(f"transport is 'message' or 'bytes', not {transport!r}")
        self.engine = engine
        self.rng = rng
        self.network = network or NetworkModel()
        self.config = config or DHTConfig()
        self.transport = transport
        self._typed = transport == "message"
        self.identities = identities
        self.nodes: list[SimNode] = []
        self.by_addr: dict[Address, SimNode] = {}
        self.by_id: dict[bytes, SimNode] = {}
        self.stats = OverlayStats()
        self.observers: list[MessageObserver] = []
        self.on_event: EventCallback | None = None
        self._waiters: dict[tuple[int, int], EventCallback] = {}
        self._codec: ContactCodec = (
            SharedContacts(self.by_id) if transport == "message" else ContactCodec()
        )
        self._verify = sim_verify if identities == "sim" else None
        self._latency = self.network.latency_table()
        self._jitter = self.network.jitter_ms / 1000.0
        self._keep = self.network.keep

    @property
    def now(self) -> float:
        """Unix time the cores see."""
        return self.engine.now

    # --- population ----------------------------------------------------------

    def add_node(
        self,
        identity: Any = None,
        region: int | None = None,
        config: DHTConfig | None = None,
        core_factory: Callable[..., DHTCore] = DHTCore,
    ) -> SimNode:
        """Create a node (not yet joined). Its id comes from the seeded generator."""
        rng = self.rng
        if identity is None:
            identity = make_identity(self.identities, rng.randbytes(32))
        if region is None:
            region = self.network.pick_region(rng)
        index = len(self.nodes)
        core_rng = cast(random.Random, SeededOnDemand(rng.getrandbits(64)))
        kwargs: dict[str, Any] = {"contacts": self._codec}
        if self._verify is not None:
            kwargs["verify"] = self._verify
        core = core_factory(identity, core_rng, self.engine.now, config or self.config, **kwargs)
        addr = host_address(index)
        node = SimNode(index, core, addr, region, self.engine.now)
        self.nodes.append(node)
        self.by_addr[addr] = node
        self.by_id[core.node_id] = node
        self._service(node)
        return node

    def kill(self, node: SimNode) -> None:
        """Crash: the node stops answering and its timers stop; its id is not reused."""
        node.alive = False
        node.timer_at = None

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if n.alive]

    # --- operations ------------------------------------------------------------

    def call(self, node: SimNode, op: int, done: EventCallback | None) -> None:
        """Register `done` for the event ending `op` (started on `node.core`), then flush."""
        if done is not None:
            self._waiters[(node.index, op)] = done
        self._service(node)

    def join(self, node: SimNode, seeds: list[SimNode], done: EventCallback | None = None) -> None:
        self.call(node, node.core.bootstrap([s.addr for s in seeds], self.engine.now), done)

    def find_node(self, node: SimNode, target: bytes, done: EventCallback | None = None) -> None:
        self.call(node, node.core.find_node(target, self.engine.now), done)

    def get_records(self, node: SimNode, key: bytes, done: EventCallback | None = None) -> None:
        self.call(node, node.core.get_records(key, self.engine.now), done)

    def touch(self, node: SimNode) -> None:
        """The caller drove `node.core` directly: send what it queued, re-arm its timer."""
        self._service(node)

    # --- the transport ---------------------------------------------------------

    def _service(self, node: SimNode) -> None:
        core = node.core
        now = self.engine.now
        out: list[tuple[Any, Address]]
        out = core.messages_to_send(now) if self._typed else core.datagrams_to_send(now)
        if out:
            self._transmit(node, out, now)
        while (event := core.next_event()) is not None:
            done = self._waiters.pop((node.index, event.op), None)
            if done is not None:
                if event.__class__ is RecordsHeld:  # the put's end comes after it
                    self._waiters[(node.index, event.op)] = done
                done(node, event)
            elif self.on_event is not None:
                self.on_event(node, event)
        timer = core.get_timer()
        if timer != node.timer_at and node.alive:
            node.timer_at = timer
            if timer is not None:
                self.engine.post(timer, self._fire, node)

    def _transmit(self, node: SimNode, out: list[tuple[Any, Address]], now: float) -> None:
        stats = self.stats
        stats.sent += len(out)
        if not node.alive:
            stats.undeliverable += len(out)
            return
        by_addr = self.by_addr
        rng = self.rng
        keep = self._keep
        row = self._latency[node.region]
        jitter = self._jitter
        post = self.engine.post
        deliver = self._deliver
        src = node.addr
        # Observers read typed messages; the datagram path has none to show them.
        observers = self.observers if self._typed else []
        for payload, dst_addr in out:
            if observers:
                for observer in observers:
                    observer.sent(node, payload, dst_addr)
            dst = by_addr.get(dst_addr)
            if dst is None:
                stats.undeliverable += 1
                continue
            if keep < 1.0 and rng.random() >= keep:
                stats.lost += 1
                continue
            post(now + row[dst.region] + rng.random() * jitter, deliver, (dst, src, payload))

    def _deliver(self, item: tuple[SimNode, Address, Any]) -> None:
        node, src, payload = item
        if not node.alive:
            self.stats.undeliverable += 1
            return
        self.stats.delivered += 1
        now = self.engine.now
        if self._typed:
            for observer in self.observers:
                observer.delivered(node, payload, src)
            node.core.receive_message(payload, src, now)
        else:
            node.core.receive(payload, src, now)
        self._service(node)

    def _fire(self, node: SimNode) -> None:
        when = node.timer_at
        if when is None or when > self.engine.now or not node.alive:
            return  # superseded entry: the node re-armed or went down
        node.timer_at = None
        self.stats.timers += 1
        node.core.handle_timer(self.engine.now)
        self._service(node)


__all__ = [
    "EPOCH",
    "MessageObserver",
    "Overlay",
    "OverlayStats",
    "SharedContacts",
    "SimIdentity",
    "SimNode",
    "host_address",
    "make_identity",
    "sim_verify",
]
