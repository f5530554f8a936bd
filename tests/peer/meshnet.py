"""Mesh cores (peer/mesh.py) wired together on a clock that moves only when the test says.

`MeshNet` plays everything around the cores: one signaling service that seats
peers in a room's layers (the first with a seat, the one asked for, a friend's;
moving a seated peer when it asks again) and relays signals within a layer after
a latency, and WebRTC links
that open a few round trips after an offer is answered (or never, when the
test cuts the pair's path). Every run has a round limit, so a core that
spins fails the test instead of hanging it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from peer import mesh

ROOM = bytes(20)


class RoundLimitExceeded(AssertionError):
    pass


@dataclass
class Pair:
    """One WebRTC connection being made: an offerer's link and an answerer's."""

    offerer: bytes
    offer_link: int
    answerer: bytes
    answer_link: int
    closed: bool = False


@dataclass
class MeshNet:
    seed: int = 1
    latency: float = 0.02
    config: mesh.MeshConfig = field(default_factory=mesh.MeshConfig)
    now: float = 1_000.0
    max_rounds: int = 200_000
    layer_size: int | None = None
    """Seats per layer (None: one layer holds everyone)."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.peers: dict[bytes, mesh.Mesh] = {}
        self.seated: dict[bytes, list[bytes]] = {}
        """room -> members the service has seated, in order."""
        self.layer_of: dict[bytes, int] = {}
        """member -> the layer the service seated it in."""
        self.log: dict[bytes, list[object]] = {}
        self.open: dict[tuple[bytes, int], bool] = {}
        """(peer, link id) -> open, for every link a core made and has not closed."""
        self.blocked: set[frozenset[bytes]] = set()
        """Pairs with no path: their links never open (ICE fails)."""
        self.node_up = True
        self.crossing = False
        """Joins read the layer before the other joiners stored their presence."""
        self.ice_expires: float | None = None
        self._offers: dict[tuple[bytes, bytes], int] = {}
        self._pairs: list[Pair] = []
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    # --- building ------------------------------------------------------------------

    def add_peer(self, index: int | None = None) -> bytes:
        key = bytes([index if index is not None else len(self.peers) + 1]) * 32
        core = mesh.Mesh(key, ["ws://node"], self.config, random.Random(key).random, self.now)
        self.peers[key] = core
        self.log[key] = []
        core.start(self.now)
        self.pump(key)
        return key

    def join(
        self, key: bytes, room: bytes = ROOM, layer: int | None = None, friend: bytes | None = None
    ) -> None:
        self.peers[key].join(room, layer, friend)
        self.pump(key)

    def move(
        self, key: bytes, layer: int | None = None, friend: bytes | None = None, room: bytes = ROOM
    ) -> None:
        self.peers[key].move(room, layer, friend)
        self.pump(key)

    def seated_peers(self, count: int, settle: float = 2.0) -> list[bytes]:
        """`count` peers (keys 1, 2, ... in that order) joined one after the other."""
        keys = [self.add_peer(i + 1) for i in range(count)]
        self.run_for(0.5)
        for key in keys:
            self.join(key)
            self.run_for(0.2)
        self.run_for(settle)
        return keys

    # --- the world around the cores ----------------------------------------------------

    def at(self, delay: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, action))

    def pump(self, key: bytes) -> None:
        """Carry out what `key`'s core asks for."""
        core = self.peers.get(key)
        if core is None:
            return
        for command in core.commands():
            self.log[key].append(command)
            self._carry_out(key, command)

    def _carry_out(self, key: bytes, command: object) -> None:
        core = self.peers[key]
        if isinstance(command, mesh.ConnectNode):
            self.at(self.latency, lambda: self._connected(key, command.url))
        elif isinstance(command, mesh.JoinRoom):
            self.at(
                self.latency,
                lambda: self._seat(key, command.room, command.layer, command.friend),
            )
        elif isinstance(command, mesh.RequestIceServers):
            self.at(
                self.latency,
                lambda: self._deliver(key, lambda c: c.ice_servers(self.ice_expires, self.now)),
            )
        elif isinstance(command, mesh.Offer):
            self.open[(key, command.link)] = False
            self._signal(key, command.member, lambda c: self._offer_arrives(c, key, command))
        elif isinstance(command, mesh.Answer):
            self.open[(key, command.link)] = False
            offer_link = self._offers.pop((key, command.member), None)
            if offer_link is None:  # an offer the test made up: its answer leads nowhere
                return
            pair = Pair(command.member, offer_link, key, command.link)
            self._pairs.append(pair)
            self._signal(key, command.member, lambda c: self._answer_arrives(c, pair))
        elif isinstance(command, mesh.SendRelink):
            self._signal(
                key, command.member, lambda c: c.relink_received(command.room, key, self.now)
            )
        elif isinstance(command, mesh.CloseLink):
            self.open.pop((key, command.link), None)
            for pair in self._pairs:
                mine = (pair.offerer, pair.offer_link) == (key, command.link) or (
                    pair.answerer,
                    pair.answer_link,
                ) == (key, command.link)
                if mine and not pair.closed:
                    pair.closed = True
                    self.at(self.latency, lambda p=pair: self._pair_failed(p, key))
        del core  # the core's state is read through self.peers

    def _deliver(self, key: bytes, action: Callable[[mesh.Mesh], None]) -> None:
        core = self.peers.get(key)
        if core is not None:
            action(core)
            self.pump(key)

    def _connected(self, key: bytes, url: str) -> None:
        if self.node_up:
            self._deliver(key, lambda c: c.node_connected(url, [], self.now))
        else:
            self._deliver(key, lambda c: c.node_failed(url, self.now))

    def in_layer(self, layer: int, room: bytes = ROOM) -> list[bytes]:
        """The members the service has seated in `layer`, in order."""
        return [m for m in self.seated.get(room, []) if self.layer_of.get(m) == layer]

    def _seat(self, key: bytes, room: bytes, layer: int | None, friend: bytes | None) -> None:
        """A join, as the node answers it (docs/protocol.md 3.2): a seated peer asking for
        another layer (or a friend's) moves there; a full layer or an unknown friend is
        refused."""
        if not self.node_up or key not in self.peers:
            return
        members = self.seated.setdefault(room, [])
        current = self.layer_of.get(key) if key in members else None
        if friend is not None:
            if friend not in members:
                self._deliver(key, lambda c: c.join_refused(room, False))
                return
            layer = self.layer_of[friend]
        if layer is None:
            layer = current if current is not None else self._first_with_room(room)
        if layer != current and not self._has_seat(room, layer):
            self._deliver(key, lambda c: c.join_refused(room, True))
            return
        if current is not None and current != layer:
            self.leave_room(key, room)
        others = [m for m in self.in_layer(layer, room) if m != key]
        if key not in members:
            members.append(key)
            self.layer_of[key] = layer
            for other in others:
                self._announce(room, key, to=other)
                if self.crossing:  # the joiner's read missed it; the next refresh finds it
                    self._announce(room, other, to=key, delay=0.3)
        listed = [] if self.crossing else others
        seat = layer
        self._deliver(key, lambda c: c.joined(room, seat, listed, self.ice_expires, self.now))

    def _has_seat(self, room: bytes, layer: int) -> bool:
        return self.layer_size is None or len(self.in_layer(layer, room)) < self.layer_size

    def _first_with_room(self, room: bytes) -> int:
        layer = 0
        while not self._has_seat(room, layer):
            layer += 1
        return layer

    def _announce(self, room: bytes, member: bytes, to: bytes, delay: float = 0.0) -> None:
        """The service tells `to` that `member` sits in its layer (peer-joined)."""
        layer = self.layer_of[member]
        self.at(
            self.latency + delay,
            lambda: self._deliver(to, lambda c: c.peer_joined(room, member, self.now, layer)),
        )

    def leave_room(self, key: bytes, room: bytes = ROOM) -> None:
        """The service forgets `key` (it left, its presence lapsed, or it moved); the others
        of its layer hear of it."""
        members = self.seated.get(room, [])
        if key in members:
            layer = self.layer_of.pop(key, None)
            members.remove(key)
            for other in self.in_layer(layer, room) if layer is not None else members:
                self.at(
                    self.latency,
                    lambda o=other: self._deliver(o, lambda c: c.peer_left(room, key, layer)),
                )

    def _signal(self, sender: bytes, to: bytes, action: Callable[[mesh.Mesh], None]) -> None:
        """Signals go within a layer only (the node answers `unknown-peer` otherwise)."""
        apart = {self.layer_of.get(sender), self.layer_of.get(to)}
        if self.node_up and (len(apart) == 1 or None in apart):
            self.at(2 * self.latency, lambda: self._deliver(to, action))

    def _offer_arrives(self, core: mesh.Mesh, sender: bytes, offer: mesh.Offer) -> None:
        self._offers[(core.key, sender)] = offer.link
        core.offer_received(offer.room, sender, self.now)
        self.pump(core.key)  # an Answer takes the offer now
        self._offers.pop((core.key, sender), None)  # not taken: refused or ignored (glare)

    def _answer_arrives(self, core: mesh.Mesh, pair: Pair) -> None:
        if pair.closed or (pair.offerer, pair.offer_link) not in self.open:
            return
        core.answered(ROOM, pair.answerer, pair.offer_link)
        if frozenset((pair.offerer, pair.answerer)) in self.blocked:
            return  # ICE never finds a path; the connect deadline will tell
        self.at(3 * self.latency, lambda: self._pair_opens(pair))

    def _pair_opens(self, pair: Pair) -> None:
        ends = ((pair.offerer, pair.offer_link), (pair.answerer, pair.answer_link))
        if pair.closed or not all(end in self.open for end in ends):
            return
        for key, link in ends:
            self.open[(key, link)] = True
            other = pair.answerer if key == pair.offerer else pair.offerer
            self._deliver(
                key, lambda c, o=other, lk=link: c.link_open(ROOM, o, lk, False, self.now)
            )

    def _pair_failed(self, pair: Pair, closer: bytes) -> None:
        for key, link, other in (
            (pair.offerer, pair.offer_link, pair.answerer),
            (pair.answerer, pair.answer_link, pair.offerer),
        ):
            if key != closer and (key, link) in self.open:
                self._deliver(
                    key, lambda c, o=other, lk=link: c.link_failed(ROOM, o, lk, False, self.now)
                )

    def cut(self, a: bytes, b: bytes) -> None:
        """Break the open pair between `a` and `b` (a NAT rebinding, a dead Wi-Fi)."""
        for pair in self._pairs:
            if {pair.offerer, pair.answerer} == {a, b} and not pair.closed:
                pair.closed = True
                self._pair_failed(pair, b"")

    # --- running -----------------------------------------------------------------------

    def step(self) -> bool:
        """Run the next event or timer; False when nothing is left."""
        timers = [(t, k) for k, c in self.peers.items() if (t := c.get_timer()) is not None]
        next_timer = min(timers, default=None)
        next_event = self._queue[0][0] if self._queue else None
        if next_timer is None and next_event is None:
            return False
        if next_event is not None and (next_timer is None or next_event <= next_timer[0]):
            when, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            action()
            return True
        assert next_timer is not None
        when, key = next_timer
        self.now = max(self.now, when)
        self.peers[key].handle_timer(self.now)
        self.pump(key)
        after = self.peers[key].get_timer()
        assert after is None or after > self.now, f"timer not moved on: {after} <= {self.now}"
        return True

    def run_for(self, seconds: float) -> None:
        until = self.now + seconds
        for _ in range(self.max_rounds):
            timers = [t for c in self.peers.values() if (t := c.get_timer()) is not None]
            upcoming = min([*timers, *(e[0] for e in self._queue[:1])], default=None)
            if upcoming is None or upcoming > until:
                self.now = until
                return
            self.step()
        raise RoundLimitExceeded(f"more than {self.max_rounds} rounds in {seconds} s")

    # --- reading -----------------------------------------------------------------------

    def open_links(self, a: bytes, b: bytes) -> int:
        """How many open links `a` holds to `b` (as the world sees it)."""
        core = self.peers[a]
        entry = core.rooms[ROOM].members.get(b) if ROOM in core.rooms else None
        if entry is None or entry.link is None or not entry.link.open:
            return 0
        return 1

    def connected(self, a: bytes, b: bytes) -> bool:
        """`a` and `b` hold the two ends of one open connection."""
        ca, cb = self.peers[a], self.peers[b]
        ea = ca.rooms[ROOM].members.get(b)
        eb = cb.rooms[ROOM].members.get(a)
        if ea is None or eb is None or ea.link is None or eb.link is None:
            return False
        if not (ea.link.open and eb.link.open):
            return False
        return any(
            not p.closed
            and {(p.offerer, p.offer_link), (p.answerer, p.answer_link)}
            == {(a, ea.link.id), (b, eb.link.id)}
            for p in self._pairs
        )

    def commands_of(self, key: bytes, kind: type) -> list[object]:
        return [c for c in self.log[key] if isinstance(c, kind)]
