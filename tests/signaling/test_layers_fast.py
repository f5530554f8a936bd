"""The room core's fast paths (docs/protocol.md 2.5) on virtual time.

The rules of tests/signaling/test_layers.py hold with every fast path of the room core
and the DHT on: those tests run here again under that configuration (the crowd with
1,000 joins), beside one test per rule against the behaviour without it."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

import tests.signaling.test_layers as base
from dht.core import DHTConfig
from dht.reads import FULL, QUICK
from signaling.layers import PublishRecord, ReadKey, RoomConfig
from signaling.protocol import PeerLeft
from signaling.rooms import layer_key
from simulations.roomnet import JoinRecord, RoomNet, RoomNode
from tests.signaling.test_layers import (  # noqa: F401  (run again, fast)
    ROOM,
    fill_room,
    join_one,
    layer_fill,
    settle,
    test_a_friend_who_is_not_in_the_room_is_an_unknown_peer,
    test_a_friends_full_layer_is_refused_layer_full,
    test_a_full_layer_asked_for_is_refused_layer_full,
    test_a_layer_asked_for_is_honoured_when_it_has_a_seat,
    test_a_strangers_seat_lists_seat_nobody,
    test_joining_beside_a_friend_seats_the_client_in_the_friends_layer,
    test_one_source_holds_at_most_its_seats_per_room_at_one_node,
    test_one_source_is_held_to_its_join_rate_while_another_joins,
    test_two_joins_at_one_node_and_one_at_another_do_not_overfill_a_layer,
)


class FastRoomNet(RoomNet):
    def __init__(self, overlay: Any, rng: random.Random, config: Any = None, **kw: Any) -> None:
        super().__init__(overlay, rng, (config or RoomConfig()).with_fast_paths(), **kw)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """test_layers' meshes, with the DHT's and the room core's fast paths on."""
    monkeypatch.setattr(base, "DHTConfig", lambda: DHTConfig().with_fast_paths())
    monkeypatch.setattr(base, "RoomNet", FastRoomNet)
    base.crowd.cache_clear()
    yield
    base.crowd.cache_clear()


def test_a_crowd_of_1000_is_seated_in_full_layers_none_overfilled() -> None:
    result = base.crowd(1_000)
    assert not [r for r in result.records if r.refused is not None]
    assert len(result.answered) >= 0.97 * 1_000
    assert max(result.largest_at_checkpoints) <= result.layer_size
    assert max(result.final.values()) <= result.layer_size
    assert (layer_fill(result.final, result.layer_size) or 0.0) >= 0.8
    errors = result.errors()
    assert sum(e <= 0.10 for e in errors) / len(errors) >= 0.95


def test_a_dead_nodes_clients_leave_every_view_within_one_ttl_and_are_said_gone() -> None:
    """test_layers' departure with the fast paths: the views forget within one TTL; the
    `peer-left` frames are pushed then and reach the clients a client delay later."""
    config = RoomConfig(layer_size=24)
    net, homes = base.mesh(5, seed=6, config=config)
    people = fill_room(net, homes, 15)
    dead = homes[0]
    gone = {c.key for c in people if c.node is dead}
    stay = [c for c in people if c.node is not dead]
    net.run(30.0)
    died = net.now
    net.kill(dead)
    while net.now < died + config.presence_ttl:
        net.run(1.0)
        if not any(gone & set(n.core.views[(ROOM, 0)].members) for n in homes[1:]):
            break
    assert net.now <= died + config.presence_ttl
    net.run(1.0)
    assert all(gone <= {f.key for f in c.received(PeerLeft)} for c in stay)
    for node in homes[1:]:
        assert {c.key for c in stay} <= set(node.core.views[(ROOM, 0)].members)


def commands_of(net: RoomNet) -> list[Any]:
    """Every command the room cores give from now on (carried out as before)."""
    seen: list[Any] = []
    execute = net._execute

    def watched(node: RoomNode, cause: int) -> None:
        pending = node.core._commands
        seen.extend(pending)
        execute(node, cause)

    net._execute = watched  # type: ignore[method-assign]
    return seen


def test_reads_on_the_join_path_are_quick_and_checks_and_re_reads_are_whole() -> None:
    net, homes = base.mesh(5, seed=11, config=RoomConfig(layer_size=4))
    fill_room(net, homes, 6)
    seen = commands_of(net)
    record = join_one(net, net.add_client(homes[2]))
    assert record.layer is not None
    reads = [c for c in seen if isinstance(c, ReadKey)]
    seat_key = layer_key(ROOM, record.layer)
    checks = [c for c in reads if c.quorum == FULL and c.key == seat_key]
    quick = [c for c in reads if c.quorum == QUICK]
    assert quick and not checks  # placement quick; the check is whole, and no read:
    publishes = [c for c in seen if isinstance(c, PublishRecord)]
    # the seat list's store reads back from every holder (2.5.5; the check read and the
    # majority store of 2.5.1 without it: tests/signaling/test_layers_store_reads.py).
    assert [c for c in publishes if c.read_back and c.record.key == seat_key]
    assert not any(c.majority or c.read_back for c in publishes if c.record.key != seat_key)
    seen.clear()
    net.run(25.0)  # a refresh: every re-read is the whole lookup, every renewal to all
    assert [c for c in seen if isinstance(c, ReadKey)]
    assert all(c.quorum == FULL for c in seen if isinstance(c, ReadKey))
    assert [c for c in seen if isinstance(c, PublishRecord)]
    assert not any(c.majority for c in seen if isinstance(c, PublishRecord))


def test_the_seat_list_is_stored_while_the_client_signs() -> None:
    net, homes = base.mesh(4, seed=12)
    seen = commands_of(net)
    client = net.add_client(homes[1])
    record = join_one(net, client)
    assert record.layer == 0
    stores = [i for i, c in enumerate(seen) if isinstance(c, PublishRecord)]
    signs = [
        i for i, c in enumerate(seen) if getattr(getattr(c, "frame", None), "TYPE", "") == "sign"
    ]
    assert stores and signs and stores[0] < signs[0] + 2  # in the same batch of commands


def test_a_seat_listed_while_signing_is_taken_back_if_the_signature_never_comes() -> None:
    net, homes = base.mesh(4, seed=13, config=RoomConfig(layer_size=4, sign_timeout=2.0))
    silent = net.add_client(homes[0], answers=False)
    record = join_one(net, silent)
    assert record.refused == "bad-signature"
    net.run(5.0)
    assert net.layer_counts(ROOM) == {}
    lists = homes[2].sim.core.records.get(layer_key(ROOM, 0), net.now)
    assert not homes[0].core.views  # nothing left listed at its node
    others = [r for r in lists if r.publisher == homes[0].sim.core.identity.public_key]
    assert all(len(r.value) < 200 for r in others)  # an empty list replaced the one naming it


def timed_joins(fast: bool, people: int = 8) -> list[JoinRecord]:
    """`people` join one by one, each at a node that has never seen the room."""
    config = RoomConfig(layer_size=24)
    if fast:
        net, homes = base.mesh(people + 2, seed=14, config=config)
    else:
        net, homes = mesh_without_fast_paths(people + 2, config)
    return [join_one(net, net.add_client(homes[i])) for i in range(people)]


def mesh_without_fast_paths(nodes: int, config: RoomConfig) -> tuple[RoomNet, list[RoomNode]]:
    from simulations.engine import Engine
    from simulations.network import NetworkModel
    from simulations.overlay import EPOCH, Overlay
    from simulations.roomnet import warm_overlay

    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(14), NetworkModel(), DHTConfig())
    sims = warm_overlay(overlay, nodes, random.Random(15))
    net = RoomNet(overlay, random.Random(16), config)
    return net, [net.add_node(sim) for sim in sims]


def test_a_cold_node_places_in_one_round_and_joins_are_faster() -> None:
    fast, before = timed_joins(True), timed_joins(False)
    assert all(r.layer == 0 for r in fast + before)
    assert all(r.reads == 2 for r in fast)  # layers 0 and 1 at once; the store checks
    assert all((r.reads or 0) >= 4 for r in before)  # layer 0, then 0 and 1, then the check
    latency = {
        n: statistics.median(r.latency or 0 for r in rs)
        for n, rs in (("fast", fast), ("before", before))
    }
    assert latency["fast"] < 0.5 * latency["before"]


def test_placement_does_not_wait_for_home_checks_that_cannot_change_it() -> None:
    net, homes = base.mesh(6, seed=15, config=RoomConfig(layer_size=24))
    fill_room(net, homes[:3], 5)
    newcomer = net.add_client(homes[4])  # has proven none of the homes of layer 0
    record = join_one(net, newcomer)
    assert record.layer == 0
    assert homes[4].core.counters["join.early"] == 1


def test_a_read_that_need_not_be_fresh_is_answered_from_one_just_made() -> None:
    net, homes = base.mesh(4, seed=16, config=RoomConfig(layer_size=4))
    people = fill_room(net, homes[:1], 3)
    node = homes[0]
    net.members(people[0], ROOM)
    net.run(1.0)
    before = node.core.counters["read.cached"]
    net.members(people[1], ROOM)
    net.run(1.0)
    assert node.core.counters["read.cached"] == before + 1


def test_a_cold_node_reads_two_layers_past_a_hinted_size_and_does_not_probe() -> None:
    """2.5.2: the seat lists of the first layers were stored when their nodes knew a
    smaller room; a node with no estimate reads two layers past the size their hints
    give, so hints a layer behind cost it no probe round (without the rule: a probe)."""
    probes = {}
    for ahead in (1, 2):
        net, homes = base.mesh(8, seed=17, config=RoomConfig(layer_size=4))
        for node in homes:  # FastRoomNet gives every core the fast paths: 2, then this
            node.core.config = replace(node.core.config, hinted_ahead=ahead)
        fill_room(net, homes[:2], 8)  # layers 0 and 1: their lists' hints say 2 layers
        fill_room(net, homes[2:4], 4)  # layer 2, by nodes the first two never hear of
        newcomer = homes[6]
        record = join_one(net, net.add_client(newcomer))
        assert record.layer == 3 and record.refused is None
        probes[ahead] = newcomer.core.counters["join.probe"]
    assert probes[1] >= 1 and probes[2] == 0
