"""A stranger's and a rogue holder's attacks on 2.5.6 and 2.5.7 (docs/protocol.md) on
virtual time."""

from __future__ import annotations

import random

from dht.ids import node_id_for
from dht.records import Record
from signaling.layers import RoomConfig
from signaling.protocol import Joined, PeerJoined
from signaling.rooms import HomeNode, layer_key, seat_list_value
from simulations.overlay import make_identity
from simulations.roomnet import RoomNet, RoomNode
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
    from dataclasses import replace

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
