"""Seated at a majority of the seat store's replies (docs/protocol.md 2.5.6) on virtual
time: what holders that answer first can hide (a member, from `joined` only: the other
holders' replies come to the same join and tell it, and its home hears of the newcomer,
long before a refresh would), what a stranger's seat lists do (nothing), that racing
joins still meet and never overfill a layer, and that joins are faster."""

from __future__ import annotations

import random
import statistics
from dataclasses import replace

from dht.core import DHTConfig, DHTCore
from dht.records import Record, Refusal
from signaling.layers import RoomConfig
from signaling.protocol import Joined, PeerJoined
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.overlay import EPOCH, Overlay
from simulations.roomnet import RoomNet, RoomNode, VirtualClient, warm_overlay
from tests.signaling.test_layers import ROOM, fill_room, join_one, plant_stranger_seat_lists
from tests.signaling.test_layers_store_reads import counted, mesh, race, timed

NEAR_AND_FAR = NetworkModel(
    regions=("near", "far"),
    latency_ms=((5.0, 150.0), (150.0, 5.0)),
    region_weights=(1.0, 1.0),
    jitter_ms=0.0,
)
"""Two places 150 ms apart one way: a holder over there answers long after the others."""

HIDDEN: set[bytes] = set()
"""Publishers (node keys) whose records the `Forgetful` holders do not keep."""


class Forgetful(DHTCore):
    """A holder that takes a store of certain publishers' records and keeps nothing, so it
    never shows them (to a read or a store's read back): as a rogue holder withholds."""

    def _store_record(self, record: Record, now: float, source: str | None = None) -> int:
        if record.publisher in HIDDEN:
            return int(Refusal.STORED)
        return super()._store_record(record, now, source)


def near_and_far(majority: bool) -> tuple[RoomNet, list[RoomNode]]:
    """Eight nodes: the first far away, the others near each other."""
    overlay = Overlay(Engine(EPOCH), random.Random(51), NEAR_AND_FAR, DHTConfig().with_fast_paths())
    sims = warm_overlay(overlay, 8, random.Random(52))
    for i, sim in enumerate(sims):
        sim.region = 1 if i == 0 else 0
    config = replace(RoomConfig(layer_size=24).with_fast_paths(), seat_at_majority=majority)
    net = RoomNet(overlay, random.Random(53), config)
    return net, [net.add_node(sim) for sim in sims]


def known_to(client: VirtualClient) -> set[bytes]:
    heard = {m.key for f in client.received(Joined) for m in f.members}
    return heard | {f.key for f in client.received(PeerJoined)}


# --- the attacker's tests first -------------------------------------------------------


def test_a_member_only_a_slow_holder_shows_is_told_long_before_a_refresh() -> None:
    """Every near holder withholds the far node's seat list; only the far node (its home,
    150 ms away) shows it. The newcomer's placement read and the majority of its store's
    replies come from the near ones, so `joined` does not list that member; the far
    holder's reply to the same store comes within a round trip, and the newcomer hears
    of the member then, and the member of the newcomer (a refresh would take 20 s).
    Seated only after every holder, `joined` lists it."""
    for majority in (True, False):
        net, homes = near_and_far(majority)
        far, near = homes[0], homes[1:]
        HIDDEN.clear()
        HIDDEN.add(bytes(far.core.identity.public_key))
        try:
            for node in near:
                node.sim.core.__class__ = Forgetful
            (member,) = fill_room(net, [far], 1)
            net.run(1.0)
            newcomer = net.add_client(near[0])
            record = join_one(net, newcomer)
            listed = {m.key for f in newcomer.received(Joined) for m in f.members}
            assert record.layer == 0
            if not majority:
                assert member.key in listed
                continue
            assert member.key not in listed  # hidden from `joined` by the first to answer
            net.run(1.0)
            assert member.key in known_to(newcomer)
            assert newcomer.key in known_to(member)
            assert counted(near, "join.late_told") >= 1
        finally:
            HIDDEN.clear()


def test_a_strangers_seat_lists_seat_nobody_when_seated_at_a_majority() -> None:
    net, homes = mesh(6, seed=41, config=RoomConfig(layer_size=8), majority=True)
    _, fake = plant_stranger_seat_lists(net, homes, range(3))
    people = fill_room(net, homes, 10)
    net.run(5.0)
    for client in people:
        assert not known_to(client) & fake
    assert counted(homes, "join.majority") >= 8


def test_racing_joins_at_a_majority_still_meet_and_no_layer_is_overfilled() -> None:
    """Ten joins at once at six nodes into layers of five. The majorities of two racing
    joins' stores share a holder, and the later store there sees the earlier: one of the
    two sees the layer overfilled and waits for every holder, then moves on (2.5.1's
    argument for majorities of one set). Nobody is left unaware of a member of its
    layer once the race is over."""
    for seed in (42, 43, 44, 45):
        net, homes = mesh(6, seed=seed, config=RoomConfig(layer_size=5), majority=True)
        clients, records = race(net, homes, 10)
        assert all(r.layer is not None for r in records)
        assert counted(homes, "join.majority") >= 5
        assert counted(homes, "join.overfull") > 0  # they did race, and met
        assert max(net.layer_counts(ROOM).values()) <= 5
        for client in clients:
            mates = {c.key for c in clients if c.layers.get(ROOM) == client.layers.get(ROOM)}
            assert mates - {client.key} <= known_to(client)


# --- what it gains ----------------------------------------------------------------------


def test_a_join_seated_at_a_majority_is_faster() -> None:
    majority = timed(True, majority=True)
    whole = timed(True)
    assert all(r.layer == 0 for r in majority + whole)
    latency = {
        name: statistics.median(r.latency or 0 for r in rs)
        for name, rs in (("majority", majority), ("whole", whole))
    }
    assert latency["majority"] < latency["whole"]
