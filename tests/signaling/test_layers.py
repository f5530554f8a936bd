"""The room core (signaling/layers.py) at several nodes over the in-memory DHT.

Each node is a real `RoomCore` beside a real `DHTCore`, its commands carried out
by `simulations.roomnet.RoomNet` as signaling/node.py carries them out; clients
sign what their node asks; node links and the DHT run on the simulator's
virtual clock. No sockets, no sleeps: every run ends at a simulated time and
under an event budget.

The crowd (many joins into one page, people leaving at random) runs 2,000 joins
by default; `PAGEMESH_LONG_TESTS=1` runs the 10,000-join crowd as well (several
minutes: the suite has no `slow` marker to put it behind).
"""

from __future__ import annotations

import os
import random
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

import pytest

from dht.core import DHTConfig
from dht.ids import node_id_for
from dht.records import Record
from signaling.layers import SOURCE_SEATS_FACTOR, RoomConfig
from signaling.protocol import ErrorFrame, HomeNode, PeerJoined, PeerLeft
from signaling.rooms import layer_key, room_key, seat_list_value
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.overlay import EPOCH, Overlay, make_identity
from simulations.roomnet import (
    JoinRecord,
    RoomNet,
    RoomNode,
    VirtualClient,
    layer_fill,
    warm_overlay,
)

ROOM = room_key("https://example.org/a-hot-page")
LONG = os.environ.get("PAGEMESH_LONG_TESTS") == "1"
ONE_REGION = NetworkModel(
    regions=("lab",), latency_ms=((20.0,),), region_weights=(1.0,), jitter_ms=0.0
)
"""20 ms one way between any two hosts: timings a test can reason about."""


def mesh(
    nodes: int = 6,
    seed: int = 1,
    config: RoomConfig | None = None,
    network: NetworkModel | None = None,
    keep_frames: bool = True,
) -> tuple[RoomNet, list[RoomNode]]:
    """`nodes` signaling nodes, their DHT warm-started (routing tables already full)."""
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(seed), network or NetworkModel(), DHTConfig())
    sims = warm_overlay(overlay, nodes, random.Random(seed + 1))
    net = RoomNet(overlay, random.Random(seed + 2), config, keep_frames=keep_frames)
    return net, [net.add_node(sim) for sim in sims]


def settle(net: RoomNet, records: list[JoinRecord], limit: float = 60.0) -> None:
    """Run until every join in `records` is answered (at most `limit` simulated seconds)."""
    end = net.now + limit
    while any(r.answered_at is None for r in records):
        assert net.now < end, "joins still unanswered"
        net.run(0.25, max_events=2_000_000)


def join_one(
    net: RoomNet,
    client: VirtualClient,
    layer: int | None = None,
    friend: bytes | None = None,
) -> JoinRecord:
    if not client.connected:
        net.connect(client)
    record = net.join(client, ROOM, layer, friend)
    settle(net, [record])
    return record


def fill_room(net: RoomNet, homes: list[RoomNode], people: int) -> list[VirtualClient]:
    """Seat `people`, one after the other, at homes taken in turn."""
    clients = []
    for i in range(people):
        client = net.add_client(homes[i % len(homes)])
        assert join_one(net, client).layer is not None
        clients.append(client)
    return clients


# --- (a) a crowd: many joins into one page, people leaving at random ----------------------


@dataclass
class Crowd:
    joins: int
    records: list[JoinRecord]
    largest_at_checkpoints: list[int] = field(default_factory=list)
    fill_at_checkpoints: list[float] = field(default_factory=list)
    final: dict[int, int] = field(default_factory=dict)
    layer_size: int = 24

    @property
    def answered(self) -> list[JoinRecord]:
        return [r for r in self.records if r.answered_at is not None]

    def errors(self, skip: int = 300) -> list[float]:
        """|announced total - people seated| / people seated, per join after the first `skip`."""
        seated = sorted(
            (r for r in self.answered if r.layer is not None), key=lambda r: r.answered_at or 0.0
        )
        return [abs((r.total or 0) - (r.truth or 1)) / (r.truth or 1) for r in seated[skip:]]


@cache
def crowd(joins: int, rate: float = 5.0, seed: int = 7, nodes: int = 8) -> Crowd:
    """`joins` people arrive at `rate` per second (Poisson) at random homes among `nodes`
    and join one page; half of them close the page after an exponential stay (mean
    120 s). The largest layer and the fill are taken every 10 s."""
    net, homes = mesh(nodes, seed, keep_frames=False)
    rng = random.Random(seed)
    result = Crowd(joins, net.joins, layer_size=net.config.layer_size)

    def arrive(_: object) -> None:
        client = net.add_client(homes[rng.randrange(len(homes))])
        net.connect(client)
        net.join(client, ROOM)
        if rng.random() < 0.5:
            net.engine.schedule(net.now + rng.expovariate(1 / 120), net.disconnect, client)

    def checkpoint(_: object) -> None:
        counts = net.layer_counts(ROOM)
        result.largest_at_checkpoints.append(max(counts.values(), default=0))
        fill = layer_fill(counts, result.layer_size)
        if fill is not None and len(counts) > 3:
            result.fill_at_checkpoints.append(fill)

    t = 1.0
    for _ in range(joins):
        t += rng.expovariate(rate)
        net.engine.schedule(EPOCH + t, arrive)
    for i in range(int(t / 10) + 4):
        net.engine.schedule(EPOCH + 10.0 * i, checkpoint)
    net.run(t + 35.0, max_events=5_000 * joins)
    result.final = net.layer_counts(ROOM)
    return result


CROWDS = [pytest.param(2_000, id="2000-joins")] + (
    [pytest.param(10_000, id="10000-joins")]
    if LONG
    else [pytest.param(10_000, id="10000-joins", marks=pytest.mark.skip("PAGEMESH_LONG_TESTS=1"))]
)


@pytest.mark.parametrize("joins", CROWDS)
def test_a_crowd_is_seated_nobody_refused(joins: int) -> None:
    result = crowd(joins)
    refused = Counter(r.refused for r in result.records if r.refused is not None)
    assert refused == Counter()
    # Everyone still there when answered got an answer (the others closed the page first).
    assert len(result.answered) >= 0.97 * joins


@pytest.mark.parametrize("joins", CROWDS)
def test_a_crowd_fills_its_layers(joins: int) -> None:
    """Layers below the last are at least 80% full, at the end and all along."""
    result = crowd(joins)
    assert (layer_fill(result.final, result.layer_size) or 0.0) >= 0.8
    assert statistics.mean(result.fill_at_checkpoints) >= 0.8


@pytest.mark.parametrize("joins", CROWDS)
def test_a_crowd_hears_the_room_size_within_ten_percent(joins: int) -> None:
    """The `total` in each `joined` (after the first 300) against the people seated at that
    moment: at least 95% within 10%, and the median error under 5%."""
    errors = crowd(joins).errors()
    within = sum(e <= 0.10 for e in errors) / len(errors)
    assert within >= 0.95
    assert statistics.median(errors) < 0.05


LONG_OVERFULL = pytest.mark.xfail(
    strict=True,
    reason="measured with signaling/layers.py at 4773923: in the 10,000-join crowd a layer "
    "holds more than 24 at 87 of 203 checkpoints (at most 29), none in the first 4,000 "
    "joins; the cause is not isolated (docs/simulation.md, Findings, rooms)",
)
OVERFULL_CROWDS = [
    CROWDS[0],
    pytest.param(10_000, id="10000-joins", marks=LONG_OVERFULL) if LONG else CROWDS[1],
]


@pytest.mark.parametrize("joins", OVERFULL_CROWDS)
def test_a_crowd_never_sits_more_than_a_layer_holds(joins: int) -> None:
    """Seats of answered joins, counted at the nodes every 10 s and at the end."""
    result = crowd(joins)
    assert max(result.final.values()) <= result.layer_size
    assert max(result.largest_at_checkpoints) <= result.layer_size


def test_two_joins_at_one_node_and_one_at_another_do_not_overfill_a_layer() -> None:
    """Layers of 4, two seated. At t=101 two clients of node Y ask for a seat, 10 ms later
    one of node X; all three are offered layer 0 and sign within a few milliseconds. Y
    stores one seat list per layer at a time, so its second client becomes visible only
    after X's client has stored, checked (4 in the layer) and stayed. Y's check then
    reads 5: one of Y's two must move on, though both signed before X's client."""
    net, (x, y, z, _) = mesh(4, seed=1, config=RoomConfig(layer_size=4), network=ONE_REGION)
    fill_room(net, [z], 2)
    net.run(100.0 - net.t)
    first, second, other = net.add_client(y), net.add_client(y), net.add_client(x)
    for client in (first, second, other):
        client.delay = 0.005
        net.connect(client)
    net.engine.run(until=EPOCH + 101.0)
    records = [net.join(first, ROOM), net.join(second, ROOM)]
    net.engine.run(until=EPOCH + 101.01)
    records.append(net.join(other, ROOM))
    settle(net, records)
    assert all(r.layer is not None for r in records)
    assert net.layer_counts(ROOM)[0] <= 4


# --- (b) a layer asked for, (c) a friend's layer -------------------------------------------


def test_a_layer_asked_for_is_honoured_when_it_has_a_seat() -> None:
    net, homes = mesh(5, seed=2, config=RoomConfig(layer_size=4))
    fill_room(net, homes, 10)  # layers 0 and 1 full, 2 in layer 2
    assert net.layer_counts(ROOM) == {0: 4, 1: 4, 2: 2}
    asks = net.add_client(homes[3])
    assert join_one(net, asks, layer=2).layer == 2
    assert join_one(net, net.add_client(homes[4]), layer=7).layer == 7  # empty: a seat


def test_a_full_layer_asked_for_is_refused_layer_full() -> None:
    net, homes = mesh(5, seed=3, config=RoomConfig(layer_size=4))
    fill_room(net, homes, 10)
    client = net.add_client(homes[2])
    record = join_one(net, client, layer=0)
    assert record.layer is None and record.refused == "layer-full"
    (refusal,) = client.received(ErrorFrame)
    assert refusal.code == "layer-full" and refusal.id == record.request
    assert net.layer_counts(ROOM)[0] == 4


def test_joining_beside_a_friend_seats_the_client_in_the_friends_layer() -> None:
    """Layers 0 and 1 full, two in layer 2; one of layer 1 leaves. A newcomer asking for
    no layer would sit in layer 2 (the least full offered); beside a friend of layer 1,
    it sits in layer 1, at another node than the friend's."""
    net, homes = mesh(6, seed=4, config=RoomConfig(layer_size=4))
    people = fill_room(net, homes, 10)
    in_one = [c for c in people if c.layers[ROOM] == 1]
    friend, leaver = in_one[0], in_one[1]
    net.leave(leaver, ROOM)
    net.run(3.0)
    assert net.layer_counts(ROOM) == {0: 4, 1: 3, 2: 2}
    newcomer = net.add_client(next(h for h in homes if h is not friend.node))
    record = join_one(net, newcomer, friend=friend.key)
    assert record.layer == 1
    net.run(2.0)
    assert any(f.key == newcomer.key for f in friend.received(PeerJoined))
    # Nobody in another layer is told.
    elsewhere = [c for c in people if c.layers[ROOM] != 1]
    assert not any(f.key == newcomer.key for c in elsewhere for f in c.received(PeerJoined))
    stranger = join_one(net, net.add_client(homes[0]))
    assert stranger.layer == 2


def test_a_friends_full_layer_is_refused_layer_full() -> None:
    net, homes = mesh(6, seed=4, config=RoomConfig(layer_size=4))
    people = fill_room(net, homes, 10)
    friend = next(c for c in people if c.layers[ROOM] == 1)
    record = join_one(net, net.add_client(homes[0]), friend=friend.key)
    assert record.layer is None and record.refused == "layer-full"


def test_a_friend_who_is_not_in_the_room_is_an_unknown_peer() -> None:
    net, homes = mesh(4, seed=5, config=RoomConfig(layer_size=4))
    fill_room(net, homes, 3)
    record = join_one(net, net.add_client(homes[1]), friend=bytes(32))
    assert record.layer is None and record.refused == "unknown-peer"


# --- (d) a node that goes away ---------------------------------------------------------------


@dataclass
class Departure:
    config: RoomConfig
    forgotten: dict[int, float]
    """Surviving node -> seconds from the death to its view without the dead node's clients."""
    told: bool
    """Every surviving client in the layer was pushed `peer-left` for each of them."""
    survivors_kept: bool


@cache
def departure() -> Departure:
    """Five nodes, fifteen people in layer 0 (three per node); node X dies without a word
    30 s after the last join. Each other node is watched, second by second."""
    config = RoomConfig(layer_size=24)
    net, homes = mesh(5, seed=6, config=config)
    people = fill_room(net, homes, 15)
    dead = homes[0]
    gone = {c.key for c in people if c.node is dead}
    stay = [c for c in people if c.node is not dead]
    net.run(30.0)
    for node in homes[1:]:
        assert gone <= set(node.core.views[(ROOM, 0)].members)
    died = net.now
    net.kill(dead)
    forgotten: dict[int, float] = {}
    while len(forgotten) < len(homes) - 1 and net.now < died + 3 * config.presence_ttl:
        net.run(1.0)
        for node in homes[1:]:
            members = set(node.core.views[(ROOM, 0)].members)
            if node.sim.index not in forgotten and not gone & members:
                forgotten[node.sim.index] = net.now - died
    told = all(gone <= {f.key for f in c.received(PeerLeft)} for c in stay)
    kept = all(
        {c.key for c in stay} <= set(node.core.views[(ROOM, 0)].members) for node in homes[1:]
    )
    return Departure(config, forgotten, told, kept)


def test_a_dead_nodes_clients_leave_the_other_nodes_views_within_one_ttl() -> None:
    """The dead node's seat lists lapse one presence TTL after its last renewal, and each
    other node drops its clients then (a timer at the earliest expiry among its views'
    remote members), pushing `peer-left` to its own clients in the layer. (Measured:
    50 s after the death at every node, TTL 60 s, refresh 20 s.)"""
    result = departure()
    assert len(result.forgotten) == 4
    assert max(result.forgotten.values()) <= result.config.presence_ttl
    assert result.told
    assert result.survivors_kept


# --- (e) a stranger's seat lists -------------------------------------------------------------


def stranger_seat_lists(
    net: RoomNet, layers: Iterable[int], dht: tuple[str, int], now: float, members: int = 20
) -> tuple[list[Record], set[bytes]]:
    """Seat lists under throwaway keys that name a node id nobody runs, `members` made-up
    members each, claiming a room of 500 layers and 12,000 people."""
    rng = random.Random(99)
    records: list[Record] = []
    fake: set[bytes] = set()
    for layer in layers:
        key = make_identity(net.overlay.identities, rng.randbytes(32))
        home = HomeNode(node_id_for(key.public_key), f"ws://{dht[0]}:8443")
        seats = [(rng.randbytes(32), int(now) - 5) for _ in range(members)]
        fake.update(peer for peer, _ in seats)
        value = seat_list_value(ROOM, layer, home, dht, seats, 500, 12_000)
        records.append(Record.create(key, layer_key(ROOM, layer), value, 1, int(now + 600)))
    return records, fake


def plant_stranger_seat_lists(
    net: RoomNet,
    homes: list[RoomNode],
    layers: Iterable[int],
    dht: tuple[str, int] = ("203.0.113.9", 4000),
    members: int = 20,
) -> tuple[list[int], set[bytes]]:
    """The stranger's own DHT node (a reader and writer like any) stores
    stranger_seat_lists(...) straight into the DHT: how many holders took each, and the
    made-up members."""
    entry = net.overlay.add_node()
    net.overlay.join(entry, [homes[0].sim])
    net.run(5.0)
    records, fake = stranger_seat_lists(net, layers, dht, net.now, members)
    stored: list[int] = []
    for record in records:
        op = entry.core.put_record(record, net.now)
        net.overlay.call(entry, op, lambda _n, event: stored.append(getattr(event, "stored", 0)))
    net.run(5.0)
    return stored, fake


@pytest.mark.parametrize("where", ["nowhere", "a-real-node"])
def test_a_strangers_seat_lists_seat_nobody(where: str) -> None:
    """A stranger stores seat lists straight into the DHT (through any DHT node: records
    are valid, signed by their throwaway keys) for layers 0..5, naming a home whose DHT
    address is nobody's, or a real node's (which proves another id). Honest joins that
    follow sit in the first layers as if the lists were not there, and nobody is told
    of their members."""
    net, homes = mesh(6, seed=8, config=RoomConfig(layer_size=8))
    dht = ("203.0.113.9", 4000) if where == "nowhere" else homes[1].sim.addr
    stored, fake = plant_stranger_seat_lists(net, homes, range(6), dht)
    assert len(stored) == 6 and min(stored) > 0
    people = fill_room(net, homes, 20)
    assert net.layer_counts(ROOM) == {0: 8, 1: 8, 2: 4}
    records_ = [r for r in net.joins if r.layer is not None]
    assert max(r.total or 0 for r in records_) <= 20
    net.run(45.0)  # refreshes re-read every layer
    for client in people:
        heard = {m.key for f in client.received(PeerJoined) for m in [f.member]}
        assert not heard & fake
    for node in homes:
        for view in node.core.views.values():
            assert not set(view.members) & fake
        assert node.core.estimates[ROOM].layers <= 4
    assert sum(node.core.counters["home.unproven"] for node in homes) > 0


# --- (f) per-source limits ------------------------------------------------------------------


def joined_at_once(
    net: RoomNet, node: RoomNode, source: str, rooms: list[bytes], other: str
) -> tuple[list[JoinRecord], JoinRecord]:
    """A key from `source` for each of `rooms` joins it through `node` at once, and then a
    key from address `other` joins the first of them: their join records, then its."""
    crowd_ = [net.add_client(node, source=source) for _ in rooms]
    for client in crowd_:
        net.connect(client)
    net.run(1.0)
    records = [net.join(client, room) for client, room in zip(crowd_, rooms, strict=True)]
    honest_client = net.add_client(node, source=other)
    net.connect(honest_client)
    honest = net.join(honest_client, rooms[0])
    settle(net, [*records, honest])
    return records, honest


def test_one_source_is_held_to_its_join_rate_while_another_joins() -> None:
    """Fifty keys from one address ask node X for a seat at once: twelve joins a minute
    (bursts of twelve) go through, the rest are refused `rate-limited`; a client from
    another address joins meanwhile."""
    config = RoomConfig(layer_size=24, joins_per_minute=12.0)
    net, homes = mesh(4, seed=9, config=config)
    x = homes[0]
    records, honest = joined_at_once(net, x, "203.0.113.7", [ROOM] * 50, "198.51.100.1")
    assert honest.layer is not None
    assert sum(r.layer is not None for r in records) == 12
    assert Counter(r.refused for r in records if r.layer is None) == {"rate-limited": 38}
    assert x.core.counters["join.refused.rate"] == 38


def test_one_source_is_held_to_a_join_rate_across_rooms() -> None:
    """The per-room join rate does not hold an address that asks for a fresh room each
    time: forty keys from one address each join a room of their own at once (every join
    reads layers and stores a seat list in the DHT). Past ten times `joins_per_minute`
    joins of one address through this node, in any rooms, they are refused
    `rate-limited`; another address joins meanwhile."""
    config = RoomConfig(layer_size=24, joins_per_minute=2.0)
    net, homes = mesh(4, seed=11, config=config)
    x = homes[0]
    rooms = [room_key(f"https://example.org/fresh-{i}") for i in range(40)]
    records, honest = joined_at_once(net, x, "203.0.113.8", rooms, "198.51.100.2")
    assert honest.layer is not None
    assert sum(r.layer is not None for r in records) == 20
    assert Counter(r.refused for r in records if r.layer is None) == {"rate-limited": 20}
    assert x.core.counters["join.refused.source_rate"] == 20


def test_one_source_holds_at_most_its_seats_in_all_rooms_at_one_node() -> None:
    """Sixteen seats per room do not hold an address that sits in a fresh room each time:
    every seat costs the node a signature and a seat-list store per refresh, in every
    room. Past `SOURCE_SEATS_FACTOR` times `seats_per_source` seats of one address at this
    node, in any rooms, joins are refused `rate-limited`; another address still sits."""
    config = RoomConfig(layer_size=24, seats_per_source=2, joins_per_minute=600.0)
    net, homes = mesh(4, seed=12, config=config)
    x = homes[0]
    limit = SOURCE_SEATS_FACTOR * config.seats_per_source
    records = []
    for i in range(limit + 4):
        room = room_key(f"https://example.org/room-{i}")
        client = net.add_client(x, source="203.0.113.9")
        net.connect(client)
        record = net.join(client, room)
        settle(net, [record])
        records.append(record)
    assert sum(r.layer is not None for r in records) == limit
    assert Counter(r.refused for r in records if r.layer is None) == {"rate-limited": 4}
    assert x.core.counters["join.refused.source_seats"] == 4
    assert join_one(net, net.add_client(x, source="198.51.100.3")).layer is not None


def test_one_source_holds_at_most_its_seats_per_room_at_one_node() -> None:
    """One address joining slowly (within the join rate) is cut at `seats_per_source`
    seats in the room at that node; another address still joins there, and the same
    address still joins through another node."""
    config = RoomConfig(layer_size=24, seats_per_source=16, joins_per_minute=12.0)
    net, homes = mesh(4, seed=10, config=config)
    x, y = homes[0], homes[1]
    records = []
    for _ in range(20):
        records.append(join_one(net, net.add_client(x, source="203.0.113.7")))
        net.run(5.0)  # 12 a minute
    assert sum(r.layer is not None for r in records) == 16
    assert Counter(r.refused for r in records if r.layer is None) == {"rate-limited": 4}
    assert x.core.counters["join.refused.seats"] == 4
    assert join_one(net, net.add_client(x, source="198.51.100.1")).layer is not None
    assert join_one(net, net.add_client(y, source="203.0.113.7")).layer is not None
