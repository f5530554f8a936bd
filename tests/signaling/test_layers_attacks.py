"""A stranger's and a rogue holder's attacks on 2.5.6 and 2.5.7 (docs/protocol.md) on
virtual time."""

from __future__ import annotations

import random
from dataclasses import replace

from dht.core import DHTConfig, DHTCore
from dht.ids import node_id_for
from dht.records import Record, Refusal
from signaling.layers import RoomConfig
from signaling.protocol import Joined, PeerJoined
from signaling.rooms import HomeNode, layer_key, seat_list_value
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.overlay import EPOCH, Overlay, make_identity
from simulations.roomnet import RoomNet, RoomNode, warm_overlay
from tests.signaling.test_layers import ROOM, fill_room, join_one, settle
from tests.signaling.test_layers_pipelined import forget_homes
from tests.signaling.test_layers_store_reads import mesh


def plant_one_key_two_addresses(
    net: RoomNet,
    homes: list[RoomNode],
    layers: dict[int, tuple[str, int]],
    members: int = 2,
    seed: int = 5,
) -> set[bytes]:
    """One throwaway key stores a seat list in each of `layers`, each naming another DHT
    address for the same home (its own node id): modest hints (two layers, a few people)."""
    rng = random.Random(seed)
    key = make_identity(net.overlay.identities, rng.randbytes(32))
    home = HomeNode(node_id_for(key.public_key), "ws://203.0.113.9:8443")
    fake: set[bytes] = set()
    entry = net.overlay.add_node()
    net.overlay.join(entry, [homes[0].sim])
    net.run(5.0)
    for layer, dht in layers.items():
        seats = [(rng.randbytes(32), int(net.now) - 5) for _ in range(members)]
        fake.update(p for p, _ in seats)
        value = seat_list_value(ROOM, layer, home, dht, seats, 2, 4)
        record = Record.create(key, layer_key(ROOM, layer), value, 1, int(net.now + 600))
        net.overlay.call(entry, entry.core.put_record(record, net.now), None)
    net.run(5.0)
    return fake


def test_one_key_naming_two_addresses_leaves_no_join_unanswered() -> None:
    """A cold node reads layers 0 and 1 at once; both hold a list of one stranger's key,
    each naming another address for its home. The second read's home check must not
    make the first one's wait for ever."""
    for majority in (True, False):
        net, homes = mesh(6, seed=61, config=RoomConfig(layer_size=8), majority=majority)
        fake = plant_one_key_two_addresses(
            net, homes, {0: ("203.0.113.9", 4000), 1: ("203.0.113.10", 4000)}
        )
        clients = []
        records = []
        for i in range(4):
            client = net.add_client(homes[i % len(homes)])
            net.connect(client)
            clients.append(client)
            records.append(net.join(client, ROOM))
        settle(net, records)
        assert all(r.layer is not None for r in records)
        for client in clients:
            told = {m.key for f in client.received(Joined) for m in f.members}
            assert not (told | {f.key for f in client.received(PeerJoined)}) & fake


def test_homes_forgotten_while_being_proven_leave_no_join_unanswered() -> None:
    """More homes to prove than a node keeps (`max_homes`, 2 here): a stranger's lists
    under many throwaway keys in the layers joins read push out homes whose checks are
    under way; what waited on them goes on without them (unproven), never waits for
    ever."""
    for majority in (True, False):
        net, homes = mesh(6, seed=62, config=RoomConfig(layer_size=8), majority=majority)
        for node in homes:
            node.core.config = replace(node.core.config, max_homes=2)
        fake: set[bytes] = set()
        for i, layer in enumerate((0, 1, 0, 1, 2)):
            fake |= plant_one_key_two_addresses(
                net, homes, {layer: (f"203.0.113.{10 + i}", 4000)}, members=1, seed=i
            )
        people = fill_room(net, homes, 12)
        for client in people:
            told = {m.key for f in client.received(Joined) for m in f.members}
            assert not (told | {f.key for f in client.received(PeerJoined)}) & fake


# --- rogue holders: a majority of a layer key's holders, first to answer -----------------

ROGUE_HIDES: set[bytes] = set()
"""Publishers whose records the `Withholding` holders take and never show."""


class Withholding(DHTCore):
    """A rogue holder: takes every store (answers status 0) and keeps nothing of the
    publishers in `ROGUE_HIDES`, so neither reads nor store-reads show them."""

    def _store_record(self, record: Record, now: float, source: str | None = None) -> int:
        if record.publisher in ROGUE_HIDES:
            return int(Refusal.STORED)
        return super()._store_record(record, now, source)


SPREAD = NetworkModel(
    regions=("a", "b", "c", "rogue"),
    latency_ms=(
        (5.0, 150.0, 150.0, 5.0),
        (150.0, 5.0, 150.0, 5.0),
        (150.0, 150.0, 5.0, 5.0),
        (5.0, 5.0, 5.0, 5.0),
    ),
    region_weights=(1.0, 1.0, 1.0, 1.0),
    jitter_ms=0.0,
)
"""Three honest homes far from each other; rogue holders near all of them, so theirs
are the first answers any of them gets."""


def rogue_net(majority: bool, rogues: int) -> tuple[RoomNet, list[RoomNode]]:
    overlay = Overlay(Engine(EPOCH), random.Random(71), SPREAD, DHTConfig().with_fast_paths())
    sims = warm_overlay(overlay, 3 + rogues, random.Random(72))
    for i, sim in enumerate(sims):
        sim.region = i if i < 3 else 3
    config = replace(RoomConfig(layer_size=4).with_fast_paths(), seat_at_majority=majority)
    net = RoomNet(overlay, random.Random(73), config)
    nodes = [net.add_node(sim) for sim in sims]
    for node in nodes[3:]:
        node.sim.core.__class__ = Withholding
    return net, nodes


def excess(net: RoomNet) -> int:
    return sum(max(0, count - 4) for count in net.layer_counts(ROOM).values())


def test_rogue_holders_first_to_answer_overfill_a_layer_once_at_most() -> None:
    """Five rogue holders of eight, first to answer every honest home, hide the honest
    homes' seat lists: placement and the majority of each seat store's replies see only
    the newcomer's own home's members. With 2.5.5 alone the check waits for the three
    honest holders and no layer ends over `layer_size`. Seated at a majority (2.5.6),
    joins racing at three homes all sit, and the layer is overfilled (the rest of the
    replies tell it: `join.late_overfull`); a node that saw that waits for every holder
    in that room for a while, so later waves of joins add nothing to the overfill."""
    for majority in (False, True):
        net, nodes = rogue_net(majority, rogues=5)
        homes = nodes[:3]
        ROGUE_HIDES.clear()
        ROGUE_HIDES.update(bytes(n.core.identity.public_key) for n in homes)
        try:
            waves = []
            for _ in range(3):
                records = []
                for i in range(12):
                    client = net.add_client(homes[i % 3])
                    net.connect(client)
                    records.append(net.join(client, ROOM))
                settle(net, records)
                net.run(45.0)  # two periodic reads of the overfilled layer
                waves.append(excess(net))
            late = sum(n.core.counters["join.late_overfull"] for n in homes)
            if not majority:
                assert waves == [0, 0, 0] and late == 0
            else:
                assert waves[0] > 0 and late > 0  # the race that sat them all
                assert waves[2] == waves[1] == waves[0], waves
        finally:
            ROGUE_HIDES.clear()


# --- a client that goes while a hopeful seat is pending --------------------------------


def hopeful_cold_node(seed: int, fakes: int) -> tuple[RoomNet, list[RoomNode], RoomNode]:
    """test_layers_hopeful's room (layers of four, 14 people, a stranger's list in layer 3
    naming `fakes` made-up members) and a node that never saw it."""
    from tests.signaling.test_layers_hopeful import cold_room

    net, homes, node, _, _ = cold_room(True, fakes, seed)
    return net, homes, node


def assert_nothing_left(node: RoomNode, key: bytes, connected: bool = False) -> None:
    core = node.core
    state = core.clients.get(key)
    if connected:
        assert state is not None and not state.seats and not state.listed
        assert not state.reserved and not state.offering and not state.joining
    else:
        assert state is None
    assert not [w for w in core._signs if w[0] == key]
    for where, view in core.views.items():
        assert key not in view.local and key not in view.members and key not in view.unstored
        assert key not in view.since, where
        assert view.local, where  # a view with no client of this node is dropped
        assert not view.waiting and not view.early and not view.publishing
    assert not core._helds and not core._publishes and not core._read_backs
    assert not core._reads


def test_a_client_that_goes_mid_hopeful_join_leaves_nothing_behind() -> None:
    """The newcomer disconnects (or never signs) at points along a hopeful join that the
    stranger's list makes wrong (placed in layer 4, moved to 3): nothing of it stays in
    the node (views, signs pending, stores' callbacks), its seat list is emptied, and a
    later join there is seated where the proven lists say."""
    for wait in (None, 0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0):
        net, _homes, node = hopeful_cold_node(24, fakes=3)
        newcomer = net.add_client(node)
        if wait is None:
            newcomer.answers = False
        net.connect(newcomer)
        record = net.join(newcomer, ROOM)
        if wait is not None:
            net.run(wait)
            net.disconnect(newcomer)
        net.run(90.0)
        if wait is None:
            assert record.answered_at is not None and record.layer is None
        assert_nothing_left(node, newcomer.key, connected=wait is None)
        assert newcomer.key not in {p for view in node.core.views.values() for p in view.members}
        later = net.add_client(node)
        assert join_one(net, later).layer == 3, wait
        assert max(net.layer_counts(ROOM).values()) <= 4


# --- a stranger's modest lists in every layer of a hot page ----------------------------


def plant_modest_everywhere(
    net: RoomNet, homes: list[RoomNode], layers: range, members: int, hint: int
) -> set[bytes]:
    """A list in each of `layers`, each under its own throwaway key and home nobody runs,
    naming `members` made-up members and hinting at `hint` layers (the room's size)."""
    rng = random.Random(123)
    fake: set[bytes] = set()
    entry = net.overlay.add_node()
    net.overlay.join(entry, [homes[0].sim])
    net.run(5.0)
    for layer in layers:
        key = make_identity(net.overlay.identities, rng.randbytes(32))
        home = HomeNode(node_id_for(key.public_key), "ws://203.0.113.9:8443")
        seats = [(rng.randbytes(32), int(net.now) - 5) for _ in range(members)]
        fake.update(p for p, _ in seats)
        value = seat_list_value(ROOM, layer, home, ("203.0.113.9", 4000 + layer), seats, hint, 0)
        record = Record.create(key, layer_key(ROOM, layer), value, 1, int(net.now + 600))
        net.overlay.call(entry, entry.core.put_record(record, net.now), None)
    net.run(5.0)
    return fake


def test_a_strangers_modest_lists_in_every_layer_cost_a_bounded_detour() -> None:
    """Lists that make every layer (and the next two) look full if their homes prove
    themselves: a cold node's hopeful placement goes past the last layer and is moved
    back once the homes fail. Joins at cold nodes, one after the other and racing: every
    one is answered, none sits in a full layer, nobody hears of a made-up member, and no
    join is moved more than once per placement round."""
    from tests.signaling.test_layers_pipelined import mesh as pipelined_mesh

    net, homes = pipelined_mesh(12, seed=91, config=RoomConfig(layer_size=4))
    for node in homes:
        node.core.config = replace(node.core.config, hopeful_placement=True)
    people = fill_room(net, homes[:3], 22)  # layers 0..4 full, two in layer 5
    net.run(25.0)
    fake = plant_modest_everywhere(net, homes, range(9), members=3, hint=6)
    cold = homes[3:]
    forget_homes(cold, homes[:3])
    records = []
    newcomers = []
    for wave in range(2):
        batch = []
        for node in cold[wave * 4 : wave * 4 + 4] if wave == 0 else cold:
            client = net.add_client(node)
            net.connect(client)
            newcomers.append(client)
            batch.append(net.join(client, ROOM))
            if wave == 0:
                settle(net, batch[-1:])
        settle(net, batch)
        records += batch
    net.run(30.0)
    assert all(r.layer is not None for r in records)
    counts = net.layer_counts(ROOM)
    assert max(counts.values()) <= 4, counts
    for client in [*people, *newcomers]:
        told = {m.key for f in client.received(Joined) for m in f.members}
        assert not (told | {f.key for f in client.received(PeerJoined)}) & fake
    hoped = sum(n.core.counters["join.hopeful"] for n in cold)
    moved = sum(n.core.counters["join.hopeful.moved"] for n in cold)
    rounds = len(records) + sum(n.core.counters["join.overfull"] for n in cold)
    rounds += sum(n.core.counters["join.probe"] for n in cold)
    assert hoped >= 1 and moved <= hoped <= rounds


def test_racing_cold_joins_into_the_last_seats_with_majority_and_hope() -> None:
    """Joins at once at nodes that never saw the room, into its last seats and past them,
    with 2.5.6 and 2.5.7 on (and a stranger's list making hopes wrong in half the runs):
    every join is answered and no layer ends over `layer_size`."""
    from tests.signaling.test_layers_pipelined import mesh as pipelined_mesh

    for seed in range(101, 109):
        net, homes = pipelined_mesh(10, seed=seed, config=RoomConfig(layer_size=4))
        for node in homes:
            node.core.config = replace(node.core.config, hopeful_placement=True)
        fill_room(net, homes[:3], 13)  # layers 0..2 full, one in layer 3
        net.run(25.0)
        if seed % 2:
            plant_modest_everywhere(net, homes, range(3, 5), members=2, hint=4)
        cold = homes[3:]
        forget_homes(cold, homes[:3])
        records = []
        for i in range(10):
            client = net.add_client(cold[i % len(cold)])
            net.connect(client)
            records.append(net.join(client, ROOM))
        settle(net, records)
        net.run(30.0)
        assert all(r.layer is not None for r in records), seed
        counts = net.layer_counts(ROOM)
        assert max(counts.values()) <= 4, (seed, counts)
        assert sum(counts.values()) == 23


def test_a_hopeful_seat_is_told_to_nobody_before_its_homes_are_proven() -> None:
    """The stranger's list keeps the hopeful placement's home checks going (a home nobody
    runs) long after the seat store's replies all came: the rest of those replies (2.5.6)
    wait for the seat too. Before, they told the layer's homes of the newcomer at once,
    this node among them (a node link to itself), although it was not seated and was
    then moved."""
    import signaling.layers as layers

    net, _homes, node = hopeful_cold_node(24, fakes=3)
    told_early: list[layers.TellNode] = []
    answered: list[bool] = []
    commands = node.core.commands

    def watched() -> list[layers.Command]:
        out = commands()
        if any(isinstance(c, layers.JoinFinished) and c.client == newcomer.key for c in out):
            answered.append(True)  # told at its seating (`_seated`), with `joined`
        told_early.extend(c for c in out if isinstance(c, layers.TellNode) and not answered)
        return out

    node.core.commands = watched  # type: ignore[method-assign]
    newcomer = net.add_client(node)
    record = join_one(net, newcomer)
    assert record.layer == 3
    assert node.core.counters["join.hopeful.moved"] == 1
    assert answered and not told_early


def test_a_burst_at_forty_nodes_overfills_nothing_but_by_its_unchecked_last_attempts() -> None:
    """24 joins at once at 40 nodes (k = 20: walks may converge on different holders)
    into layers of five, with 2.5.6 and 2.5.7 on: every join is answered, and with
    attempts enough that none ends on the unchecked last one (2.3), no layer ends over
    `layer_size`: what the majority and the hope seat too many, the check moves on."""
    from tests.signaling.test_layers_pipelined import mesh as pipelined_mesh

    for seed in (211, 218, 226):
        net, homes = pipelined_mesh(40, seed=seed, config=RoomConfig(layer_size=5))
        for node in homes:
            node.core.config = replace(node.core.config, hopeful_placement=True, max_attempts=10)
        records = []
        for i in range(24):
            client = net.add_client(homes[(i * 7) % 40])
            net.connect(client)
            records.append(net.join(client, ROOM))
        settle(net, records)
        net.run(30.0)
        assert all(r.layer is not None for r in records)
        counts = net.layer_counts(ROOM)
        assert max(counts.values()) <= 5, (seed, counts)
        assert sum(n.core.counters["join.majority"] for n in homes) >= 12
