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
from tests.signaling.test_layers import ROOM, fill_room, settle
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
                net.run(30.0)
                waves.append(excess(net))
            late = sum(n.core.counters["join.late_overfull"] for n in homes)
            if not majority:
                assert waves == [0, 0, 0] and late == 0
            else:
                assert waves[0] > 0 and late > 0  # the race that sat them all
                assert waves[2] == waves[1] == waves[0], waves
        finally:
            ROGUE_HIDES.clear()
